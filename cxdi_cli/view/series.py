"""Pictures of a time series: the frames of `cxdi phase --series` (or the series data) side by side in
time order (a strip), or one after the other (an animated GIF).

Reconstructions: every frame as the HSV complex image of `reconstructions` (hue = phase, brightness =
amplitude, global phase removed), all framed on the union of the supports and on ONE amplitude scale,
so that a feature that grows is seen growing; the summed-frames reference first when the file holds it.
Data: each frame's log10 intensity on one colour scale, masked pixels magenta."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from cxdi_cli import io
from cxdi_cli.analysis import align
from cxdi_cli.io.cxi import as_text
from cxdi_cli.model import DataError, Reconstruction, UsageError, measured_from_mask
from cxdi_cli.view.patterns import _intensity_panel, _intensity_scale
from cxdi_cli.view.picture import ColourScale, Panel, Picture
from cxdi_cli.view.reconstructions import _amp_max, _complex_panel, _scalebar, crop_box, pixel_size

#: Most frames in a strip (evenly spaced over the series when it has more); a GIF shows every frame.
MAX_STRIP = 24
#: Panels per row of a strip.
STRIP_COLUMNS = 8


def what_series(spec: str) -> str | None:
    """"frames" for a reconstruction written by `phase --series`, "data" for a series of patterns
    (`io.series` layout), None for anything else (the file is only looked into, not read)."""
    name, dset = io.split_url(spec)
    if dset is not None or name == "-" or io.sniff(io.local_input(name)) != "hdf5":
        return None
    with io.open_h5(name) as f:
        if "/entry_1/image_1" in f and "/entry_1/cxdi_extra" in f:
            return "frames" if '"series"' in as_text(f["/entry_1/cxdi_extra"][()]) else None
        ds = f.get(io.cxi.DET + "/data")
        if ds is not None and getattr(ds, "ndim", 0) == 3 and as_text(ds.attrs.get("interpretation", "")) == "image":
            return "data"
    return None


def _chosen(n: int, limit: int | None) -> list[int]:
    if limit is None or n <= limit:
        return list(range(n))
    return sorted({int(round(k)) for k in np.linspace(0, n - 1, limit)})


def _frame_panels(rec: Reconstruction, crop: bool, limit: int | None) -> tuple[list[Panel], list[str]]:
    runs = sorted((r for r in rec.runs if int(r.params.get("chain", 0)) == 0),   # one run per frame
                  key=lambda r: int(r.params.get("frame_index", 0)))
    ref = rec.arrays.get("reference")
    ref_sup = rec.arrays.get("reference_support")
    shape = runs[0].obj.shape
    if len(shape) != 2:
        raise DataError(f"{rec.source}: a series of {len(shape)}-D objects; only 2D frames are drawn")
    objs = [(f"frame {r.params.get('frame_index', k)}\nt = {float(r.params.get('time_s', k)):.4g} s"
             + ("  FAILED" if r.metrics.get("failed") in (True, 1) else ""), r.obj, np.asarray(r.support, bool))
            for k, r in enumerate(runs)]
    objs = [objs[k] for k in _chosen(len(objs), limit)]
    if ref is not None and ref.shape == shape and limit is not None:
        sup = np.asarray(ref_sup, bool) if ref_sup is not None and ref_sup.shape == shape else np.abs(ref) > 0
        objs.insert(0, ("reference\n(summed frames)", ref, sup))
    box = crop_box([s for _, _, s in objs]) if crop else None
    box = box or (slice(0, shape[0]), slice(0, shape[1]))
    flat = [align.remove_global_phase(np.asarray(o, np.complex64), s) for _, o, s in objs]
    # one amplitude scale over the frames (the reference, a sum of T frames, scaled to a frame's level)
    amax = max(_amp_max(np.abs(o)[s]) for (t, _, s), o in zip(objs, flat) if not t.startswith("reference"))
    pixel = pixel_size(rec, shape)
    panels = []
    for (title, _, sup), obj in zip(objs, flat):
        level = amax if not title.startswith("reference") else _amp_max(np.abs(obj)[sup])
        p = _complex_panel(obj[box], level)
        p.title = title
        if pixel:
            p.scalebar = _scalebar(pixel[1], p.rgb.shape[1])
            p.pixel_aspect = pixel[0] / pixel[1]
        panels.append(p)
    notes = [f"{len(runs)} frames" + (f", {len(objs) - (ref is not None)} shown" if len(runs) > len(objs) else "")
             + "; hue = phase, brightness = amplitude on one scale (the reference on its own)"]
    return panels, notes


def _data_panels(series: Any, limit: int | None) -> tuple[list[Panel], list[str]]:
    chosen = _chosen(len(series), limit)
    masked = [~measured_from_mask(series.frame_mask(k)) for k in chosen]
    values = np.concatenate([series.intensity[k][~m] for k, m in zip(chosen, masked)])
    vmin, vmax = _intensity_scale(values, True)
    scale = ColourScale(label="log10 photons", vmin=vmin, vmax=vmax, key="intensity")
    panels = []
    for k, m in zip(chosen, masked):
        p = _intensity_panel(series.intensity[k], m, scale, True)
        p.title = f"frame {k}\nt = {float(series.time[k]):.4g} s"
        p.ticks = False
        panels.append(p)
    return panels, [f"{len(series)} frames of {series.intensity.shape[1]}×{series.intensity.shape[2]}, masked "
                    "pixels magenta"]


def _panels(spec: str, kind: str, crop: bool, limit: int | None) -> tuple[list[Panel], list[str]]:
    if kind == "frames":
        return _frame_panels(io.read_reconstruction(spec), crop, limit)
    return _data_panels(io.read_series(spec), limit)


def series_picture(spec: str, kind: str, *, crop_support: bool = True, title: str = "") -> Picture:
    """The strip of a series file (`what_series` kind): at most `MAX_STRIP` frames in time order."""
    panels, notes = _panels(spec, kind, crop_support, MAX_STRIP)
    return Picture(kind="series", title=title, panels=panels, ncols=min(len(panels), STRIP_COLUMNS), notes=notes)


def write_gif(spec: str, dest: str, *, crop_support: bool = True, width: int | None = None,
              frame_ms: int = 200) -> dict[str, Any]:
    """Every frame of a series file as an animated GIF (`frame_ms` per frame, looping), each frame
    scaled up by an integer factor to about `width` pixels (default 320). Returns {frames, shape}."""
    kind = what_series(spec)
    if kind is None:
        raise UsageError(f"{spec}: -o .gif animates a time series (phase --series output or series data); "
                         "this file is not one")
    panels, _ = _panels(spec, kind, crop_support, None)
    from PIL import Image  # noqa: PLC0415 - Pillow comes with matplotlib

    h, w = panels[0].rgb.shape[:2]
    k = max(1, int(math.ceil((width or 320) / w)))
    images = []
    for p in panels:
        rgb = np.flipud(np.clip(p.rgb, 0, 1))          # row 0 is drawn at the bottom (lab y up)
        rgb = np.repeat(np.repeat(rgb, k, axis=0), k, axis=1)
        images.append(Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).convert("P", palette=Image.ADAPTIVE))
    with io.atomic_output(dest, ".gif") as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(frame_ms),
                       loop=0)
    return {"frames": len(images), "shape": [h * k, w * k]}
