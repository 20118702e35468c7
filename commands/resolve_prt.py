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
    import numpy as np  # noqa: PLC0415

    from cxdi_cli.analysis import align, resolution as prtf  # noqa: PLC0415
    from cxdi_cli import io  # noqa: PLC0415
    from cxdi_cli.analysis import averaging as avg_lib  # noqa: PLC0415
    from cxdi_cli.model import DataError  # noqa: PLC0415

    curves: dict[str, Any] = {}     # name -> (curve, unit info)
    report: dict[str, Any] = {}
    provenance: list[dict[str, Any]] = []
    inputs: list[str] = []

    if data is not None:
        rec = io.read_reconstruction(average)
        obj, run_intensity, n_runs = _one_object(rec, average)
        pattern = io.read_pattern(data)
        if obj.shape != pattern.intensity.shape:
            raise DataError(f"{average}: object shape {obj.shape} differs from the data shape "
                            f"{pattern.intensity.shape} of {data}; phased from another data set?")
        q_step = pattern.geometry.q_step(obj.ndim)
        real = pattern.geometry.real_pixel(obj.shape)
        if real is not None and rec.pixel_size is not None and not np.allclose(real, rec.pixel_size, rtol=1e-3):
            raise DataError(f"{average}: pixel size {tuple(rec.pixel_size)} m does not match {tuple(real)} m "
                            f"of the data {data}; phased from another data set?")
        if q_step is None:
            q_step = _q_from_pixel(rec.pixel_size, obj.shape)
        curve, info = prtf.prtf(obj, pattern.intensity, pattern.measured, q_step=q_step,
                                run_intensity=run_intensity, n_runs=n_runs)
        res = prtf.resolution(curve, prtf.PRTF_THRESHOLD)
        curves["prtf"] = (curve, None)
        report["prtf"] = {**_res(res, curve), "threshold": prtf.PRTF_THRESHOLD, "scale_from": info["scale_from"],
                          "debiased_runs": info["debiased_runs"],
                          "nyquist" + _qkey(curve): _q(curve, curve.q[-1] / curve.nyquist_fraction[-1])}
        if info["scale_from"] == "fit":
            c.warn(f"{average}: no run_intensity (not written by cxdi average); the PRTF scale is fitted to "
                   "the data, which flatters the curve")
        provenance = rec.provenance
        inputs += [average, data]

    pairs = []
    if half_sets is not None:
        pairs.append(("frc", half_sets[0], half_sets[1], None))
    if split_runs:
        pairs.append(("frc_runs", None, None, split_runs))
    for name, fa, fb, runs in pairs:
        if runs is None:
            ra, rb = io.read_reconstruction(fa), io.read_reconstruction(fb)
            a, _, _ = _one_object(ra, fa)
            b, _, _ = _one_object(rb, fb)
            label_b = fb
            inputs += [fa, fb]
        else:
            ra, a, b = _split_runs(io, runs)
            label_b = f"{runs[0]} (odd runs)"
            rb = ra
            inputs += list(runs)
        avg_lib.check_compatible([(fa or runs[0], a.shape, ra.pixel_size, ra.geometry),
                                  (label_b, b.shape, rb.pixel_size, rb.geometry)])
        b_al, ainfo = align.align_to(b, a)
        # the reconstruction's own pixel size first, then the geometry it carries
        q_step = _q_from_pixel(ra.pixel_size, a.shape) or ra.geometry.q_step(a.ndim)
        curve = prtf.frc(a, b_al, q_step=q_step)
        hb = prtf.half_bit(curve.count)
        thresholds = {k: _res(prtf.resolution(curve, t), curve) for k, t in prtf.THRESHOLDS.items()}
        thresholds["half-bit"] = _res(prtf.resolution(curve, hb), curve)
        curves[name] = (curve, hb)
        report[name] = {"thresholds": thresholds,
                        "alignment": {"shift_px": ainfo["shift"], "twin": ainfo["twin"],
                                      "phase_rad": ainfo["phase"], "ramp_cycles": ainfo["ramp"],
                                      "residual": ainfo["residual"]},
                        "nyquist" + _qkey(curve): _q(curve, curve.q[-1] / curve.nyquist_fraction[-1]),
                        "kind": "resolution (independent half data sets)" if runs is None
                        else "reproducibility (runs of one data set, not a resolution)"}
        provenance = provenance or ra.provenance

    # everything computed: now write (each file atomically)
    if output is not None:
        datasets, attrs = {}, {}
        for name, (curve, hb) in curves.items():
            qk = "q" + _qkey(curve)
            datasets[f"{name}/{qk}"] = _q(curve, curve.q)
            attrs[f"{name}/{qk}"] = {"units": "1/nm" if curve.q_unit == "1/m" else "1/pixel"}
            datasets[f"{name}/nyquist_fraction"] = curve.nyquist_fraction
            datasets[f"{name}/{name.split('_')[0]}"] = curve.value
            datasets[f"{name}/count"] = curve.count
            if hb is not None:
                datasets[f"{name}/half_bit"] = hb
        first = next(iter(curves))
        step = io.make_step(c.command_line(), {"data": data, "half_sets": list(half_sets or []),
                                               "split_runs": list(split_runs or [])}, inputs)
        sig = f"{first}/{first.split('_')[0]}"
        io.write_results(output, datasets, step, attrs=attrs, signal=sig, provenance=provenance)
        if output != "-":
            _write_text(io, _text_path(output), curves)
    if plot is not None:
        _plot(plot, curves)
    if json_report:
        c.report(True, "cxdi.resolve-prt/1", output=output, plot=plot, **report)
        return
    for name, r in report.items():
        if name == "prtf":
            c.say(f"PRTF (1/e): {_fmt(r)}")
        else:
            for k, t in r["thresholds"].items():
                c.say(f"{'FRC' if name == 'frc' else 'FRC of split runs'} ({k}): {_fmt(t)}")
            if name == "frc_runs":
                c.say("  (split of the runs of one data set: reproducibility, not resolution)")


