"""The numbers of a cxdi file for programs other than cxdi: float32 TIFF for ImageJ/Fiji and napari, and
VTK ImageData (.vti) for ParaView, so that a 2D or 3D result can be inspected without Python.

Patterns and volumes: the intensity in photons, masked pixels NaN (ImageJ draws them blank), on the
q grid (pitch p/(λD), q = 0 at index n // 2). Reconstructions: amplitude and phase (radians, global
phase removed as `cxdi show` draws it) and the support, on the real-space grid of the file's pixel size.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from cxdi_cli import io
from cxdi_cli.analysis import align
from cxdi_cli.model import InputError, Reconstruction, Run
from cxdi_cli.view import vtk
from cxdi_cli.view.reconstructions import crop_box, pixel_size


@dataclasses.dataclass
class Export:
    """What a file holds, as arrays of one shape (y, x) or (z, y, x) on a regular grid.

    `step` is the pitch along each array axis, metres (real space) or 1/m (q), None when the file
    does not say; `first` is the array index (in the file's array) of element 0: not 0 when cropped."""

    kind: str                                 # 'reconstruction' or 'pattern'
    arrays: dict[str, np.ndarray]
    step: tuple[float, ...] | None
    first: tuple[int, ...]
    full_shape: tuple[int, ...]
    centre: tuple[float, ...] | None = None   # array index of the origin (q = 0, or the field's centre)

    @property
    def origin(self) -> tuple[float, ...]:
        """Position of element 0 in `step` units: 0 at the centre (q = 0 for a pattern, n // 2 for an object)."""
        centre = self.centre or tuple(float(n // 2) for n in self.full_shape)
        step = self.step or (1.0,) * len(self.full_shape)
        return tuple((f - c) * s for f, c, s in zip(self.first, centre, step))


def load_export(spec: str, run: int = 1, crop: bool = False) -> Export:
    """The arrays of `spec` to export: run `run` of a reconstruction (cropped to its support plus
    a margin when `crop`, as `cxdi show` frames it) or the intensity of a pattern or volume."""
    name, _ = io.split_url(spec)
    if io.sniff(io.local_input(name)) == "hdf5":
        with io.open_h5(name) as f:  # one open: told and read
            if io.cxi.reconstruction_entries(f) and io.cxi.DET + "/data" not in f:
                return _object_export(io.read_reconstruction(spec, h5file=f), name, run, crop)
            pattern = io.read_pattern(spec, h5file=f)
    elif np.iscomplexobj(arr := io.read_array(spec)):  # a complex array (npy, TIFF) is an object
        obj = arr.astype(np.complex64)
        return _object_export(Reconstruction(runs=[Run(obj=obj, support=np.abs(obj) > 0)], source=spec),
                              name, run, crop)
    else:
        pattern = io.read_pattern(spec)
    data = np.where(pattern.measured, pattern.intensity, np.nan).astype(np.float32)
    centre = None
    if data.ndim == 2 and pattern.geometry.centre is not None and len(pattern.geometry.centre) == 2:
        centre = tuple(float(c) for c in pattern.geometry.centre)  # a full detector: q = 0 on the beam
    return Export(kind="pattern", arrays={"intensity": data}, step=pattern.geometry.q_step(data.ndim),
                  first=(0,) * data.ndim, full_shape=data.shape, centre=centre)


def _object_export(rec: Reconstruction, name: str, run: int, crop: bool) -> Export:
    if not 1 <= run <= len(rec.runs):
        raise InputError(f"{name}: no run {run} (the file holds {len(rec.runs)})")
    r = rec.runs[run - 1]
    obj = align.remove_global_phase(r.obj, r.support)  # as `cxdi show` draws it
    support = np.asarray(r.support, bool)
    box = (crop_box([support]) if crop else None) or tuple(slice(0, n) for n in obj.shape)
    obj, support = obj[box], support[box]
    amp = np.abs(obj)
    arrays = {"amplitude": amp.astype(np.float32),
              "phase": np.where(amp > 0, np.angle(obj), 0).astype(np.float32),
              "support": support.astype(np.uint8)}
    pixel = pixel_size(rec, r.obj.shape)
    return Export(kind="reconstruction", arrays=arrays, step=tuple(float(p) for p in pixel) if pixel else None,
                  first=tuple(b.start for b in box), full_shape=tuple(r.obj.shape))


def tiff_image(spec: str, run: int = 1, crop: bool = False) -> tuple[np.ndarray, str, tuple[float, ...] | None]:
    """(float32 array, ImageJ axes, pixel size per axis in m or None) for the data or run `run` of `spec`.

    Reconstructions: amplitude and phase as two channels, "CYX" (2D) or "ZCYX" (3D: ImageJ's hyperstack
    order, which napari and tifffile read back as the same axes), the voxel size per axis (z spacing,
    x/y resolution). Patterns: "YX" / "ZYX" intensity, NaN where masked, no pixel size (q space)."""
    ex = load_export(spec, run, crop)
    if ex.kind == "pattern":
        data = ex.arrays["intensity"]
        return data, "YX" if data.ndim == 2 else "ZYX", None
    planes = np.stack([ex.arrays["amplitude"], ex.arrays["phase"]])
    if planes.ndim == 3:
        return planes, "CYX", ex.step
    return np.ascontiguousarray(np.moveaxis(planes, 0, 1)), "ZCYX", ex.step  # ImageJ order: Z before C


def write_vti(spec: str, dest: str, run: int = 1, crop: bool = False) -> Export:
    """Write the data or run `run` of `spec` as a VTK ImageData file for ParaView.

    Reconstructions: `amplitude`, `phase` (rad) and `support` (0/1) point arrays, spacing the voxel
    size in nm, origin so that the array centre n // 2 sits at 0 (a crop keeps its place). Patterns
    and volumes: `intensity` (photons, NaN where masked), spacing the q pitch in µm⁻¹ (numbers near 1,
    as VTK's tolerances expect), q = 0 at the coordinate origin. ParaView has no units: the pitch in SI
    is in the field data, `voxel_size_m` or `q_step_inv_m` (x, y, z).
    Without a pixel size in the file the spacing is 1 (pixels). Returns what was written."""
    ex = load_export(spec, run, crop)
    to_display = 1e9 if ex.kind == "reconstruction" else 1e-6  # m -> nm, 1/m -> 1/µm: numbers near 1

    def shown(values: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(float(f"{v * to_display:.12g}") for v in values) if ex.step else values

    spacing = shown(ex.step) if ex.step else (1.0,) * len(ex.full_shape)
    origin = shown(ex.origin)
    field = {}
    if ex.step:
        field["voxel_size_m" if ex.kind == "reconstruction" else "q_step_inv_m"] = ex.step[::-1]  # x, y, z
    vtk.write_vti(dest, ex.arrays, spacing, origin, field=field)
    return ex


__all__ = ["Export", "load_export", "tiff_image", "write_vti"]
