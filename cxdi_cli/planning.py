"""The experiment calculator of DESIGN §1: oversampling, resolution element, depth of field."""
from __future__ import annotations

from typing import Any

from cxdi_cli.model import UsageError, wavelength_from_kev


def plan_experiment(*, energy_kev: float, distance: float, pixel: float, detector: int,
                    size: float | None = None, ndim: int = 2) -> dict[str, Any]:
    """Sampling and resolution figures for a CXDI geometry.

    sigma = lambda D / (p S) (linear oversampling, must exceed 2^(1/N), practical rule >= 3);
    dr = lambda D / (N_pix p) (resolution element of an N_pix crop); DOF = 2 dr^2 / lambda.
    Returns a dict with SI units in the key names and a list of warnings.
    """
    for name, value in (("energy", energy_kev), ("distance", distance), ("pixel", pixel)):
        if not value or value <= 0:
            raise UsageError(f"--{name} must be positive")
    if detector < 2:
        raise UsageError("--detector must be at least 2 pixels")
    wl = wavelength_from_kev(energy_kev)
    dr = wl * distance / (detector * pixel)
    dof = 2 * dr**2 / wl
    field = wl * distance / pixel  # real-space field of view of the whole transform
    out: dict[str, Any] = {
        "energy_kev": energy_kev,
        "wavelength_m": wl,
        "distance_m": distance,
        "pixel_m": pixel,
        "detector_pixels": detector,
        "resolution_element_m": dr,
        "depth_of_field_m": dof,
        "field_of_view_m": field,
        "max_size_for_sigma3_m": field / 3.0,
        "max_q_inv_m": detector * pixel / 2 / (wl * distance),
        "warnings": [],
    }
    if size is not None:
        if size <= 0:
            raise UsageError("--size must be positive")
        sigma = field / size
        out["size_m"] = size
        out["oversampling"] = sigma
        out["speckle_pixels"] = sigma
        limit = 2 ** (1 / ndim)
        if sigma <= limit:
            out["warnings"].append(f"oversampling {sigma:.2f} is below the {ndim}D limit 2^(1/{ndim}) = "
                                   f"{limit:.2f}: phase retrieval cannot work; move the detector back or "
                                   "use smaller pixels")
        elif sigma < 3:
            out["warnings"].append(f"oversampling {sigma:.2f} is below the practical rule of 3: "
                                   "reconstructions will be fragile")
        if size > dof:
            out["warnings"].append(f"the specimen ({size * 1e6:.3g} um) is thicker than the depth of field "
                                   f"({dof * 1e6:.3g} um): a 2D image will show defocus artefacts; "
                                   "record a tilt series for 3D")
    return out
