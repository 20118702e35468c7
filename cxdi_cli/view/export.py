"""Float32 images for other programs (ImageJ/Fiji, napari): what a cxdi file holds, as TIFF planes.

Patterns and volumes: the intensity in photons, masked pixels NaN (ImageJ draws them blank).
Reconstructions: amplitude and phase (radians) as two channels, with the real-space pixel size.
"""
from __future__ import annotations

import numpy as np

from cxdi_cli.analysis import align
from cxdi_cli import io
from cxdi_cli.model import InputError


def tiff_image(spec: str, run: int = 1) -> tuple[np.ndarray, str, float | None]:
    """(float32 array, ImageJ axes, pixel size in m or None) for the data or the run `run` of `spec`."""
    name, _ = io.split_url(spec)
    kind = io.sniff(io.local_input(name))
    is_recon = False
    if kind == "hdf5":
        with io.open_h5(name) as f:
            is_recon = "/entry_1/image_1" in f
    if is_recon:
        rec = io.read_reconstruction(spec)
        if not 1 <= run <= len(rec.runs):
            raise InputError(f"{name}: no run {run} (the file holds {len(rec.runs)})")
        obj = rec.runs[run - 1].obj
        phase = np.angle(align.remove_global_phase(obj, rec.runs[run - 1].support))  # as `cxdi show` draws it
        planes = np.stack([np.abs(obj), np.where(np.abs(obj) > 0, phase, 0)]).astype(np.float32)
        pixel = rec.pixel_size[-1] if rec.pixel_size else None
        if obj.ndim == 2:
            return planes, "CYX", pixel
        return np.moveaxis(planes, 0, 1).copy(), "ZCYX", pixel  # ImageJ order: Z before C
    pattern = io.read_pattern(spec)
    data = np.where(pattern.measured, pattern.intensity, np.nan).astype(np.float32)
    return data, "YX" if data.ndim == 2 else "ZYX", None
