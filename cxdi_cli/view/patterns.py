"""Pictures of diffraction data: a 2D pattern, or three central slices (or one `--slice`) of a 3D volume.

log10 of the intensity (or linear) in `INTENSITY_CMAP`; masked pixels (any mask bit other than the
informational ones) in pure magenta `MASK_RGB`, a colour viridis never takes. Axes are q = 2 sin(θ)/λ
in nm⁻¹ (linear pitch p/(λD), or the stored voxel pitch of an assembled volume); pixel indices when
the file has no geometry. q = 0 sits at index n // 2 (DESIGN §3), or on the stored beam centre of a
full-detector 2D pattern; lab y points up (origin at the bottom).
"""
from __future__ import annotations

import numpy as np

from cxdi_cli.model import DataError, Pattern, measured_from_mask
from cxdi_cli.view.picture import (
    AXES,
    MASK_RGB,
    ColourScale,
    Panel,
    Picture,
    check_index,
    cmap_rgb,
    parse_slice,
    plane_axes,
)

#: Widest dynamic range (decades) a log picture shows below the brightest pixel.
LOG_DECADES = 8.0


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
    rgb = cmap_rgb(frac, scale.cmap)
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
            index = data.shape[axis] // 2 if index is None else check_index(axis, index, data.shape)
            centre = data.shape[axis] // 2
            where = "q = 0" if index == centre else f"{index - centre:+d} from q = 0"
            planes.append((np.take(data, index, axis=axis), np.take(masked, index, axis=axis),
                           f"{AXES[axis]} = {index} ({where})", plane_axes(axis)))
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


__all__ = ["LOG_DECADES", "pattern_picture"]
