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
                                                help="Consider the best N runs by the metric [default: 10].")] = 10,
    by: Annotated[str, typer.Option("--by", help="Selection metric: llk-free (free Poisson log-likelihood; "
                                               "falls back to llk when no run has free pixels), llk or chi2. "
                                               "Lower is better.")] = "llk-free",
    consensus: Annotated[bool, typer.Option(
        "--consensus/--all", help="Average only the largest group of the selected runs that agree with each "
                                  "other after alignment, drawn from the runs whose metric is within 2x of "
                                  "the best (--all: every selected run).")] = True,
    agree: Annotated[float, typer.Option(
        "--agree", min=0.0, max=1.0, help="Two runs agree when their normalised RMS distance after alignment "
                                          "is at most this, or up to 0.6 when photon noise spreads every run "
                                          "(1.25 x the median distance to the nearest run).")] = 0.3,
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

    Runs flagged failed, or without the metric, are skipped; the best --best by the metric are
    compared pairwise after alignment and only the largest group that agrees (distance at most
    --agree) is averaged, so a stagnated start never enters the average, even with a likelihood close
    to the good ones'. The group is drawn from the runs whose metric is at most twice the best's, as
    `phase` draws /entry_1's: stalled starts that agree with each other never outvote a run that fits.
    The group's best run is the reference; every run is aligned to it (sub-pixel translation by
    upsampled cross-correlation, twin, linear phase ramp, global phase), then to the provisional
    average, and scaled onto it. Runs far from the others after alignment are rejected,
    with the reason. The aligned stack is decomposed into orthogonal modes (SVD): the weight of mode
    1 is the quality figure (1 when all runs agree).

    Output: the average and its support in /entry_1/image_1 (CXI), the alignment table and mode
    weights in /entry_1/cxdi_extra, the mode images in /entry_1/mode_K, the runs' mean Fourier
    intensity (for resolve-prt) in /entry_1/run_intensity.

    Example: cxdi average runs_a.cxi runs_b.cxi -o avg.cxi --best 10 --json
    """
    c.check_stdout(output, json_report)
    if by not in _METRIC_NAMES:
        raise c.usage_error(f"--by {by!r}: choose one of {', '.join(_METRIC_NAMES)}")
    from cxdi_cli import io  # noqa: PLC0415
    from cxdi_cli.analysis import averaging as avg_lib  # noqa: PLC0415

    recs = [(name, io.read_reconstruction(name)) for name in runs]
    with c.progress("aligning") as tick:
        out = avg_lib.average_runs(recs, best=best, by=by, twin=not no_twin, ramp=not no_ramp, upsample=upsample,
                                   outlier=outlier, modes=modes, consensus=consensus, agree=agree,
                                   on_progress=tick)
    extra = out.extra
    for note in extra["notes"]:
        c.warn(note)
    params = out.runs[0].params
    step = io.make_step(c.command_line(), {**params, "inputs_provenance": extra.pop("inputs_provenance")}, runs)
    io.write_reconstruction(output, out, step, arrays=out.arrays)
    key, table = extra["metric"], extra["alignment"]
    m = out.runs[0].metrics
    if json_report:
        c.report(True, "cxdi.average/1", output=output, metric=key, reference=extra["reference"],
                 n_used=m["n_runs"], n_rejected=m["n_rejected"], mode_weights=extra["mode_weights"],
                 consensus=extra["consensus"], summary=extra["summary"], runs=table, skipped=extra["skipped"])
        return
    c.say(extra["summary"])
    c.say(f"{'run':<40} {key:>10} {'shift (px)':>18} twin {'phase':>6} {'resid':>6} used")
    for row in table:
        shift = ",".join(f"{s:+.2f}" for s in row["shift_px"])
        metric = f"{row[key]:>10.4g}" if row[key] is not None else f"{'-':>10}"
        c.say(f"{row['run'][-40:]:<40} {metric} {shift:>18} {'yes' if row['twin'] else ' no'}  "
              f"{row['phase_rad']:+6.2f} {row['residual']:6.3f} {'yes' if row['used'] else 'NO'}")
    for row in extra["skipped"]:
        if row["reason"].startswith("disagrees") or "stalled start" in row["reason"]:
            c.say(f"{row['run'][-40:]:<40} not averaged: {row['reason']}")