# --------------------------------------------------------------------------- helpers


def _one_object(rec: Any, name: str) -> tuple[Any, Any, Any]:
    """(object, runs' mean Fourier intensity or None, number of runs averaged or None) of `rec`.

    An average file (one run): its object, the /entry_1/run_intensity and metrics.n_runs that
    `cxdi average` writes. A file of several runs: the runs selected (`average.select_runs`: failed
    runs and runs without a metric are never used) aligned and averaged.
    """
    from cxdi_cli.analysis import averaging as avg_lib  # noqa: PLC0415

    if len(rec.runs) == 1:
        obj = rec.runs[0].obj
        ri = rec.arrays.get("run_intensity")
        n = rec.runs[0].metrics.get("n_runs")
        n_runs = int(n) if avg_lib.finite(n) and not isinstance(n, bool) and n >= 1 else None
        return obj, ri if ri is not None and ri.shape == obj.shape else None, n_runs
    objs, sups, order = _select(avg_lib, [name], [rec])
    c.say(f"{name}: {len(rec.runs)} runs; aligning and averaging {len(order)} of them")
    res = avg_lib.average_objects([objs[i] for i in order], [sups[i] for i in order])
    return res.average, res.run_intensity, len(res.used)


def _select(avg_lib: Any, names: List[str], recs: List[Any]) -> tuple[list[Any], list[Any], list[int]]:
    """Objects and supports of every run of `recs`, and the usable ones ranked (`average.select_runs`:
    same data set checked; failed runs and runs without a metric never used)."""
    objs, sups, metrics, items = [], [], [], []
    for n, rec in zip(names, recs):
        for k, r in enumerate(rec.runs, start=1):
            items.append((n if len(rec.runs) == 1 else f"{n}::entry_{k}", r.obj.shape, rec.pixel_size,
                          rec.geometry))
            objs.append(r.obj)
            sups.append(r.support)
            metrics.append(r.metrics)
    order, _, _ = avg_lib.select_runs(items, metrics)
    return objs, sups, order


