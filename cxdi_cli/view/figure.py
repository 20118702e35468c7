"""Figures with matplotlib: a `Picture` drawn on an Agg canvas (no pyplot, no global state) and saved
as PNG atomically.

Panels sit on a grid (`Picture.ncols`), one colour bar per shared `ColourScale`; a masked intensity
panel wider than its room is reduced so that no masked pixel is lost; curve panels get their
thresholds dashed and the crossings marked. matplotlib is imported only when a figure is drawn
(`cxdi --help` stays light).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from cxdi_cli import io
from cxdi_cli.model import UsageError
from cxdi_cli.view.curves import curve_crossings
from cxdi_cli.view.picture import (
    MASK_RGB,
    ColourScale,
    CurveSet,
    Panel,
    Picture,
    cmap_rgb,
    phase_colours,
    resample,
)


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
    rgb = cmap_rgb(frac, panel.scale.cmap)
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


__all__ = ["default_width", "render_figure", "save_png"]
