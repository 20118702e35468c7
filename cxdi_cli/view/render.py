"""Previews of cxdi files: diffraction data, reconstructions, run sets and resolution curves.

Two layers. `load_picture` reads a file and turns it into a `Picture`: a list of `Panel`s (RGB arrays
ready to show, with their axes, scale bar and colour scale) or of `CurveSet`s (1-D curves with
thresholds). `render_figure` draws a Picture with matplotlib (Agg, imported lazily; no pyplot, no
global state) and `save_png` writes it atomically; `terminal_render` draws the same Picture as text.

Conventions of the pictures:
- Diffraction data: log10 of the intensity (or linear) in the `viridis` colour map; masked pixels (any
  mask bit other than the informational ones) are drawn in pure magenta `MASK_RGB` = (255, 0, 255),
  a colour viridis never takes. Axes are q = 2 sin(θ)/λ in nm⁻¹ (linear pitch p/(λD), or the stored
  voxel pitch of an assembled volume); pixel indices when the file has no geometry. q = 0 sits at
  index n // 2 (DESIGN §3), or on the stored beam centre of a full-detector 2D pattern; lab y points
  up (origin at the bottom).
- Reconstructions: phase as hue (phase 0 red, ±π cyan) and amplitude as brightness (HSV); the
  global phase, undefined in phase retrieval, is removed (amplitude-weighted mean phase inside the
  support set to 0). The scale bar uses the real-space pixel of the file (or λD/(N p) from its
  geometry). 3D: central slices through the support's centre and projections of the amplitude.
- Curves (PRTF, FRC/FSC and any 1-D curves under /entry_1): one panel per group, thresholds dashed.

Errors are `CxdiError`s with one-line messages; nothing here prints.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Sequence

import numpy as np

from cxdi_cli.analysis import align
from cxdi_cli import io
from cxdi_cli.io.cxi import as_text
from cxdi_cli.model import (
    DataError,
    InputError,
    Geometry,
    Pattern,
    Reconstruction,
    Run,
    UsageError,
    measured_from_mask,
)

#: The colour of masked pixels in every diffraction picture (RGB, 0-255): pure magenta.
MASK_RGB: tuple[int, int, int] = (255, 0, 255)
#: Colour map of intensities; it never comes near MASK_RGB.
INTENSITY_CMAP = "viridis"
#: Widest dynamic range (decades) a log picture shows below the brightest pixel.
LOG_DECADES = 8.0
#: Margin around the support for --crop-support: this fraction of the support's extent, at least 4 px.
CROP_MARGIN = 0.15
#: Most runs shown in a run grid (the best-ordered first ones of the file).
MAX_GRID_RUNS = 36

AXES = ("z", "y", "x")


# --------------------------------------------------------------------------- the picture model


@dataclasses.dataclass
class ColourScale:
    """A colour bar: label, value range and colour map ('hsv-phase' for the phase wheel)."""

    label: str
    vmin: float
    vmax: float
    cmap: str = INTENSITY_CMAP
    key: str = ""  # panels with the same key share one colour bar


@dataclasses.dataclass
class Panel:
    """One image ready to draw. `rgb` is (h, w, 3) float in [0, 1], row 0 at the BOTTOM (lab y up)."""

    rgb: np.ndarray
    title: str = ""
    extent: tuple[float, float, float, float] | None = None  # (x0, x1, y0, y1) in axis units
    xlabel: str = ""
    ylabel: str = ""
    brightness: np.ndarray | None = None   # (h, w) in [0, 1], for plain-text ramps
    masked: np.ndarray | None = None       # (h, w) bool: drawn in MASK_RGB
    scalebar: tuple[float, str] | None = None  # (length in pixels along x, label)
    pixel_aspect: float = 1.0              # height / width of one pixel on screen
    scale: ColourScale | None = None
    ticks: bool = True


@dataclasses.dataclass
class CurveSet:
    """Curves sharing an x axis; thresholds are (label, scalar or array over x)."""

    title: str
    x: np.ndarray
    xlabel: str
    curves: list[tuple[str, np.ndarray]]
    thresholds: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    ylabel: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Picture:
    """What `show` draws: a title, panels (images) or curve sets, and the number of grid columns."""

    kind: str                # 'pattern', 'volume', 'image', 'reconstruction', 'runs', 'curves'
    title: str
    panels: list[Panel] = dataclasses.field(default_factory=list)
    curves: list[CurveSet] = dataclasses.field(default_factory=list)
    ncols: int = 1
    notes: list[str] = dataclasses.field(default_factory=list)


# --------------------------------------------------------------------------- small helpers


def parse_slice(spec: str | None, ndim: int) -> tuple[int, int | None] | None:
    """Parse `--slice`: 'z', 'y', 'x' (central slice normal to that axis), 'z=12', '0=12' or '12'
    (index 12 along the first axis). Returns (axis, index or None for central); None if spec is None."""
    if spec is None:
        return None
    if ndim != 3:
        raise UsageError(f"--slice {spec}: slices apply to 3D volumes; this file holds {ndim}D data")
    text = spec.strip().lower()
    m = re.fullmatch(r"(?:([zyx012])\s*[=:])?\s*(-?\d+)?", text)
    if text in AXES:
        return AXES.index(text), None
    if not text or m is None or m.group(2) is None:
        raise UsageError(f"--slice {spec}: expected z, y, x, AXIS=INDEX (e.g. z=40) or an index along z")
    ax = m.group(1) or "z"
    axis = AXES.index(ax) if ax in AXES else int(ax)
    return axis, int(m.group(2))


def _check_index(axis: int, index: int, shape: Sequence[int]) -> int:
    n = shape[axis]
    if not -n <= index < n:
        raise UsageError(f"--slice {AXES[axis]}={index}: index out of range for axis {AXES[axis]} of length {n}")
    return index % n


def _plane_axes(axis: int) -> tuple[int, int]:
    """(vertical, horizontal) array axes of the plane normal to `axis` in a (z, y, x) volume."""
    rest = [a for a in range(3) if a != axis]
    return rest[0], rest[1]


def nice_length(target: float) -> float:
    """The 1-2-5 number nearest below `target` (for scale bars)."""
    if target <= 0:
        return 0.0
    exp = math.floor(math.log10(target))
    for m in (5, 2, 1):
        if m * 10 ** exp <= target:
            return m * 10 ** exp
    return 10 ** exp


def _length_label(metres: float) -> str:
    nm = metres * 1e9
    if nm >= 1000:
        um = nm / 1000
        return f"{um:g} µm"
    return f"{nm:g} nm"


def _fmt_metric(key: str, value: Any) -> str | None:
    if isinstance(value, (bool, np.bool_)):
        return None  # flags (e.g. failed) go into the title as words
    if isinstance(value, (int, np.integer)):
        return f"{key}={int(value)}"
    if isinstance(value, (float, np.floating)):
        return f"{key}={float(value):.4g}"
    if isinstance(value, str) and len(value) <= 16:
        return f"{key}={value}"
    return None


#: Metrics shown first in run titles (the names `phase` and `average` write), then the others by name.
_METRIC_ORDER = ["llk", "llk_free", "chi2", "rank", "support_size"]


def metrics_text(metrics: dict[str, Any], limit: int = 4) -> str:
    """The run's scalar metrics as 'llk=… llk_free=…' (`_METRIC_ORDER` first), at most `limit`."""
    keys = sorted(metrics, key=lambda k: (_METRIC_ORDER.index(k) if k in _METRIC_ORDER else len(_METRIC_ORDER), k))
    parts = [p for p in (_fmt_metric(k, metrics[k]) for k in keys) if p]
    return "  ".join(parts[:limit])


