"""cxdi resolve-prt: resolution of a reconstruction (PRTF against the data, FRC/FSC between half-sets)."""
from __future__ import annotations

from typing import Annotated, Any, List, Optional, Tuple

import typer

from cxdi_cli.commands import _common as c


def resolve_prt(
    average: Annotated[Optional[str], typer.Argument(
        help="Averaged reconstruction (cxdi average), or a run file (its runs are aligned and averaged).",
        show_default=False)] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="The diffraction data the runs were phased "
                                                "from: PRTF = |<F_run>| / sqrt(I) per ring/shell (as a power ratio).")] = None,
    half_sets: Annotated[Optional[Tuple[str, str]], typer.Option(
        "--half-sets", help="Two averages from independent half data sets (preprocess/assemble3d --split-half): "
                            "Fourier ring/shell correlation.", show_default=False)] = None,
    split_runs: Annotated[Optional[List[str]], typer.Option(
        "--split-runs", help="Run file(s) of ONE data set: the runs are split in two (alternately by rank), "
                             "each half averaged, and the two correlated. This measures reproducibility, "
                             "not resolution.", show_default=False)] = None,
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="Curves in HDF5 (and the same "
                                                  "stem .txt as columns); - for stdout.")] = None,
    plot: Annotated[Optional[str], typer.Option("--plot", help="PNG plot of the curves with the thresholds.")] = None,
    json_report: c.JsonOpt = False,
) -> None:
    """Resolution of a reconstruction: PRTF against the data and/or Fourier ring (2D) / shell (3D)
    correlation between independent half-sets.

    PRTF: the transform of the average, put on the data's scale, against sqrt(I), in power over the
    measured pixels of each ring (shell), less the 1/N floor that the mean of N disagreeing runs keeps
    (unbiased, from the runs' mean intensity); resolution where it drops below 1/e. FRC/FSC: the two
    half-set averages are aligned to each other (translation, twin, phase ramp, global phase) and
    correlated; resolutions at the 0.5, 1/7 and half-bit thresholds. q is the spatial frequency in
    nm^-1 (from the data's geometry; else from the reconstruction's pixel size: Nyquist = 1/(2 pixel));
    resolutions are half-periods 1/(2q), in nm and as a fraction of Nyquist.

    Output: curves in HDF5 (-o) with a text twin (same stem, .txt: columns for gnuplot or awk), a PNG
    (--plot), resolutions on stderr, or --json on stdout.

    Example: cxdi resolve-prt avg.cxi --data pattern.cxi -o prtf.h5 --plot prtf.png
             cxdi resolve-prt --half-sets avg_a.cxi avg_b.cxi -o frc.h5 --plot frc.png
    """
    c.check_stdout(output, json_report)
    if data is None and half_sets is None and not split_runs:
        raise c.usage_error("nothing to do: give --data (PRTF), --half-sets A B (FRC) or --split-runs RUNS")
    if data is not None and average is None:
        raise c.usage_error("--data needs the averaged reconstruction as argument")
    if average is not None and data is None:
        raise c.usage_error(f"{average}: a PRTF needs --data, the diffraction pattern it was phased from")
    from cxdi_cli import io  # noqa: PLC0415
    from cxdi_cli.analysis import resolution  # noqa: PLC0415

    inputs = [n for n in (average, data) if n is not None] + list(half_sets or []) + list(split_runs or [])
    rec = io.read_reconstruction(average) if average is not None else None
    if rec is not None and isinstance(rec.extra, dict) and rec.extra.get("series") is not None:
        if half_sets or split_runs:
            raise c.usage_error(f"{average}: a series (phase --series) takes --data only: one PRTF per frame")
        _series(rec, data, output, plot, json_report, inputs)  # type: ignore[arg-type]
        return
    result = resolution.resolve(
        rec,
        io.read_pattern(data) if data is not None else None,
        half_sets=tuple(io.read_reconstruction(n) for n in half_sets) if half_sets else None,  # type: ignore[arg-type]
        split_runs=[io.read_reconstruction(n) for n in split_runs] if split_runs else None)
    for level, text in result.messages:
        (c.warn if level == "warning" else c.say)(text)
    # everything computed: now write (each file atomically)
    if output is not None:
        datasets, attrs, signal = result.datasets()
        step = io.make_step(c.command_line(), {"data": data, "half_sets": list(half_sets or []),
                                               "split_runs": list(split_runs or [])}, inputs)
        io.write_results(output, datasets, step, attrs=attrs, signal=signal, provenance=result.provenance)
        if output != "-":
            _write_text(io, _text_path(output), *result.table())
    if plot is not None:
        _plot(plot, result.curves)
    if json_report:
        c.report(True, "cxdi.resolve-prt/1", output=output, plot=plot, **result.report)
        return
    for name, r in result.report.items():
        if name == "prtf":
            c.say(f"PRTF (1/e): {_fmt(r)}")
        else:
            for k, t in r["thresholds"].items():
                c.say(f"{'FRC' if name == 'frc' else 'FRC of split runs'} ({k}): {_fmt(t)}")
            if name == "frc_runs":
                c.say("  (split of the runs of one data set: reproducibility, not resolution)")


