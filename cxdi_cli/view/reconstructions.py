"""Pictures of reconstructions: one run in detail, an average with its modes, or a grid of runs.

The complex object as HSV colour: phase as hue (phase 0 red, ±π cyan), amplitude as brightness. The
global phase, undefined in phase retrieval, is removed (`align.remove_global_phase`). The scale bar
uses the real-space pixel of the file (or λD/(N p) from its geometry). 3D: central slices through the
support's centre and projections of the amplitude.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from cxdi_cli.analysis import align
from cxdi_cli.model import DataError, Reconstruction, Run, UsageError
from cxdi_cli.view.picture import (
    AXES,
    ColourScale,
    Panel,
    Picture,
    check_index,
    cmap_rgb,
    hsv_phase_rgb,
    length_label,
    nice_length,
    parse_slice,
    plane_axes,
)

#: Margin around the support for --crop-support: this fraction of the support's extent, at least 4 px.
CROP_MARGIN = 0.15
#: Most runs shown in a run grid (the best-ordered first ones of the file).
MAX_GRID_RUNS = 36


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


def crop_box(supports: Sequence[np.ndarray], margin: float = CROP_MARGIN) -> tuple[slice, ...] | None:
    """The bounding box of the union of `supports` widened by `margin` of its extent (at least 4 px) on
    each side, clipped to the array; None when every support is empty (nothing to frame)."""
    union = np.zeros(np.shape(supports[0]), bool)
    for sup in supports:
        union |= np.asarray(sup, bool)
    idx = np.nonzero(union)
    if idx[0].size == 0:
        return None
    box = []
    for a, n in zip(idx, union.shape):
        lo, hi = int(a.min()), int(a.max()) + 1
        pad = max(4, int(math.ceil(margin * (hi - lo))))
        box.append(slice(max(0, lo - pad), min(n, hi + pad)))
    return tuple(box)


def object_centre(obj: np.ndarray, support: np.ndarray) -> list[int]:
    """Voxel index of the centre of mass of |obj| inside the support (of the support alone when the
    object is zero there; the array centre when the support is empty): where the 3D slices cut."""
    w = np.abs(np.asarray(obj)) * np.asarray(support, bool)
    if not w.sum() > 0:
        w = np.asarray(support, float)
    total = float(w.sum())
    if not total > 0:
        return [n // 2 for n in w.shape]
    centre = []
    for a, n in enumerate(w.shape):
        profile = w.sum(axis=tuple(b for b in range(w.ndim) if b != a))
        centre.append(int(round(float(np.dot(profile, np.arange(n))) / total)))
    return centre


def _amp_max(amp: np.ndarray) -> float:
    nz = amp[amp > 0]
    if nz.size == 0:
        return 1.0
    top = float(np.percentile(nz, 99.9)) if nz.size > 1000 else float(nz.max())
    return top if top > 0 else 1.0


def _complex_panel(obj: np.ndarray, amax: float) -> Panel:
    amp = np.abs(obj)
    value = np.clip(amp / amax, 0.0, 1.0)
    rgb = hsv_phase_rgb(np.angle(obj), value)
    return Panel(rgb=rgb, brightness=value, ticks=False,
                 scale=ColourScale(label="phase (rad)", vmin=-np.pi, vmax=np.pi, cmap="hsv-phase", key="phase"))


def _scalebar(pixel_x: float | None, width_px: int) -> tuple[float, str] | None:
    if not pixel_x:
        return None
    length = nice_length(0.25 * width_px * pixel_x)
    if length <= 0:
        return None
    return length / pixel_x, length_label(length)


def pixel_size(rec: Reconstruction, shape: tuple[int, ...]) -> tuple[float, ...] | None:
    """The real-space pixel of a reconstruction of `shape`: the file's, else from its geometry."""
    if rec.pixel_size is not None and len(rec.pixel_size) == len(shape):
        return tuple(float(p) for p in rec.pixel_size)
    return rec.geometry.real_pixel(shape)


def _framed(panel: Panel, box: tuple[slice, slice] | None, full: tuple[int, int]) -> Panel:
    """Give a cropped panel the extent of its box in the file's pixel indices (what --slice counts)."""
    if box is not None and tuple(b.stop - b.start for b in box) != full:
        panel.extent = (box[1].start - 0.5, box[1].stop - 0.5, box[0].start - 0.5, box[0].stop - 0.5)
    return panel