def _split_runs(io: Any, names: List[str]) -> tuple[Any, Any, Any]:
    """Average the even- and odd-ranked usable runs of run files separately."""
    from cxdi_cli.analysis import averaging as avg_lib  # noqa: PLC0415
    from cxdi_cli.model import DataError  # noqa: PLC0415

    recs = [io.read_reconstruction(n) for n in names]
    objs, sups, order = _select(avg_lib, names, recs)
    if len(order) < 2:
        raise DataError(f"{names[0]}: --split-runs needs at least 2 usable runs, found {len(order)}")
    a = avg_lib.average_objects([objs[i] for i in order[0::2]], [sups[i] for i in order[0::2]]).average
    b = avg_lib.average_objects([objs[i] for i in order[1::2]], [sups[i] for i in order[1::2]]).average
    return recs[0], a, b


def _q_from_pixel(pixel: Any, shape: tuple[int, ...]) -> Any:
    """q pitch 1/(N p) per axis from the real-space pixel, or None (pixel units)."""
    if pixel is None or len(pixel) != len(shape):
        return None
    return tuple(1.0 / (n * p) for n, p in zip(shape, pixel))


def _qkey(curve: Any) -> str:
    return "_nm-1" if curve.q_unit == "1/m" else "_px-1"


def _q(curve: Any, q: Any) -> Any:
    """q in nm^-1 when the curve is in 1/m, else unchanged (cycles per pixel)."""
    return q * 1e-9 if curve.q_unit == "1/m" else q


def _res(r: dict[str, Any], curve: Any) -> dict[str, Any]:
    if curve.q_unit == "1/m":
        return {"q_nm-1": r["q"] * 1e-9, "resolution_nm": r["d"] * 1e9, "nyquist_fraction": r["nyquist_fraction"],
                "reached_nyquist": r["reached_nyquist"]}
    return {"q_px-1": r["q"], "resolution_px": r["d"], "nyquist_fraction": r["nyquist_fraction"],
            "reached_nyquist": r["reached_nyquist"]}


def _fmt(r: dict[str, Any]) -> str:
    limit = " (curve above the threshold up to Nyquist: a bound)" if r["reached_nyquist"] else ""
    if "resolution_nm" in r:
        return (f"{r['resolution_nm']:.2f} nm half-period at q = {r['q_nm-1']:.4g} nm^-1, "
                f"{r['nyquist_fraction']:.2f} of Nyquist{limit}")
    return f"{r['resolution_px']:.2f} pixels half-period, {r['nyquist_fraction']:.2f} of Nyquist{limit}"


def _text_path(output: str) -> str:
    from pathlib import Path  # noqa: PLC0415

    return str(Path(output).with_suffix(".txt"))


def _write_text(io: Any, dest: str, curves: dict[str, Any]) -> None:
    """Columns per curve (q, Nyquist fraction, value, count[, half-bit]), NaN-padded to equal length."""
    import numpy as np  # noqa: PLC0415

    cols, names = [], []
    for name, (curve, hb) in curves.items():
        unit = "nm-1" if curve.q_unit == "1/m" else "px-1"
        block = [(f"{name}_q_{unit}", _q(curve, curve.q)), (f"{name}_nyquist_fraction", curve.nyquist_fraction),
                 (name, curve.value), (f"{name}_count", curve.count)]
        if hb is not None:
            block.append((f"{name}_half_bit", hb))
        for n, v in block:
            names.append(n)
            cols.append(np.asarray(v, dtype=np.float64))
    rows = max(len(v) for v in cols)
    table = np.full((rows, len(cols)), np.nan)
    for j, v in enumerate(cols):
        table[: len(v), j] = v
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
        cs = render.CurveSet(title=name.upper().replace("_", " "), x=_q(curve, curve.q),
                             xlabel="q (nm⁻¹)" if curve.q_unit == "1/m" else "q (1/pixel)",
                             curves=[(kind, curve.value)], thresholds=thresholds, ylabel=kind)
        cs.notes = render.crossing_notes(cs)
        sets.append(cs)
    pic = render.Picture(kind="curves", title="", curves=sets, ncols=1)
    render.save_png(render.render_figure(pic, width=640), dest)
