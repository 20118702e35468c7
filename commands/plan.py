"""cxdi plan: the experiment calculator (oversampling, resolution element, depth of field)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from cxdi_cli.commands import _common as c


def plan(
    energy: Annotated[float, typer.Option("--energy", help="Photon energy (keV).")],
    distance: Annotated[float, typer.Option("--distance", help="Sample-detector distance (m).")],
    pixel: Annotated[float, typer.Option("--pixel", help="Detector pixel size (m).")],
    detector: Annotated[int, typer.Option("--detector", help="Pixels across the detector (or the crop).")] = 512,
    size: Annotated[Optional[float], typer.Option("--size", help="Specimen size (m).")] = None,
    dims: Annotated[int, typer.Option("--dims", min=2, max=3, help="2 for a single pattern, 3 for a tilt series.")] = 2,
    json_report: c.JsonOpt = False,
) -> None:
    """Check an experiment's sampling before beam time: oversampling σ = λD/(pS), resolution element
    Δr = λD/(N p), depth of field 2Δr²/λ, the largest specimen for σ = 3, with warnings.

    Example: cxdi plan --energy 8 --distance 30 --pixel 75e-6 --detector 2048 --size 20e-6
    """
    c.check_numbers(("--energy", energy, "> 0"), ("--distance", distance, "> 0"), ("--pixel", pixel, "> 0"),
                    ("--detector", detector, ">= 2"), ("--size", size, "> 0"))
    from cxdi_cli.planning import plan_experiment  # noqa: PLC0415

    r = plan_experiment(energy_kev=energy, distance=distance, pixel=pixel, detector=detector, size=size, ndim=dims)
    for w in r["warnings"]:
        c.warn(w)
    if json_report:
        c.report(True, "cxdi.plan/1", **r)
        return
    rows = [
        ("wavelength", f"{r['wavelength_m'] * 1e9:.4f} nm"),
        ("resolution element", f"{r['resolution_element_m'] * 1e9:.1f} nm  (λD/(N p), N = {detector})"),
        ("depth of field", f"{r['depth_of_field_m'] * 1e6:.2f} µm  (2Δr²/λ)"),
        ("field of view", f"{r['field_of_view_m'] * 1e6:.2f} µm  (λD/p)"),
        ("largest specimen, σ = 3", f"{r['max_size_for_sigma3_m'] * 1e6:.2f} µm"),
    ]
    if size is not None:
        rows.insert(0, ("oversampling σ", f"{r['oversampling']:.2f}  (speckle ≈ {r['speckle_pixels']:.1f} pixels)"))
    for k, v in rows:
        print(f"{k:>24}: {v}")
