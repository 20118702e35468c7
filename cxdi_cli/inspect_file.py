"""What a file holds, as a plain dict: kind, shapes, geometry, mask statistics, runs, provenance.

Used by `cxdi info`; pure description, no printing.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from cxdi_cli import io
from cxdi_cli.model import Geometry, InputError, Pattern, mask_counts
from cxdi_cli.sampling import estimate_oversampling


def _geometry_dict(geometry: Geometry, shape: tuple[int, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "energy_kev": geometry.energy_kev,
        "wavelength_m": geometry.wavelength,
        "distance_m": geometry.distance,
        "pixel_m": list(geometry.pixel) if geometry.pixel else None,
        "beam_centre": list(geometry.centre) if geometry.centre else None,
        "q_pitch_inv_m": list(geometry.q_pitch) if geometry.q_pitch else None,
    }
    rp = geometry.real_pixel(shape)
    out["real_space_pixel_m"] = list(rp) if rp else None
    return out


def describe(spec: str, on_pattern: Callable[[Pattern], None] | None = None) -> dict[str, Any]:
    """Describe a cxdi/CXI/TIFF file: diffraction data, reconstructions or results. `on_pattern` receives
    the diffraction data when the file holds some (read once, for a caller that computes more on it)."""
    name, _ = io.split_url(spec)
    path = io.local_input(name)
    kind = io.sniff(path)
    info: dict[str, Any] = {"file": spec, "format": kind}
    if kind != "hdf5":
        arr = io.read_array(spec)
        info.update(kind="image", shape=list(arr.shape), dtype=str(arr.dtype),
                    min=float(np.nanmin(arr)) if arr.size else None,
                    max=float(np.nanmax(arr)) if arr.size else None)
        return info
    with io.open_h5(name) as f:
        is_recon = "/entry_1/image_1" in f
        is_pattern = "/entry_1/instrument_1/detector_1/data" in f or "/entry_1/data_1/data" in f
        plain = not is_recon and not is_pattern and spec == name
        det = f.get("/entry_1/instrument_1/detector_1/data")
        is_series = (not is_recon and spec == name and det is not None and getattr(det, "ndim", 0) == 3
                     and io.cxi.as_text(det.attrs.get("interpretation", "")) == "image")
        if plain:  # neither a pattern nor a reconstruction: list what the file holds
            provenance = io.read_provenance(f)
            datasets = {p: {"shape": list(f[p].shape), "dtype": str(f[p].dtype)}
                        for p in io.list_datasets(f, 1)[:200]}
    if is_recon:
        rec = io.read_reconstruction(spec)
        info["provenance"] = rec.provenance
        shape = rec.runs[0].obj.shape
        info.update(kind="reconstruction", shape=list(shape), n_runs=len(rec.runs),
                    pixel_size_m=list(rec.pixel_size) if rec.pixel_size else None)
        runs = []
        for n, run in enumerate(rec.runs, start=1):
            entry = {"entry": f"/entry_{n}", "support_size": int(np.count_nonzero(run.support))}
            entry.update({k: v for k, v in run.metrics.items() if np.isscalar(v) or v is None})
            runs.append(entry)
        info["runs"] = runs
        if rec.extra:
            info["extra"] = rec.extra
        return info
    if is_series:  # a time series of 2D frames (io.series): the frames summed, and per frame
        series = io.read_series(spec)
        total = series.summed()
        meas = total.measured
        info.update(kind="series", shape=list(series.intensity.shape), provenance=series.provenance,
                    frames=len(series), time_s=[float(series.time[0]), float(series.time[-1])],
                    photons_per_frame=[float(series.intensity[k][series.frame(k).measured].sum())
                                       for k in range(len(series))],
                    photons_total=float(total.intensity[meas].sum()),
                    max_photons=float(series.intensity.max(axis=0)[meas].max()) if meas.any() else 0.0,
                    geometry=_geometry_dict(series.geometry, total.intensity.shape),
                    mask={"masked_fraction": float(1 - meas.mean()), "bits": mask_counts(total.mask),
                          "per_frame": series.mask.ndim == 3})
        return info
    if not plain:
        pattern = io.read_pattern(spec)
        if on_pattern is not None:
            on_pattern(pattern)
        info["provenance"] = pattern.provenance
        shape = pattern.intensity.shape
        meas = pattern.measured
        info.update(kind="volume" if len(shape) == 3 else "pattern", shape=list(shape),
                    photons_total=float(pattern.intensity[meas].sum()),
                    max_photons=float(pattern.intensity[meas].max()) if meas.any() else 0.0,
                    geometry=_geometry_dict(pattern.geometry, shape),
                    mask={"masked_fraction": float(1 - meas.mean()), "bits": mask_counts(pattern.mask)},
                    oversampling_estimate=estimate_oversampling(pattern.intensity, meas))
        if "weight" in pattern.extra:
            info["measured_voxel_fraction"] = float(np.mean(pattern.extra["weight"] > 0))
        return info
    if not datasets:
        raise InputError(f"{name}: HDF5 file holds no numeric datasets")
    info.update(provenance=provenance, kind="hdf5", datasets=datasets)
    return info