def _hsv_phase_rgb(hue_from_phase: np.ndarray, value: np.ndarray) -> np.ndarray:
    """RGB of full-saturation HSV colours: hue = phase/2π (phase 0 red), brightness = value."""
    h = np.mod(hue_from_phase / (2 * np.pi), 1.0)
    v = np.clip(value, 0.0, 1.0)
    i = np.floor(h * 6.0).astype(int) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p = np.zeros_like(v)
    q = v * (1 - f)
    t = v * f
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def phase_colours(n: int = 256) -> np.ndarray:
    """(n, 3) RGB of the phase wheel from -π to π, as drawn in reconstructions (for colour bars)."""
    ph = np.linspace(-np.pi, np.pi, n)
    return _hsv_phase_rgb(ph, np.ones(n))


def _cmap_rgb(values01: np.ndarray, cmap: str = INTENSITY_CMAP) -> np.ndarray:
    from matplotlib import colormaps  # noqa: PLC0415 - lazy: `cxdi --help` must stay light

    return np.asarray(colormaps[cmap](np.clip(values01, 0.0, 1.0)))[..., :3]


# --------------------------------------------------------------------------- diffraction data


def _intensity_scale(values: np.ndarray, log: bool) -> tuple[float, float]:
    """(vmin, vmax) of the colour scale from the measured values shown (log10 units if log)."""
    v = values[np.isfinite(values)]
    if log:
        pos = v[v > 0]
        if pos.size == 0:
            return 0.0, 1.0
        vmax = float(np.log10(pos.max()))
        vmin = max(float(np.log10(pos.min())), vmax - LOG_DECADES)
        return (vmin, vmax) if vmax > vmin else (vmax - 1.0, vmax)
    if v.size == 0:
        return 0.0, 1.0
    vmin = float(min(v.min(), 0.0))
    vmax = float(v.max())
    return (vmin, vmax) if vmax > vmin else (vmin, vmin + 1.0)


def _intensity_panel(data: np.ndarray, masked: np.ndarray, scale: ColourScale, log: bool) -> Panel:
    with np.errstate(divide="ignore", invalid="ignore"):
        shown = np.log10(np.where(data > 0, data, np.nan)) if log else data.astype(np.float64)
    frac = (shown - scale.vmin) / (scale.vmax - scale.vmin)
    frac = np.where(np.isfinite(frac), frac, 0.0)  # zero photons (log) -> bottom of the scale
    frac = np.clip(frac, 0.0, 1.0)
    rgb = _cmap_rgb(frac, scale.cmap)
    rgb[masked] = np.asarray(MASK_RGB, float) / 255.0
    return Panel(rgb=rgb, brightness=frac, masked=masked.copy(), scale=scale)