# --------------------------------------------------------------------------- helpers


def _series(rec: Any, data: str, output: Optional[str], plot: Optional[str], json_report: bool,
            inputs: list[str]) -> None:
    """A series reconstruction against its series data: one PRTF per frame (resolution.resolve_series);
    -o holds every frame's curve (prtf_K/...) and series/{time_s, resolution}; --plot the resolution
    against time."""
    import numpy as np  # noqa: PLC0415

    from cxdi_cli import io  # noqa: PLC0415
    from cxdi_cli.analysis import resolution  # noqa: PLC0415

    frames = io.read_series(data)
    result = resolution.resolve_series(rec, [frames.frame(k) for k in range(len(frames))], frames.time)
    for level, text in result.messages:
        (c.warn if level == "warning" else c.say)(text)
    rows = result.report["prtf_series"]["frames"]
    unit = "nm" if "resolution_nm" in rows[0] else "px"
    res = np.array([r[f"resolution_{unit}"] for r in rows], float)
    times = np.array([r["time_s"] for r in rows], float)
    if output is not None:
        datasets, attrs, signal = result.datasets()
        datasets["series/time_s"], datasets[f"series/resolution_{unit}"] = times, res
        datasets["series/frame_index"] = np.array([r["frame_index"] for r in rows])
        attrs["series/time_s"], attrs[f"series/resolution_{unit}"] = {"units": "s"}, {"units": unit}
        io.write_results(output, datasets, io.make_step(c.command_line(), {"data": data, "series": True}, inputs),
                         attrs=attrs, signal=f"series/resolution_{unit}", provenance=result.provenance)
        if output != "-":
            _write_text(io, _text_path(output), *result.table())
    if plot is not None:
        from cxdi_cli.view import render  # noqa: PLC0415

        cs = render.CurveSet(title="PRTF (1/e) resolution per frame", x=times, xlabel="time (s)",
                             curves=[(f"half-period ({unit})", res)], thresholds=[], ylabel=f"resolution ({unit})")
        render.save_png(render.render_figure(render.Picture(kind="curves", title="", curves=[cs], ncols=1),
                                             width=640), plot)
    if json_report:
        c.report(True, "cxdi.resolve-prt/1", output=output, plot=plot, **result.report)
        return
    for r in rows:
        c.say(f"frame {r['frame_index']} (t = {r['time_s']:.4g} s): PRTF (1/e): {_fmt(r)}")


def _fmt(r: dict[str, Any]) -> str:
    limit = " (curve above the threshold up to Nyquist: a bound)" if r["reached_nyquist"] else ""
    if "resolution_nm" in r:
        return (f"{r['resolution_nm']:.2f} nm half-period at q = {r['q_nm-1']:.4g} nm^-1, "
                f"{r['nyquist_fraction']:.2f} of Nyquist{limit}")
    return f"{r['resolution_px']:.2f} pixels half-period, {r['nyquist_fraction']:.2f} of Nyquist{limit}"


def _text_path(output: str) -> str:
    from pathlib import Path  # noqa: PLC0415

    return str(Path(output).with_suffix(".txt"))


def _write_text(io: Any, dest: str, names: list[str], table: Any) -> None:
    """The curves as columns (`Resolution.table`), for gnuplot or awk."""
    import numpy as np  # noqa: PLC0415

    with io.atomic_output(dest, ".txt") as tmp:
        np.savetxt(tmp, table, fmt="%.6g", header=" ".join(names), comments="# ")


def _plot(dest: str, curves: dict[str, Any]) -> None:
    """One panel per curve (`render`, as `cxdi show` draws the -o file): thresholds (`prtf`) dashed,
    crossings marked and noted."""
    from cxdi_cli.analysis import resolution as prtf  # noqa: PLC0415
    from cxdi_cli.view import render  # noqa: PLC0415

    sets = []
    for name, (curve, hb) in curves.items():
        kind = name.split("_")[0].upper()
        if name == "prtf":
            thresholds: list[tuple[str, Any]] = [("1/e", prtf.PRTF_THRESHOLD)]
        else:
            thresholds = list(prtf.THRESHOLDS.items()) + [("half-bit", hb)]
        cs = render.CurveSet(title=name.upper().replace("_", " "), x=prtf.display_q(curve, curve.q),
                             xlabel="q (nm⁻¹)" if curve.q_unit == "1/m" else "q (1/pixel)",
                             curves=[(kind, curve.value)], thresholds=thresholds, ylabel=kind)
        cs.notes = render.crossing_notes(cs)
        sets.append(cs)
    pic = render.Picture(kind="curves", title="", curves=sets, ncols=1)
    render.save_png(render.render_figure(pic, width=640), dest)
