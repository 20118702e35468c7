"""cxdi info: what a file holds — shapes, geometry, mask statistics, runs and their metrics, provenance."""
from cxdi_cli.commands import _common as c


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def info(file: c.InputArg, json_report: c.JsonOpt = False) -> None:
    """Describe a cxdi file: diffraction data (shape, photons, geometry, oversampling estimate, masked
    pixels per bit), reconstructions (runs and their metrics) or result curves, with the provenance
    chain that made it.

    Example: cxdi info pattern.cxi --json
    """
    from cxdi_cli.inspect_file import describe  # noqa: PLC0415

    d = describe(file)
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
    for path, meta in d.get("datasets", {}).items():
        print(f"  {path}: {'×'.join(str(s) for s in meta['shape'])} {meta['dtype']}")
    for k, step in enumerate(d.get("provenance", []), start=1):
        print(f"  step {k}: {step.get('date', '')} {step.get('command', '')}")
