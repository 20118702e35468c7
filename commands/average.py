"""cxdi average: select the best phase-retrieval runs, align them, average them, decompose into modes."""
from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from cxdi_cli.commands import _common as c

_METRIC_NAMES = ("llk-free", "llk", "chi2")


def average(
    runs: Annotated[List[str], typer.Argument(help="Run files written by `cxdi phase` (one or more; "
                                                   "FILE or FILE::/entry_N).", show_default=False)],
    output: c.OutputOpt = "-",
    best: Annotated[Optional[int], typer.Option("--best", min=1,
                                                help="Average the best N runs by the metric [default: 10].")] = 10,
    by: Annotated[str, typer.Option("--by", help="Selection metric: llk-free (free Poisson log-likelihood; "
                                               "falls back to llk when no run has free pixels), llk or chi2. "
                                               "Lower is better.")] = "llk-free",
    no_twin: Annotated[bool, typer.Option("--no-twin", help="Do not test the twin conj(rho(-r)).")] = False,
    no_ramp: Annotated[bool, typer.Option("--no-ramp", help="Do not remove linear phase ramps.")] = False,
    upsample: Annotated[int, typer.Option("--upsample", min=1,
                                          help="Sub-pixel registration: 1/N pixel.")] = 20,
    outlier: Annotated[float, typer.Option("--outlier", min=0.0,
                                           help="Reject a run whose distance to the others exceeds the median by "
                                                "this many robust sigmas (and by 0.05); 0: keep all.")] = 5.0,
    modes: Annotated[int, typer.Option("--modes", min=1, help="Orthogonal modes written (mode_1, ...).")] = 3,
    json_report: c.JsonOpt = False,
) -> None:
    """Select, align and average reconstructions; report the alignment and the mode weights.

    Runs flagged failed, or without the metric, are skipped. The best run is the reference; every run
    is aligned to it (sub-pixel translation by upsampled cross-correlation, twin, linear phase ramp,
    global phase), then to the provisional average, and scaled onto it. Runs far from the others
    after alignment are rejected, with the reason. The aligned stack is decomposed into orthogonal
    modes (SVD): the weight of mode 1 is the quality figure (1 when all runs agree).

    Output: the average and its support in /entry_1/image_1 (CXI), the alignment table and mode
    weights in /entry_1/cxdi_extra, the mode images in /entry_1/mode_K, the runs' mean Fourier
    intensity (for resolve-prt) in /entry_1/run_intensity.

    Example: cxdi average runs_a.cxi runs_b.cxi -o avg.cxi --best 10 --json
    """
    c.check_stdout(output, json_report)
    if by not in _METRIC_NAMES:
        raise c.usage_error(f"--by {by!r}: choose one of {', '.join(_METRIC_NAMES)}")
    import numpy as np  # noqa: PLC0415

    from cxdi_cli.analysis import averaging as avg_lib  # noqa: PLC0415
    from cxdi_cli import io  # noqa: PLC0415
    from cxdi_cli.model import Reconstruction, Run  # noqa: PLC0415

    recs = []
    items, labels, objs, supports, metrics = [], [], [], [], []
    for name in runs:
        rec = io.read_reconstruction(name)
        recs.append((name, rec))
        base, dset = io.split_url(name)
        entry = dset.strip("/").split("/")[0] if dset else None
        for k, run in enumerate(rec.runs, start=1):
            label = f"{base}::{entry or f'entry_{k}'}"
            labels.append(label)
            items.append((label, run.obj.shape, rec.pixel_size, rec.geometry))
            objs.append(run.obj)
            supports.append(run.support)
            metrics.append(run.metrics)
    order, skipped, key = avg_lib.select_runs(items, metrics, by, best=best)
    if key == "none":
        c.warn(f"no run carries a metric ({', '.join(avg_lib.METRICS)}); averaging the runs in the order given")
    if key not in (by.replace("-", "_"), "none"):
        c.warn(f"no run has a finite {by}; selecting by {key.replace('_', '-')}")
    with c.progress("aligning", 2 * len(order)) as tick:
        res = avg_lib.average_objects([objs[i] for i in order], [supports[i] for i in order], reference=0,
                                      twin=not no_twin, ramp=not no_ramp, upsample=upsample, outlier=outlier,
                                      n_modes=modes, on_progress=tick)
    table = []
    for row in res.table:
        i = order[row["index"]]
        value = metrics[i].get(key)
        table.append({"run": labels[i], key: float(value) if avg_lib.finite(value) else None,
                      **{k: v for k, v in row.items() if k != "index"}})
    skipped_rows = [{"run": labels[i], "reason": r} for i, r in skipped]
    for row in table:
        if not row["used"]:
            c.warn(f"{row['run']} rejected: {row['reason']}")
    ref_name, ref_rec = recs[0]
    for name, rec in recs:
        if labels[order[0]].startswith(io.split_url(name)[0] + "::"):
            ref_name, ref_rec = name, rec
            break
    others = {name: rec.provenance for name, rec in recs if name != ref_name and rec.provenance != ref_rec.provenance}
    params = {"best": best, "by": key, "twin": not no_twin, "ramp": not no_ramp, "upsample": upsample,
              "outlier": outlier, "modes": modes}
    step = io.make_step(c.command_line(), {**params, "inputs_provenance": others}, runs)
    run_metrics = {"n_runs": len(res.used), "n_rejected": len(res.rejected), "mode_1_weight": res.mode_weights[0],
                   f"{key}_best": table[0][key], "reference": labels[order[0]]}
    extra = {"alignment": table, "skipped": skipped_rows, "mode_weights": res.mode_weights, "metric": key,
             "reference": labels[order[0]]}
    arrays = {f"mode_{k + 1}": np.asarray(m, np.complex64) for k, m in enumerate(res.modes)}
    arrays["run_intensity"] = res.run_intensity
    out = Reconstruction(runs=[Run(obj=res.average, support=res.support, metrics=run_metrics, params=params)],
                         pixel_size=ref_rec.pixel_size, geometry=ref_rec.geometry,
                         provenance=ref_rec.provenance, extra=extra)
    io.write_reconstruction(output, out, step, arrays=arrays)
    if json_report:
        c.report(True, "cxdi.average/1", output=output, metric=key, reference=labels[order[0]],
                 n_used=len(res.used), n_rejected=len(res.rejected), mode_weights=res.mode_weights,
                 runs=table, skipped=skipped_rows)
        return
    c.say(f"averaged {len(res.used)} of {len(labels)} runs by {key}; mode 1 weight {res.mode_weights[0]:.3f}")
    c.say(f"{'run':<40} {key:>10} {'shift (px)':>18} twin {'phase':>6} {'resid':>6} used")
    for row in table:
        shift = ",".join(f"{s:+.2f}" for s in row["shift_px"])
        metric = f"{row[key]:>10.4g}" if row[key] is not None else f"{'-':>10}"
        c.say(f"{row['run'][-40:]:<40} {metric} {shift:>18} {'yes' if row['twin'] else ' no'}  "
              f"{row['phase_rad']:+6.2f} {row['residual']:6.3f} {'yes' if row['used'] else 'NO'}")
