"""Previews of cxdi files: `load_picture` tells what a file holds and builds its `Picture`.

The view is split by what it draws: `picture` (the Picture/Panel/CurveSet model, colours, `resample`),
`patterns` (diffraction patterns and volumes), `reconstructions` (runs, averages and modes, HSV
complex images), `curves` (PRTF, FRC/FSC and their crossings) and `figure` (matplotlib, PNG saving);
`terminal` draws the same Pictures as text. This module reads files and dispatches to them, and
re-exports their public names, so `from cxdi_cli.view import render` then `render.load_picture`,
`render.render_figure`, `render.save_png`, `render.CurveSet`, `render.crossing_notes`, ... is the
one import a command or a notebook needs.

Errors are `CxdiError`s with one-line messages; nothing here prints.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from cxdi_cli import io
from cxdi_cli.io.cxi import as_text
from cxdi_cli.model import DataError, Geometry, InputError, Pattern, Reconstruction, Run
from cxdi_cli.view.curves import crossing_notes, curve_crossings, curves_from_h5
from cxdi_cli.view.figure import default_width, render_figure, save_png
from cxdi_cli.view.patterns import LOG_DECADES, pattern_picture
from cxdi_cli.view.picture import (
    AXES,
    INTENSITY_CMAP,
    MASK_RGB,
    ColourScale,
    CurveSet,
    Panel,
    Picture,
    nice_length,
    parse_slice,
    phase_colours,
    resample,
)
from cxdi_cli.view.reconstructions import (
    CROP_MARGIN,
    MAX_GRID_RUNS,
    metrics_text,
    reconstruction_picture,
    run_panels,
)


def _read_pattern_lenient(spec: str, name: str, f) -> Pattern:
    """read_pattern from the open file `f`, but a preview also shows data the phasing would refuse
    (negative values...)."""
    try:
        return io.read_pattern(spec, h5file=f)
    except DataError as exc:
        if "shape" in str(exc) or "2D or 3D" in str(exc):
            raise
        _, dset = io.split_url(spec)
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
        return Pattern(intensity=np.nan_to_num(data), mask=mask, geometry=io.read_geometry(f), source=spec)


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


def load_picture(spec: str, *, log: bool = True, slice_spec: str | None = None, crop_support: bool = True,
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
    with io.open_h5(name) as f:  # opened once: what the file holds is told and read in one go
        target, content = _read_hdf5(f, spec, name, dset, label, slice_spec)
    if target == "pattern":
        pat = content
        shape = "×".join(map(str, pat.intensity.shape))
        g = pat.geometry
        geo = f"  {g.energy_kev:.3g} keV, D = {g.distance:g} m" if g.is_complete() and g.energy_kev else ""
        return pattern_picture(pat, log=log, slice_spec=slice_spec, title=f"{label}  {shape}{geo}")
    if target == "reconstruction":
        rec = content
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
        return Picture(kind="curves", title=label, curves=content, ncols=min(len(content), 2))
    arr, title = content
    return _array_picture(arr, spec, log=log, slice_spec=slice_spec, crop_support=crop_support, title=title)


def _read_hdf5(f, spec: str, name: str, dset: str | None, label: str, slice_spec: str | None) -> tuple[str, Any]:
    """What the open file `f` holds, read: ('pattern', Pattern), ('reconstruction', Reconstruction),
    ('curves', [CurveSet]) or ('array', (array, title))."""
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
        if sets:
            return "curves", sets
        target = "array"
    if target == "pattern":
        return target, _read_pattern_lenient(spec, name, f)
    if target == "reconstruction":
        if dset is not None and not dset.rstrip("/").endswith("/data"):
            spec = f"{name}::{dset.rstrip('/')}/data"
        return target, io.read_reconstruction(spec, h5file=f)
    path = dset or io.cxi.nexus_default(f) or _only_image(f)
    if path is None:
        arr = io.read_array(spec)  # raises the reader's one-line "which dataset?" error
        return target, (arr, f"{label}  {'×'.join(map(str, arr.shape))}")
    ds = f.get(path)
    if ds is None or not hasattr(ds, "shape"):
        holds = ", ".join(io.list_datasets(f, 1)[:12]) or "no datasets"
        raise InputError(f"{name}: no dataset {path} (the file holds: {holds})")
    stack = ds.ndim == 3 and as_text(ds.attrs.get("interpretation", "")) == "image"
    arr = np.asarray(ds[()])
    title = f"{label}  {'×'.join(map(str, arr.shape))}"
    if stack and slice_spec is None and arr.dtype.kind in "biuf":
        # a stack of detector frames (NeXus interpretation "image"): their sum, as preprocess sees it
        arr = arr.astype(np.float64).sum(axis=0)
        title += f"  (sum of {title.split('  ')[1].split('×')[0]} frames)"
    return target, (arr, title)


def _only_image(f) -> str | None:
    """The one image-like dataset of a file, hard links (the same data under two paths) counted once."""
    seen: dict[Any, str] = {}
    for p in io.list_datasets(f, 2):
        seen.setdefault(hash(f[p].id), p)
    return next(iter(seen.values())) if len(seen) == 1 else None


__all__ = [
    "AXES", "CROP_MARGIN", "ColourScale", "CurveSet", "INTENSITY_CMAP", "LOG_DECADES", "MASK_RGB",
    "MAX_GRID_RUNS", "Panel", "Picture", "crossing_notes", "curve_crossings", "curves_from_h5",
    "default_width", "load_picture", "metrics_text", "nice_length", "parse_slice", "pattern_picture",
    "phase_colours", "reconstruction_picture", "render_figure", "resample", "run_panels", "save_png",
]
