"""cxdi info: what a file holds — shapes, geometry, mask statistics, runs and their metrics, provenance."""
from typing import Annotated, Optional

import typer
from cxdi_cli.commands import _common as c


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def info(file: c.InputArg, json_report: c.JsonOpt = False,
         missing_modes: Annotated[bool, typer.Option(
             "--missing-modes", help="Diffraction data: count the object modes the support and the mask leave "
             "unconstrained (eigenvalues of P_S F^-1 P_M' F P_S above 0.9; Thibault et al. 2006).")] = False,
         support: Annotated[Optional[str], typer.Option(
             "--support", help="Support for --missing-modes (image, non-zero = inside; centred like the data) "
             "[default: the autocorrelation support shrunk by 2].")] = None,
         modes: Annotated[Optional[str], typer.Option(
             "--modes", help="Write the leading missing modes' amplitudes as a TIFF stack (3D: their central "
             "z slices).")] = None) -> None:
    """Describe a cxdi file: diffraction data (shape, photons, geometry, oversampling estimate, masked
    pixels per bit), reconstructions (runs and their metrics) or result curves, with the provenance
    chain that made it.

    --missing-modes tells, before phasing, whether the beamstop and gaps are too big: the number of
    object modes with more than 90 % of their power in unmeasured pixels (0 is good), the leading
    eigenvalues, the degrees of freedom the mask removes (|S| |masked| / N) and a one-line hint.

    Example: cxdi info pattern.cxi --json; cxdi info data.cxi --missing-modes --modes modes.tif
    """
    from cxdi_cli.inspect_file import describe  # noqa: PLC0415

    data = []
    d = describe(file, on_pattern=data.append)
    if missing_modes or support or modes:
        d["missing_modes"] = _missing_modes(file, d, data[0] if data else None, support, modes)
    if json_report:
        c.report(True, "cxdi.info/1", **d)
        return
    print(f"{d['file']}: {d['kind']} {'×'.join(str(s) for s in d.get('shape', []))}")
    if "photons_total" in d:
        print(f"  photons: {d['photons_total']:.4g} in measured pixels (max {d['max_photons']:.4g})")
    geo = d.get("geometry")
    if geo:
        for key, val in geo.items():
            if val is not None:
                print(f"  {key}: {_fmt(val)}")
    if d.get("oversampling_estimate"):
        print(f"  oversampling (autocorrelation estimate): {d['oversampling_estimate']:.2f}")
    if "mask" in d:
        bits = ", ".join(f"{k} {v}" for k, v in d["mask"]["bits"].items() if v)
        print(f"  masked: {100 * d['mask']['masked_fraction']:.2f} %" + (f" ({bits})" if bits else ""))
    if "measured_voxel_fraction" in d:
        print(f"  voxels reached by a measurement: {100 * d['measured_voxel_fraction']:.1f} %")
    if d.get("pixel_size_m"):
        print(f"  pixel size: {_fmt([p * 1e9 for p in d['pixel_size_m']])} nm")
    for run in d.get("runs", []):
        metrics = "  ".join(f"{k}={_fmt(v)}" for k, v in run.items() if k != "entry")
        print(f"  {run['entry']}: {metrics}")
    mm = d.get("missing_modes")
    if mm:
        more = "+" if mm["count_is_lower_bound"] else ""
        top = ", ".join(f"{v:.3f}" for v in mm["eigenvalues"][:6])
        print(f"  missing modes: {mm['count']}{more} above {mm['threshold']} (leading eigenvalues {top}; "
              f"{mm['degrees_of_freedom_removed']:.1f} degrees of freedom removed)")
        print(f"  hint: {mm['hint']}")
    for path, meta in d.get("datasets", {}).items():
        print(f"  {path}: {'×'.join(str(s) for s in meta['shape'])} {meta['dtype']}")
    for k, step in enumerate(d.get("provenance", []), start=1):
        print(f"  step {k}: {step.get('date', '')} {step.get('command', '')}")


def _missing_modes(file: str, d: dict, pattern, support: str | None, modes: str | None) -> dict:
    """The missing-mode report of a pattern or volume (and the modes' TIFF when asked)."""
    import numpy as np  # noqa: PLC0415

    from cxdi_cli import io  # noqa: PLC0415
    from cxdi_cli.model import UsageError  # noqa: PLC0415
    from cxdi_cli.phasing import missing_modes as mmod  # noqa: PLC0415

    if pattern is None or d.get("kind") not in ("pattern", "volume"):
        raise UsageError(f"--missing-modes needs diffraction data; {file} holds a {d.get('kind')}")
    sup = None
    if support:
        sup = np.asarray(io.read_array(support)) != 0
        if sup.shape != pattern.intensity.shape:
            raise UsageError(f"--support {support}: shape {sup.shape} differs from the data {pattern.intensity.shape}")
    result = mmod.for_pattern(pattern, support=sup)
    if modes and result.modes:
        stack = np.stack([np.abs(m if m.ndim == 2 else m[m.shape[0] // 2]) for m in result.modes])
        io.write_tiff(modes, stack)
    out = result.summary()
    out["support_from"] = "file" if support else "autocorrelation/2"
    return out