def run_panels(run: Run, pixel: tuple[float, ...] | None, *, slice_spec: str | None = None,
               crop_support: bool = True, projections: bool = True,
               box: tuple[slice, ...] | None = None) -> list[Panel]:
    """Panels of one run: 2D -> one HSV image; 3D -> three orthogonal slices through the object's centre
    of mass (or the `--slice`) and, with `projections`, the amplitude projected along z (the beam).

    `crop_support` frames the support plus `CROP_MARGIN` (`box`, when given, is the frame: a grid of
    runs shares one); a cropped panel's extent is its box in the file's pixel indices."""
    obj = np.asarray(run.obj)
    support = np.asarray(run.support, bool)
    if obj.ndim not in (2, 3):
        raise DataError(f"reconstruction must be 2D or 3D, got shape {obj.shape}")
    obj = align.remove_global_phase(obj, support)
    if crop_support and box is None:
        box = crop_box([support])
    if not crop_support:
        box = None
    full_box = tuple(slice(0, n) for n in obj.shape)
    box = box or full_box
    amp = np.abs(obj)
    amax = _amp_max(amp[support] if support.any() else amp[box])
    if obj.ndim == 2:
        panel = _framed(_complex_panel(obj[box], amax), box, obj.shape)
        if pixel:
            panel.scalebar = _scalebar(pixel[1], panel.rgb.shape[1])
            panel.pixel_aspect = pixel[0] / pixel[1]
        return [panel]
    centre = object_centre(obj, support)
    sel = parse_slice(slice_spec, 3)
    wanted = [sel] if sel is not None else [(a, None) for a in range(3)]
    panels = []
    for axis, index in wanted:
        index = centre[axis] if index is None else check_index(axis, index, obj.shape)
        av, ah = plane_axes(axis)
        plane_box = (box[av], box[ah])
        panel = _framed(_complex_panel(np.take(obj, index, axis=axis)[plane_box], amax), plane_box,
                        (obj.shape[av], obj.shape[ah]))
        panel.title = f"slice {AXES[axis]} = {index}"
        if pixel:
            panel.scalebar = _scalebar(pixel[ah], panel.rgb.shape[1])
            panel.pixel_aspect = pixel[av] / pixel[ah]
        panels.append(panel)
    if projections and sel is None:
        proj = amp.sum(axis=0)[box[1], box[2]]  # along the beam: what a 2D image of the object would see
        frac = proj / (float(proj.max()) or 1.0)
        scale = ColourScale(label="projected amplitude (rel.)", vmin=0.0, vmax=1.0, cmap="gray", key="proj")
        panel = _framed(Panel(rgb=cmap_rgb(frac, "gray"), brightness=frac, ticks=False, scale=scale,
                              title="projection along z"), (box[1], box[2]), obj.shape[1:])
        if pixel:
            panel.scalebar = _scalebar(pixel[2], proj.shape[1])
            panel.pixel_aspect = pixel[1] / pixel[2]
        panels.append(panel)
    return panels


def _crop_note(box: tuple[slice, ...] | None, shape: tuple[int, ...]) -> list[str]:
    """The picture's note that it is framed on the support (none when the frame is the whole field)."""
    if box is None or all(b.stop - b.start == n for b, n in zip(box, shape)):
        return []
    inner = "×".join(str(b.stop - b.start) for b in box)
    whole = "×".join(map(str, shape))
    return [f"cropped to the support + {100 * CROP_MARGIN:g} % ({inner} of {whole}); --full shows the whole field"]


def reconstruction_picture(rec: Reconstruction, *, slice_spec: str | None = None, crop_support: bool = True,
                           run: int | None = None, title: str = "",
                           modes: Sequence[tuple[str, np.ndarray]] = ()) -> Picture:
    """One run in detail (a single-run file, or `run`), or a grid of runs with their metrics.

    `crop_support` (the default) frames the support plus `CROP_MARGIN` (a grid: the union of the runs'
    supports, so that the runs are compared in one frame); False shows the whole field.
    `modes` (name, complex array) of an averaged file are added, one panel each (3D: the z slice of the
    main picture), titled with their weights from `rec.extra['mode_weights']`."""
    if not rec.runs:
        raise DataError(f"{rec.source}: no runs to show")
    shape = rec.runs[0].obj.shape
    parse_slice(slice_spec, len(shape))  # a usage error before any work
    pixel = pixel_size(rec, shape)
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
        box = crop_box([r.support]) if crop_support else None
        notes += _crop_note(box, shape)
        panels = run_panels(r, pixel, slice_spec=slice_spec, crop_support=crop_support, box=box)
        weights = list(rec.extra.get("mode_weights", [])) if isinstance(rec.extra, dict) else []
        spec = slice_spec
        if spec is None and len(shape) == 3:  # modes: the z slice of the main picture
            spec = f"z={object_centre(r.obj, r.support)[0]}"  # |obj|: the global phase does not move it
        for k, (mname, mode) in enumerate(modes):
            mp = run_panels(Run(obj=mode, support=r.support), pixel, slice_spec=spec, crop_support=crop_support,
                            projections=False, box=box)[0]
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
        ncols = min(len(panels), 4)
        return Picture(kind="reconstruction", title=title + (f"\n{sub}" if sub else ""), panels=panels,
                       ncols=ncols, notes=notes)
    # a grid of runs: one panel each (3D: the central slice normal to z, or --slice)
    n = min(len(rec.runs), MAX_GRID_RUNS)
    if len(rec.runs) > n:
        notes.append(f"first {n} of {len(rec.runs)} runs shown; --run K shows one")
    box = crop_box([r.support for r in rec.runs[:n]]) if crop_support else None
    notes += _crop_note(box, shape)
    panels = []
    for k in range(n):
        r = rec.runs[k]
        spec = slice_spec if (slice_spec or r.obj.ndim == 2) else "z"
        p = run_panels(r, pixel, slice_spec=spec if r.obj.ndim == 3 else None, crop_support=crop_support,
                       projections=False, box=box)[0]
        flag = "  FAILED" if r.metrics.get("failed") in (True, 1) else ""
        p.title = f"run {k + 1}{flag}\n{metrics_text(r.metrics, limit=3)}".rstrip()
        panels.append(p)
    ncols = int(math.ceil(math.sqrt(n)))
    return Picture(kind="runs", title=title, panels=panels, ncols=ncols, notes=notes)


__all__ = [
    "CROP_MARGIN", "MAX_GRID_RUNS", "crop_box", "metrics_text", "object_centre", "reconstruction_picture",
    "run_panels",
]