def _q_extent(n_v: int, n_h: int, dq_v: float | None, dq_h: float | None,
              centre: tuple[float, float] | None = None) -> tuple[float, float, float, float] | None:
    """Pixel-edge extent in nm⁻¹ with q = 0 at `centre` (row, col), by default at index n // 2."""
    if dq_v is None or dq_h is None:
        return None
    cv, ch = centre if centre is not None else (n_v // 2, n_h // 2)
    to_nm = 1e-9  # 1/m -> 1/nm
    return ((-ch - 0.5) * dq_h * to_nm, (n_h - 1 - ch + 0.5) * dq_h * to_nm,
            (-cv - 0.5) * dq_v * to_nm, (n_v - 1 - cv + 0.5) * dq_v * to_nm)


def pattern_picture(pattern: Pattern, *, log: bool = True, slice_spec: str | None = None,
                    title: str = "", kind: str | None = None) -> Picture:
    """Panels of a diffraction pattern (one) or volume (three central slices, or the `--slice`)."""
    data = np.asarray(pattern.intensity)
    parse_slice(slice_spec, data.ndim)  # a usage error before any work
    masked = ~measured_from_mask(pattern.mask)
    if log and np.all(data[~masked] <= 0):
        raise DataError(f"{pattern.source or 'data'}: no positive values to show on a log scale; use --linear")
    dq = pattern.geometry.q_step(data.ndim)
    qlabel = "q{} (nm⁻¹)"
    planes: list[tuple[np.ndarray, np.ndarray, str, tuple[int, int]]] = []
    if data.ndim == 2:
        planes.append((data, masked, "", (0, 1)))
    else:
        sel = parse_slice(slice_spec, 3)
        axes_idx = [sel] if sel is not None else [(a, None) for a in range(3)]
        for axis, index in axes_idx:
            index = data.shape[axis] // 2 if index is None else _check_index(axis, index, data.shape)
            centre = data.shape[axis] // 2
            where = "q = 0" if index == centre else f"{index - centre:+d} from q = 0"
            planes.append((np.take(data, index, axis=axis), np.take(masked, index, axis=axis),
                           f"{AXES[axis]} = {index} ({where})", _plane_axes(axis)))
    shown = np.concatenate([p[0][~p[1]].ravel() for p in planes])
    vmin, vmax = _intensity_scale(shown, log)
    units = "photons" if pattern.geometry.is_complete() or pattern.provenance else "counts"
    scale = ColourScale(label=f"log10 {units}" if log else units, vmin=vmin, vmax=vmax, key="intensity")
    panels = []
    for plane, pmask, ptitle, (av, ah) in planes:
        panel = _intensity_panel(plane, pmask, scale, log)
        # array row 0 is the lowest q: keep it at the bottom (origin lower)
        centre = None
        if data.ndim == 2 and pattern.geometry.centre is not None and len(pattern.geometry.centre) == 2:
            centre = tuple(float(c) for c in pattern.geometry.centre)  # a full detector: q = 0 on the beam
        ext = _q_extent(plane.shape[0], plane.shape[1], dq[av] if dq else None, dq[ah] if dq else None, centre)
        panel.title = ptitle
        panel.extent = ext
        if data.ndim == 2:
            names = ("y", "x")
        else:
            names = (AXES[av], AXES[ah])
        if ext is not None:
            panel.xlabel, panel.ylabel = qlabel.format(names[1]), qlabel.format(names[0])
            panel.pixel_aspect = (ext[3] - ext[2]) / plane.shape[0] / ((ext[1] - ext[0]) / plane.shape[1])
        else:
            panel.xlabel, panel.ylabel = f"{names[1]} (pixel)", f"{names[0]} (pixel)"
        panels.append(panel)
    frac = float(masked.mean())
    what = "voxels" if data.ndim == 3 else "pixels"
    notes = [f"masked {what} ({100 * frac:.2f} %) in magenta"] if frac > 0 else []
    if dq is None:
        notes.append("no geometry in the file: axes in pixels")
    return Picture(kind=kind or ("volume" if data.ndim == 3 else "pattern"), title=title, panels=panels,
                   ncols=len(panels), notes=notes)


# --------------------------------------------------------------------------- reconstructions


def _support_box(support: np.ndarray, margin: float = CROP_MARGIN) -> tuple[slice, ...] | None:
    idx = np.nonzero(support)
    if idx[0].size == 0:
        return None
    box = []
    for a, n in zip(idx, support.shape):
        lo, hi = int(a.min()), int(a.max()) + 1
        pad = max(4, int(math.ceil(margin * (hi - lo))))
        box.append(slice(max(0, lo - pad), min(n, hi + pad)))
    return tuple(box)


def _amp_max(amp: np.ndarray) -> float:
    nz = amp[amp > 0]
    if nz.size == 0:
        return 1.0
    top = float(np.percentile(nz, 99.9)) if nz.size > 1000 else float(nz.max())
    return top if top > 0 else 1.0


def _complex_panel(obj: np.ndarray, amax: float) -> Panel:
    amp = np.abs(obj)
    value = np.clip(amp / amax, 0.0, 1.0)
    rgb = _hsv_phase_rgb(np.angle(obj), value)
    return Panel(rgb=rgb, brightness=value, ticks=False,
                 scale=ColourScale(label="phase (rad)", vmin=-np.pi, vmax=np.pi, cmap="hsv-phase", key="phase"))


def _scalebar(pixel_x: float | None, width_px: int) -> tuple[float, str] | None:
    if not pixel_x:
        return None
    length = nice_length(0.25 * width_px * pixel_x)
    if length <= 0:
        return None
    return length / pixel_x, _length_label(length)


def _pixel_size(rec: Reconstruction, shape: tuple[int, ...]) -> tuple[float, ...] | None:
    if rec.pixel_size is not None and len(rec.pixel_size) == len(shape):
        return tuple(float(p) for p in rec.pixel_size)
    return rec.geometry.real_pixel(shape)


def run_panels(run: Run, pixel: tuple[float, ...] | None, *, slice_spec: str | None = None,
               crop_support: bool = False, projections: bool = True) -> list[Panel]:
    """Panels of one run: 2D -> one HSV image; 3D -> central slices (+ amplitude projections)."""
    obj = np.asarray(run.obj)
    support = np.asarray(run.support, bool)
    if obj.ndim not in (2, 3):
        raise DataError(f"reconstruction must be 2D or 3D, got shape {obj.shape}")
    obj = align.remove_global_phase(obj, support)
    if crop_support:
        box = _support_box(support)
        if box is not None:
            obj, support = obj[box], support[box]
    amp = np.abs(obj)
    amax = _amp_max(amp[support] if support.any() else amp)
    if obj.ndim == 2:
        panel = _complex_panel(obj, amax)
        if pixel:
            panel.scalebar = _scalebar(pixel[1], obj.shape[1])
            panel.pixel_aspect = pixel[0] / pixel[1]
        return [panel]
    # 3D: slices through the centre of the support's bounding box (the object, wherever it sits)
    box = _support_box(support, 0.0)
    centre = [(b.start + b.stop - 1) // 2 for b in box] if box else [n // 2 for n in obj.shape]
    sel = parse_slice(slice_spec, 3)
    wanted = [sel] if sel is not None else [(a, None) for a in range(3)]
    panels = []
    for axis, index in wanted:
        index = centre[axis] if index is None else _check_index(axis, index, obj.shape)
        plane = np.take(obj, index, axis=axis)
        panel = _complex_panel(plane, amax)
        av, ah = _plane_axes(axis)
        panel.title = f"slice {AXES[axis]} = {index}"
        if pixel:
            panel.scalebar = _scalebar(pixel[ah], plane.shape[1])
            panel.pixel_aspect = pixel[av] / pixel[ah]
        panels.append(panel)
    if projections and sel is None:
        projs = [amp.sum(axis=a) for a in range(3)]
        pmax = max(float(p.max()) for p in projs) or 1.0
        scale = ColourScale(label="projected amplitude (rel.)", vmin=0.0, vmax=1.0, cmap="gray", key="proj")
        for axis, proj in enumerate(projs):
            frac = proj / pmax
            av, ah = _plane_axes(axis)
            panel = Panel(rgb=_cmap_rgb(frac, "gray"), brightness=frac, ticks=False, scale=scale,
                          title=f"projection along {AXES[axis]}")
            if pixel:
                panel.scalebar = _scalebar(pixel[ah], proj.shape[1])
                panel.pixel_aspect = pixel[av] / pixel[ah]
            panels.append(panel)
    return panels


def reconstruction_picture(rec: Reconstruction, *, slice_spec: str | None = None, crop_support: bool = False,
                           run: int | None = None, title: str = "",
                           modes: Sequence[tuple[str, np.ndarray]] = ()) -> Picture:
    """One run in detail (a single-run file, or `run`), or a grid of runs with their metrics.

    `modes` (name, complex array) of an averaged file are added, one panel each (3D: the slice normal
    to z through the support), titled with their weights from `rec.extra['mode_weights']`."""
    if not rec.runs:
        raise DataError(f"{rec.source}: no runs to show")
    shape = rec.runs[0].obj.shape
    parse_slice(slice_spec, len(shape))  # a usage error before any work
    pixel = _pixel_size(rec, shape)
    notes = []
    if pixel:
        notes.append("pixel " + " × ".join(f"{p * 1e9:.3g}" for p in pixel) + " nm; hue = phase, brightness = amplitude")
    else:
        notes.append("no pixel size in the file: no scale bar; hue = phase, brightness = amplitude")
    if run is not None:
        if not 1 <= run <= len(rec.runs):
            raise UsageError(f"--run {run}: the file holds runs 1 to {len(rec.runs)}")
        chosen = [run]
    elif len(rec.runs) == 1:
        chosen = [1]
    else:
        chosen = []
    if chosen:
        r = rec.runs[chosen[0] - 1]
        panels = run_panels(r, pixel, slice_spec=slice_spec, crop_support=crop_support)
        main = len(panels)
        weights = list(rec.extra.get("mode_weights", [])) if isinstance(rec.extra, dict) else []
        for k, (mname, mode) in enumerate(modes):
            spec = slice_spec if (slice_spec or mode.ndim == 2) else "z"
            mp = run_panels(Run(obj=mode, support=r.support), pixel, slice_spec=spec if mode.ndim == 3 else None,
                            crop_support=crop_support, projections=False)[0]
            w = f"  weight {float(weights[k]):.3f}" if k < len(weights) else ""
            mp.title = f"{mname.replace('_', ' ')}{w}" + (f"\n{mp.title}" if mp.title else "")
            panels.append(mp)
        if modes and panels[0].title == "":
            panels[0].title = "average" if len(rec.runs) == 1 else f"run {chosen[0]}"
        text = metrics_text(r.metrics, limit=6)
        head = f"run {chosen[0]} of {len(rec.runs)}" if len(rec.runs) > 1 else ""
        if r.metrics.get("failed") in (True, 1):
            head += " FAILED"
        sub = "  ".join(s for s in (head, text) if s)
        ncols = 3 if main == 6 else min(len(panels), 4)
        return Picture(kind="reconstruction", title=title + (f"\n{sub}" if sub else ""), panels=panels,
                       ncols=ncols, notes=notes)
    # a grid of runs: one panel each (3D: the central slice normal to z, or --slice)
    n = min(len(rec.runs), MAX_GRID_RUNS)
    if len(rec.runs) > n:
        notes.append(f"first {n} of {len(rec.runs)} runs shown; --run K shows one")
    panels = []
    for k in range(n):
        r = rec.runs[k]
        spec = slice_spec if (slice_spec or r.obj.ndim == 2) else "z"
        p = run_panels(r, pixel, slice_spec=spec if r.obj.ndim == 3 else None, crop_support=crop_support,
                       projections=False)[0]
        flag = "  FAILED" if r.metrics.get("failed") in (True, 1) else ""
        p.title = f"run {k + 1}{flag}\n{metrics_text(r.metrics, limit=3)}".rstrip()
        panels.append(p)
    ncols = int(math.ceil(math.sqrt(n)))
    return Picture(kind="runs", title=title, panels=panels, ncols=ncols, notes=notes)


# --------------------------------------------------------------------------- curves


_X_NAMES = re.compile(r"^(q|freq|frequency|spatial_frequency|k|shell|radius)(_|$)", re.I)
#: 1-D datasets beside the curves that are not curves themselves (ring sizes, weights, alternative axes).
_AUX_NAMES = re.compile(r"^(n|count|counts|npix|n_pixels|n_voxels|pixels|voxels|weight|weights|"
                        r"nyquist|nyquist_fraction|ring|rings|shell_index)(_|$)", re.I)
_INV_M = ("1/m", "m^-1", "m-1", "m**-1", "1/meter", "inv_m")


def _is_threshold(name: str) -> bool:
    n = name.lower()
    return any(w in n for w in ("threshold", "half_bit", "halfbit", "one_bit", "1bit", "criterion"))


def _units(ds) -> str:
    u = ds.attrs.get("units")
    if u is None:
        return ""
    return u.decode() if isinstance(u, bytes) else str(u)


def _axis(name: str, units: str, values: np.ndarray) -> tuple[np.ndarray, str]:
    """Values and label of an axis in display units: spatial frequencies in nm⁻¹, lengths in nm."""
    u = units.strip().lower().replace(" ", "")
    base = re.sub(r"_(inv_m|per_m|inv_nm|per_nm|nm|m|nm-1|m-1|px-1|pixel-1)$", "", name)
    if u in _INV_M or (not u and re.search(r"_(inv|per)_m$", name)):
        return values * 1e-9, f"{base} (nm⁻¹)"
    if u in ("1/nm", "nm^-1", "nm-1") or (not u and re.search(r"(_(inv|per)_nm|_nm-1)$", name)):
        return values, f"{base} (nm⁻¹)"
    if u in ("1/pixel", "1/px", "pixel^-1") or (not u and name.endswith("_px-1")):
        return values, f"{base} (1/pixel)"
    if u == "m" or (not u and name.endswith("_m")):
        return values * 1e9, f"{base} (nm)"
    if u == "nm" or (not u and name.endswith("_nm")):
        return values, f"{base} (nm)"
    return values, f"{name} ({units})" if units else name


def _default_thresholds(group: str, names: Sequence[str]) -> list[tuple[str, float]]:
    """The thresholds `resolve-prt` uses (`cxdi_cli.prtf`): PRTF 1/e (Chapman 2006); FRC/FSC 0.5 and
    1/7 (the half-bit curve depends on the ring sizes, so it comes from the file)."""
    from cxdi_cli.analysis import resolution as prtf  # noqa: PLC0415 - the one place the threshold values live

    text = (group.rsplit("/", 1)[-1] + " " + " ".join(names)).lower()
    out: list[tuple[str, float]] = []
    if "prtf" in text:
        out.append(("1/e", float(prtf.PRTF_THRESHOLD)))
    if "frc" in text or "fsc" in text:
        out += [(k, float(v)) for k, v in prtf.THRESHOLDS.items()]
    return out


def curve_crossings(cs: CurveSet) -> list[tuple[str, float | None]]:
    """Where the first curve first drops below each threshold (from ring 1 outward, `prtf.crossing`);
    None when it stays above to the last ring."""
    from cxdi_cli.analysis import resolution as prtf  # noqa: PLC0415

    if not cs.curves or not cs.thresholds:
        return []
    y = np.asarray(cs.curves[0][1], float)
    curve = prtf.Curve(q=np.asarray(cs.x, float), nyquist_fraction=np.zeros_like(y), value=y,
                       count=np.ones_like(y))
    return [(label, prtf.crossing(curve, np.asarray(t, float))) for label, t in cs.thresholds]


def crossing_notes(cs: CurveSet) -> list[str]:
    """'1/e: q = 0.031 nm⁻¹ (d = 16.1 nm)' per threshold, d = 1/(2q) the half-period (DESIGN §1)."""
    inv_nm = "nm⁻¹" in cs.xlabel
    notes = []
    for label, q in curve_crossings(cs):
        if q is None:
            notes.append(f"{label}: above to the last ring")
        elif q > 0:
            unit = "nm" if inv_nm else "px" if "pixel" in cs.xlabel or "px" in cs.xlabel else ""
            d = f" (d = {1 / (2 * q):.3g}{' ' + unit if unit else ''})" if inv_nm or unit else ""
            notes.append(f"{label}: q = {q:.3g}{' nm⁻¹' if inv_nm else ''}{d}")
    return notes


def curves_from_h5(f, name: str) -> list[CurveSet]:
    """Every group of 1-D curves under /entry_1 (process groups skipped), one CurveSet per group.

    The x axis is the dataset the NXdata `axes` attribute names, else one named q… / freq… / k…,
    else `nyquist_fraction`, else the sample index; spatial frequencies in 1/m are shown in nm⁻¹.
    Datasets named *threshold* / *half_bit* are drawn as thresholds (PRTF 1/e and FRC 1/7 when the
    file has none); ring sizes and weights are not drawn; scalars become notes (lengths in nm)."""
    if "/entry_1" not in f:
        return []
    groups: dict[str, dict[str, Any]] = {}
    skip = re.compile(r"/(process_\d+|instrument_\d+|image_\d+)(/|$)")
    for dpath in io.list_datasets(f, 0):
        parent, _, key = dpath.rpartition("/")
        if not dpath.startswith("/entry_1/") or skip.search(parent[len("/entry_1"):] + "/"):
            continue
        d = f[dpath]
        if d.dtype.kind in "biuf" and (d.ndim == 1 and d.shape[0] >= 2 or d.ndim == 0):
            groups.setdefault(parent, {})[key] = d
    default = as_text(f["/entry_1"].attrs.get("default", ""))
    first = f"/entry_1/{default}".rstrip("/.") if default else ""
    sets = []
    for path in sorted(groups, key=lambda p: (p != first, p)):
        members = groups[path]
        g = f[path]
        scalars = {k: d for k, d in members.items() if d.ndim == 0}
        arrays = {k: d for k, d in members.items() if d.ndim == 1}
        if not arrays:
            continue
        xname = None
        if "axes" in g.attrs:
            cand = as_text(g.attrs["axes"])
            xname = cand if cand in arrays else None
        if xname is None:
            names = sorted(arrays)
            xname = next((k for k in names if _X_NAMES.search(k) and not _is_threshold(k)), None) \
                or next((k for k in names if k.lower().startswith("nyquist")), None)
        signal = as_text(g.attrs.get("signal", ""))
        candidates = [k for k in arrays if k != xname and not _AUX_NAMES.search(k)]
        if xname:
            n = arrays[xname].shape[0]
        elif signal in arrays:
            n = arrays[signal].shape[0]
        elif candidates:
            lengths = [arrays[k].shape[0] for k in candidates]
            n = max(set(lengths), key=lengths.count)
        else:
            continue
        if xname:
            x, xlabel = _axis(xname, _units(arrays[xname]), np.asarray(arrays[xname][()], float))
        else:
            x, xlabel = np.arange(n, dtype=float), "index"
        curves, thresholds = [], []
        for k in sorted(candidates, key=lambda k: (k != signal, k)):
            if arrays[k].shape[0] != n:
                continue
            y = np.asarray(arrays[k][()], float)
            (thresholds if _is_threshold(k) else curves).append((k, y))
        notes = []
        for k, d in sorted(scalars.items()):
            v, label = _axis(k, _units(d), np.asarray(d[()], float))
            if _is_threshold(k):
                thresholds.append((k, float(v)))
            else:
                notes.append(f"{label} = {float(v):.4g}")
        if not curves:
            continue
        have = {lab.lower().replace("-", "_") for lab, _ in thresholds}
        thresholds = [t for t in _default_thresholds(path, [c[0] for c in curves]) if t[0] not in have] + thresholds
        title = path.replace("/entry_1", "").strip("/") or name
        ylabel = curves[0][0] if len(curves) == 1 else ""
        cs = CurveSet(title=title, x=x, xlabel=xlabel, curves=curves, thresholds=thresholds,
                      ylabel=ylabel, notes=notes)
        cs.notes += crossing_notes(cs)
        sets.append(cs)
    return sets


# --------------------------------------------------------------------------- files -> pictures


def _read_pattern_lenient(spec: str, name: str) -> Pattern:
    """read_pattern, but a preview also shows data the phasing would refuse (negative values...)."""
    try:
        return io.read_pattern(spec)
    except DataError as exc:
        if "shape" in str(exc) or "2D or 3D" in str(exc):
            raise
        _, dset = io.split_url(spec)
        with io.open_h5(name) as f:
            path = dset or io.cxi.DET + "/data"
            if path not in f:
                raise
            data = np.asarray(f[path][()], np.float32)
            while data.ndim > 2 and data.shape[0] == 1:
                data = data[0]
            mpath = io.cxi.DET + "/mask"
            mask = np.asarray(f[mpath][()]).astype(np.uint32) if mpath in f else np.zeros(data.shape, np.uint32)
            if mask.shape != data.shape:
                mask = np.zeros(data.shape, np.uint32)
            mask = np.where(np.isfinite(data), mask, np.uint32(1))
            geometry = io.read_geometry(f)
        return Pattern(intensity=np.nan_to_num(data), mask=mask, geometry=geometry, source=spec)


def _array_picture(arr: np.ndarray, spec: str, *, log: bool, slice_spec: str | None, crop_support: bool,
                   title: str) -> Picture:
    """A bare array (TIFF, npy, a named dataset): complex -> object, 1-D -> curve, else an image."""
    arr = np.asarray(arr)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 1:
        if arr.dtype.kind not in "biuf" or arr.size < 2:
            raise DataError(f"{spec}: nothing to draw in a 1-D array of {arr.size} {arr.dtype} values")
        cs = CurveSet(title=spec, x=np.arange(arr.size, dtype=float), xlabel="index",
                      curves=[("value", arr.astype(float))])
        return Picture(kind="curves", title=title, curves=[cs], ncols=1)
    if arr.ndim not in (2, 3):
        raise DataError(f"{spec}: cannot draw an array of shape {arr.shape} (expected 1-D, 2D or 3D)")
    if np.iscomplexobj(arr):
        rec = Reconstruction(runs=[Run(obj=arr.astype(np.complex64), support=np.abs(arr) > 0)], source=spec)
        return reconstruction_picture(rec, slice_spec=slice_spec, crop_support=crop_support, title=title)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{spec}: cannot draw {arr.dtype} data")
    data = arr.astype(np.float32)
    bad = ~np.isfinite(data)
    notes = []
    if log and np.any(data[~bad] < 0):
        log = False
        notes.append("negative values: linear scale")
    pat = Pattern(intensity=np.where(bad, 0, data), mask=bad.astype(np.uint32), geometry=Geometry(), source=spec)
    pic = pattern_picture(pat, log=log, slice_spec=slice_spec, title=title, kind="image")
    pic.notes = notes + [n for n in pic.notes if "geometry" not in n]
    return pic


def load_picture(spec: str, *, log: bool = True, slice_spec: str | None = None, crop_support: bool = False,
                 run: int | None = None) -> Picture:
    """Read `spec` (FILE, FILE::/path or -) and build the picture of what it holds.

    The kind is told by content: `/entry_1/instrument_1/detector_1/data` -> diffraction data;
    `/entry_N/image_1` -> reconstruction (one run, or a grid of runs); 1-D datasets under `/entry_1` ->
    curves (PRTF/FRC); anything else -> the image the NeXus `default` points at (or the only one).
    """
    name, dset = io.split_url(spec)
    path = io.local_input(name)
    kind = io.sniff(path)
    label = name if name != "-" else "stdin"
    if kind != "hdf5":
        arr = io.read_array(spec)
        return _array_picture(arr, spec, log=log, slice_spec=slice_spec, crop_support=crop_support,
                              title=f"{label}  {'×'.join(map(str, arr.shape))}")
    sets: list[CurveSet] = []
    with io.open_h5(name) as f:
        if dset is not None:
            target = "pattern" if dset.rstrip("/").endswith(("detector_1/data", "data_1/data")) \
                else "reconstruction" if re.fullmatch(r"/entry_\d+/image_1(/data)?", dset.rstrip("/")) \
                else "array"
        elif io.cxi.DET + "/data" in f:
            target = "pattern"
        elif io.cxi.reconstruction_entries(f):
            target = "reconstruction"
        else:
            sets = curves_from_h5(f, label)
            target = "curves" if sets else "array"
    if target == "pattern":
        pat = _read_pattern_lenient(spec, name)
        shape = "×".join(map(str, pat.intensity.shape))
        g = pat.geometry
        geo = f"  {g.energy_kev:.3g} keV, D = {g.distance:g} m" if g.is_complete() and g.energy_kev else ""
        return pattern_picture(pat, log=log, slice_spec=slice_spec, title=f"{label}  {shape}{geo}")
    if target == "reconstruction":
        if dset is not None and not dset.rstrip("/").endswith("/data"):
            spec = f"{name}::{dset.rstrip('/')}/data"
        rec = io.read_reconstruction(spec)
        shape = "×".join(map(str, rec.runs[0].obj.shape))
        runs = f", {len(rec.runs)} runs" if len(rec.runs) > 1 else ""
        modes: list[tuple[str, np.ndarray]] = []
        if len(rec.runs) == 1 and dset is None:  # an average: its modes (cxdi average writes /entry_1/mode_K)
            keys = sorted((k for k in rec.arrays if re.fullmatch(r"mode_\d+", k)), key=lambda k: int(k[5:]))
            modes = [(k, rec.arrays[k].astype(np.complex64)) for k in keys
                     if rec.arrays[k].shape == rec.runs[0].obj.shape]
        return reconstruction_picture(rec, slice_spec=slice_spec, crop_support=crop_support, run=run,
                                      title=f"{label}  {shape}{runs}", modes=modes)
    if target == "curves":
        return Picture(kind="curves", title=label, curves=sets, ncols=min(len(sets), 2))
    with io.open_h5(name) as f:
        path = dset or io.cxi.nexus_default(f) or _only_image(f)
        if path is None:
            arr = io.read_array(spec)  # raises the reader's one-line "which dataset?" error
        else:
            ds = f.get(path)
            if ds is None or not hasattr(ds, "shape"):
                holds = ", ".join(io.list_datasets(f, 1)[:12]) or "no datasets"
                raise InputError(f"{name}: no dataset {path} (the file holds: {holds})")
            stack = ds.ndim == 3 and as_text(ds.attrs.get("interpretation", "")) == "image"
            arr = np.asarray(ds[()])
    title = f"{label}  {'×'.join(map(str, arr.shape))}"
    if path is not None and stack and slice_spec is None and arr.dtype.kind in "biuf":
        # a stack of detector frames (NeXus interpretation "image"): their sum, as preprocess sees it
        arr = arr.astype(np.float64).sum(axis=0)
        title += f"  (sum of {title.split('  ')[1].split('×')[0]} frames)"
    return _array_picture(arr, spec, log=log, slice_spec=slice_spec, crop_support=crop_support, title=title)


def _only_image(f) -> str | None:
    """The one image-like dataset of a file, hard links (the same data under two paths) counted once."""
    seen: dict[Any, str] = {}
    for p in io.list_datasets(f, 2):
        seen.setdefault(hash(f[p].id), p)
    return next(iter(seen.values())) if len(seen) == 1 else None


# --------------------------------------------------------------------------- matplotlib


def _layout(pic: Picture) -> tuple[int, int]:
    n = len(pic.panels) if pic.panels else len(pic.curves)
    ncols = max(1, min(pic.ncols or 1, n))
    return int(math.ceil(n / ncols)), ncols


def default_width(pic: Picture) -> int:
    """Default picture width in pixels: about 420 px per column, 640 to 1800 px."""
    _, ncols = _layout(pic)
    return int(min(1800, max(640, 420 * ncols + 140)))


def _cmap(scale: ColourScale):
    from matplotlib import colormaps  # noqa: PLC0415
    from matplotlib.colors import ListedColormap  # noqa: PLC0415

    if scale.cmap == "hsv-phase":
        return ListedColormap(phase_colours(256), name="hsv-phase")
    return colormaps[scale.cmap]


def render_figure(pic: Picture, *, width: int | None = None, dpi: float = 100.0):
    """Draw a Picture as a matplotlib Figure (Agg canvas) `width` pixels wide at `dpi`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.cm import ScalarMappable  # noqa: PLC0415
    from matplotlib.colors import Normalize  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    if dpi <= 0 or not math.isfinite(dpi):
        raise UsageError(f"--dpi {dpi}: must be positive")
    width = int(width or default_width(pic))
    if width < 64:
        raise UsageError(f"--width {width}: a picture needs at least 64 pixels")
    nrows, ncols = _layout(pic)
    if pic.panels:
        aspects = [p.rgb.shape[0] * p.pixel_aspect / p.rgb.shape[1] for p in pic.panels]
        aspect = float(np.clip(max(aspects), 0.2, 5.0))
        has_bar = any(p.scale for p in pic.panels)
        panel_w = (width - (110 if has_bar else 20)) / ncols
        has_labels = any(p.xlabel for p in pic.panels)
        panel_h = panel_w * aspect + (40 if has_labels else 0) + (34 if any(p.title for p in pic.panels) else 0)
    else:
        panel_w = width / ncols
        panel_h = panel_w * 0.62 + 16 * max(len(cs.notes) for cs in pic.curves)
    title_lines = len([t for t in pic.title.split("\n") if t]) + (1 if pic.notes else 0)
    height = int(round(nrows * panel_h + 22 * title_lines + 20))
    height = max(height, 64)
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    small = max(6.0, min(11.0, panel_w / dpi * 2.6))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    flat = list(axes.ravel())
    if pic.panels:
        bars: dict[str, tuple[ColourScale, list]] = {}
        for ax, panel in zip(flat, pic.panels):
            _draw_panel(ax, _fit_panel(panel, panel_w * 0.9), small)
            if panel.scale is not None:
                bars.setdefault(panel.scale.key or panel.scale.label, (panel.scale, []))[1].append(ax)
        for scale, axs in bars.values():
            sm = ScalarMappable(norm=Normalize(scale.vmin, scale.vmax), cmap=_cmap(scale))
            cb = fig.colorbar(sm, ax=axs, shrink=0.9 if len(bars) == 1 else 0.95, aspect=25, pad=0.02)
            cb.set_label(scale.label, fontsize=small)
            cb.ax.tick_params(labelsize=small * 0.9)
            if scale.cmap == "hsv-phase":
                cb.set_ticks([-np.pi, -np.pi / 2, 0, np.pi / 2, np.pi], labels=["-π", "-π/2", "0", "π/2", "π"])
        used = len(pic.panels)
    else:
        for ax, cs in zip(flat, pic.curves):
            _draw_curves(ax, cs, small)
        used = len(pic.curves)
    for ax in flat[used:]:
        ax.set_axis_off()
    head = pic.title
    if pic.notes:
        head = f"{head}\n{'; '.join(pic.notes)}" if head else "; ".join(pic.notes)
    if head:
        fig.suptitle(head, fontsize=small * 1.05)
    return fig


def resample(arr: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Area-average `arr` (h, w[, c]) onto an (out_h, out_w) grid; repeats pixels when enlarging."""
    a = np.asarray(arr, np.float64)

    def bins(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
        starts = (np.arange(n_out) * n_in) // n_out
        return starts, np.maximum(np.append(starts[1:], n_in) - starts, 1)

    rs, rc = bins(a.shape[0], out_h)
    cs, cc = bins(a.shape[1], out_w)
    rows = np.add.reduceat(a, rs, axis=0) / rc.reshape((-1,) + (1,) * (a.ndim - 1))
    return np.add.reduceat(rows, cs, axis=1) / cc.reshape((1, -1) + (1,) * (a.ndim - 2))


def _fit_panel(panel: Panel, width_px: float) -> Panel:
    """A masked intensity panel wider than its room on screen, reduced by an integer factor so that no
    masked pixel is lost: a reduced pixel is masked if any of its pixels is (a hot pixel stays one
    visible dot), and shows the mean colour-scale value of its measured pixels. Others pass as they are."""
    h, w = panel.rgb.shape[:2]
    if panel.masked is None or panel.brightness is None or panel.scale is None or width_px <= 0:
        return panel
    k = int(math.ceil(w / width_px))
    if k < 2:
        return panel
    oh, ow = -(-h // k), -(-w // k)
    good = (~panel.masked).astype(float)
    num = resample(np.asarray(panel.brightness, float) * good, oh, ow)
    den = resample(good, oh, ow)
    frac = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    masked = resample(panel.masked.astype(float), oh, ow) > 0
    rgb = _cmap_rgb(frac, panel.scale.cmap)
    rgb[masked] = np.asarray(MASK_RGB, float) / 255.0
    extent = panel.extent if panel.extent is not None else (-0.5, w - 0.5, -0.5, h - 0.5)  # keep pixel axes
    return dataclasses.replace(panel, rgb=rgb, brightness=frac, masked=masked, extent=extent,
                               pixel_aspect=panel.pixel_aspect * (h / oh) / (w / ow))


def _draw_panel(ax, panel: Panel, fontsize: float) -> None:
    h, w = panel.rgb.shape[:2]
    extent = panel.extent if panel.extent is not None else (-0.5, w - 0.5, -0.5, h - 0.5)
    ax.imshow(np.clip(panel.rgb, 0.0, 1.0), origin="lower", extent=extent, interpolation="nearest",
              aspect=panel.pixel_aspect * (extent[1] - extent[0]) / w / ((extent[3] - extent[2]) / h))
    if panel.title:
        ax.set_title(panel.title, fontsize=fontsize)
    if panel.ticks:
        ax.set_xlabel(panel.xlabel, fontsize=fontsize)
        ax.set_ylabel(panel.ylabel, fontsize=fontsize)
        ax.tick_params(labelsize=fontsize * 0.9)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if panel.scalebar is not None:
        from matplotlib.patches import Rectangle  # noqa: PLC0415

        length, label = panel.scalebar
        sx = (extent[1] - extent[0]) / w
        sy = (extent[3] - extent[2]) / h
        x1 = extent[1] - 0.05 * w * sx
        x0 = x1 - length * sx
        y0 = extent[2] + 0.06 * h * sy
        ax.add_patch(Rectangle((x0, y0), length * sx, max(1.0, 0.015 * h) * sy, color="white", lw=0))
        ax.text((x0 + x1) / 2, y0 + max(2.0, 0.03 * h) * sy, label, color="white", ha="center", va="bottom",
                fontsize=fontsize)


def _draw_curves(ax, cs: CurveSet, fontsize: float) -> None:
    for label, y in cs.curves:
        ax.plot(cs.x, y, lw=1.4, color="black" if len(cs.curves) == 1 else None, marker=".", ms=3, label=label)
    styles = ["--", ":", "-.", (0, (5, 2, 1, 2))]
    colours = ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange"]
    crossing = dict(curve_crossings(cs))
    for k, (label, t) in enumerate(cs.thresholds):
        colour = colours[k % len(colours)]
        if np.ndim(t) == 0:
            ax.axhline(float(t), ls=styles[k % len(styles)], color=colour, lw=1.0, label=label)
        else:
            ax.plot(cs.x, np.asarray(t, float), ls=styles[k % len(styles)], color=colour, lw=1.0, label=label)
        if crossing.get(label) is not None:
            ax.axvline(crossing[label], color=colour, lw=0.8, alpha=0.6)
    ys = np.concatenate([np.asarray(y, float).ravel() for _, y in cs.curves])
    ys = ys[np.isfinite(ys)]
    if ys.size and ys.min() >= -0.2 and ys.max() <= 1.2:  # correlations, PRTF: the full 0..1 range
        ax.set_ylim(min(0.0, float(ys.min()) - 0.02), max(1.05, float(ys.max()) * 1.02))
    ax.set_xlabel(cs.xlabel, fontsize=fontsize)
    if cs.ylabel:
        ax.set_ylabel(cs.ylabel, fontsize=fontsize)
    ax.set_title("\n".join([cs.title] + cs.notes), fontsize=fontsize)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=fontsize * 0.9)
    ax.legend(fontsize=fontsize * 0.85)


def save_png(fig, dest: str, dpi: float = 100.0) -> None:
    """Write the figure as PNG to `dest` atomically (`-` = stdout, refused on a terminal)."""
    with io.atomic_output(dest, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")


__all__ = [
    "CurveSet", "MASK_RGB", "Panel", "Picture", "crossing_notes", "curve_crossings", "curves_from_h5",
    "default_width", "load_picture",
    "metrics_text", "nice_length", "parse_slice", "pattern_picture", "phase_colours", "reconstruction_picture",
    "render_figure", "run_panels", "save_png",
]
