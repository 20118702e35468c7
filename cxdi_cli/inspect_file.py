"""What a file holds, as a plain dict: kind, shapes, geometry, mask statistics, runs, provenance.

Used by `cxdi info`; pure description, no printing.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from cxdi_cli import io
from cxdi_cli.model import Geometry, InputError, mask_counts


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


def estimate_oversampling(intensity: np.ndarray, measured: np.ndarray) -> float | None:
    """Linear oversampling estimated from the speckle size, in detector pixels along each axis.

    The intensity is divided by its radial average (removing the steep fall-off with q), and the
    masked, normalised autocorrelation of the remaining speckle contrast is computed; its first
    minimum along an axis lies one speckle away, and a speckle spans sigma = lambda D / (p S) pixels,
    the linear oversampling itself (DESIGN §1). Masked pixels are excluded, so a beamstop over q = 0 does not bias it.
    Returns the smallest estimate over the axes (the specimen's largest extent), or None.
    """
    from cxdi_cli import fft

    data = np.asarray(intensity, np.float64)
    meas = np.asarray(measured, bool) & (data > 0)
    if meas.sum() < 64:
        return None
    centre = [n // 2 for n in data.shape]
    grids = np.meshgrid(*[np.arange(n) - c for n, c in zip(data.shape, centre)], indexing="ij")
    radius = np.sqrt(sum(g.astype(np.float64) ** 2 for g in grids)).astype(int)
    sums = np.bincount(radius[meas], weights=data[meas], minlength=radius.max() + 1)
    counts = np.bincount(radius[meas], minlength=radius.max() + 1)
    radial = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    flat = np.where(meas, data / np.maximum(radial[radius], 1e-30) - 1.0, 0.0)
    w = meas.astype(np.float64)
    num = fft.icfftn(np.abs(fft.cfftn(flat)) ** 2).real
    den = fft.icfftn(np.abs(fft.cfftn(w)) ** 2).real
    corr = np.where(den > 0.05 * den.max(), num / np.maximum(den, 1e-30), 0.0)
    estimates = []
    for axis in range(data.ndim):
        index = list(centre)
        index[axis] = slice(centre[axis], None)
        profile = corr[tuple(index)]
        if profile[0] <= 0:
            continue
        profile = profile / profile[0]
        for k in range(1, profile.size - 1):
            if profile[k] <= profile[k - 1] and profile[k] <= profile[k + 1]:
                # parabolic refinement of the first minimum
                a, b, c2 = profile[k - 1], profile[k], profile[k + 1]
                d = a - 2 * b + c2
                estimates.append(k + (0.5 * (a - c2) / d if d > 0 else 0.0))
                break
    return float(min(estimates)) if estimates else None


def describe(spec: str) -> dict[str, Any]:
    """Describe a cxdi/CXI/TIFF file: diffraction data, reconstructions or results."""
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
        datasets = io.list_datasets(f, 1)
        provenance = io.read_provenance(f)
    info["provenance"] = provenance
    if is_recon:
        rec = io.read_reconstruction(spec)
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
    if is_pattern or spec != name:
        pattern = io.read_pattern(spec)
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
    with io.open_h5(name) as f:
        info.update(kind="hdf5", datasets={p: {"shape": list(f[p].shape), "dtype": str(f[p].dtype)}
                                           for p in datasets[:200]})
    return info
