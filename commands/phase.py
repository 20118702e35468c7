"""cxdi phase: iterative phase retrieval (ER, HIO, RAAR, Poisson ML, shrink-wrap), many random starts."""
from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Optional

import typer

from cxdi_cli.commands import _common as c
from cxdi_cli.phasing.defaults import DEFAULT_RECIPE as _DEFAULT_RECIPE  # no imports there: --help stays light


def phase(
    input: c.InputArg,
    output: c.OutputOpt = "-",
    runs: Annotated[int, typer.Option("--runs", "-n", min=1, help="Independent random starts.")] = 5,
    recipe: Annotated[str, typer.Option(
        "--recipe", "-r", help="Steps run LEFT TO RIGHT: NAME[(k=v,...)][**N], groups (..)**N. "
                               "Names: er, hio, raar, ml, sup.")] = _DEFAULT_RECIPE,
    seed: c.SeedOpt = None,
    support: Annotated[Optional[str], typer.Option(
        "--support", help="Initial support (centred, non-zero = inside): FILE or FILE::/path; "
                          "default: the thresholded autocorrelation.", show_default=False)] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Runs in parallel processes.")] = 1,
    keep: Annotated[Optional[int], typer.Option("--keep", min=1, help="Keep only the K best runs.",
                                                show_default=False)] = None,
    positivity: Annotated[Optional[bool], typer.Option(
        "--positivity/--no-positivity", help="Real part of the object non-negative on the support "
        "(up to one global phase) [default: auto: on, and the same starts are run again without it when "
        "even the best run cannot fit the data with it, as for specimens whose phase varies by more than "
        "about a radian; the best runs of both sets are kept].", show_default=False)] = None,
    amplitude_bound: Annotated[Optional[float], typer.Option(
        "--amplitude-bound", min=0.0, help="Largest |rho| allowed on the support [default: none].",
        show_default=False)] = None,
    support_threshold: Annotated[str, typer.Option(
        "--support-threshold", help="Shrink-wrap threshold relative to the maximum of the blurred |rho|: "
                                    "T, or START,END (linear over the run).")] = "0.12,0.1",
    support_smooth: Annotated[Optional[str], typer.Option(
        "--support-smooth", help="Shrink-wrap Gaussian sigma in pixels, START,END (linear over the run) "
                                 "[default: max(1, object extent/40),0.5].", show_default=False)] = None,
    support_update: Annotated[int, typer.Option(
        "--support-update", min=0, help="Shrink-wrap every K iterations (0: only at `sup` steps).")] = 20,
    free_fraction: Annotated[float, typer.Option(
        "--free-fraction", min=0.0, max=0.5, help="Measured pixels withheld for the free log-likelihood.")] = 0.05,
    history_every: Annotated[int, typer.Option("--history-every", min=1, help="Record metrics every K iterations.")] = 10,
    progress_json: Annotated[bool, typer.Option(
        "--progress-json", help="One JSON line per reporting step on stderr (for automation).")] = False,
    json_report: c.JsonOpt = False,
) -> None:
    """Phase a diffraction pattern (2D) or volume (3D): iterative phase retrieval from random starts.

    Each run starts from random phases on the measured amplitudes and the support from the
    autocorrelation (or --support), then runs the recipe. Steps run LEFT TO RIGHT like a shell pipeline
    (PyNX writes the same thing right to left: "ER**200*HIO**600" there is "hio**600,er**200" here):
    er (error reduction), hio(beta=0.9), raar(beta=0.9), ml (Poisson maximum-likelihood refinement,
    conjugate gradient), sup(threshold=,sigma=) (one shrink-wrap update). Groups repeat:
    "(hio**50,er**5)**10". The modulus constraint applies to measured pixels only; masked pixels are
    left free. Shrink-wrap: every --support-update iterations the support becomes the pixels where
    |rho| blurred by a Gaussian (sigma shrinking over the run) exceeds --support-threshold times its
    maximum. Defaults were chosen on simulated tungsten, cells and 3D data (oversampling about 4,
    crops of 100 to 420 pixels): HIO then ER then ML reached the tungsten object from 5 of 5 starts,
    RAAR then ER then ML from 3 of 5; a threshold of 0.2 cut the dim parts of the cells; the blur
    scales with the object (a fixed 1 pixel failed on large crops, 3 on small ones). At oversampling
    below 3, or for sparse objects, try --support-threshold 0.2.

    Metrics (Ic = |F rho|^2 with the unitary transform, I the measured photons, per pixel):
    llk = (1/n) sum [Ic - I + I ln(I/Ic)] over the constrained measured pixels (Poisson; about 0.5 for
    a correct model); llk_free = the same over about --free-fraction of the measured pixels, withheld
    in small islands outside the central speckle (it ranks runs); chi2 = (1/n) sum (I - Ic)^2/max(Ic, 1);
    support_size (pixels); outside_fraction = share of |P_M rho|^2 off the support; amplitude_misfit =
    (sum (|F rho| - sqrt(I))^2 - sum E[(|F rho| - sqrt(k))^2]) / sum I with k ~ Poisson(|F rho|^2), the
    amplitude misfit beyond photon noise (about 0
    for a run that fits the data; it drives --positivity auto). A run with
    outside_fraction > 0.1 + noise_fraction (the photon-noise share of the data, which P_M spreads
    everywhere), or with non-finite metrics, is flagged failed. Runs are written best first:
    /entry_1 is the unflagged run with the lowest llk_free.

    Example: cxdi phase pattern.cxi -o runs.cxi --runs 10 --recipe "hio**600,er**200,ml**100" --seed 1
    """
    c.check_stdout(output, json_report)
    smooth = None if support_smooth is None else \
        _schedule(support_smooth, "--support-smooth", "START,END in pixels, e.g. 2,0.5", 0.0, 100.0)
    threshold = _schedule(support_threshold, "--support-threshold", "T or START,END between 0 and 1", 0.0, 1.0)
    from cxdi_cli import fft, io  # noqa: PLC0415
    from cxdi_cli.phasing import runs as phasing  # noqa: PLC0415
    from cxdi_cli.phasing import recipe as rcp  # noqa: PLC0415

    threads = int(os.environ["CXDI_THREADS"]) if os.environ.get("CXDI_THREADS") else None
    if threads is None and jobs > 1:
        threads = max(1, fft.threads() // jobs)
    options = phasing.Options(
        recipe=recipe, runs=runs, seed=seed, positivity="auto" if positivity is None else positivity,
        amplitude_bound=amplitude_bound,
        support_threshold=threshold, support_smooth=smooth, support_update=support_update,
        free_fraction=free_fraction, record_every=history_every, threads=threads)
    steps = phasing.parse_recipe(recipe)           # usage error (exit 2) before reading anything
    pattern = io.read_pattern(input)
    given = None
    if support is not None:
        given = io.read_array(support, "support") != 0
    problem = phasing.prepare(pattern, options, given)
    for w in problem.info["warnings"]:
        c.warn(w)
    options.seed = problem.seed
    n_it = problem.n_iterations
    c.say(f"cxdi phase: {pattern.intensity.ndim}D {tuple(pattern.intensity.shape)}, recipe "
          f"{rcp.format_recipe(steps)} ({n_it} iterations, left to right), {runs} run(s), seed {problem.seed}, "
          f"jobs {jobs}")
    pos_text = "auto" if positivity is None else ("on" if positivity else "off")
    c.say(f"  positivity {pos_text}, amplitude bound {amplitude_bound or 'none'}, "
          f"support from {problem.info['support_from']} ({problem.info['initial_support_size']} px), shrink-wrap "
          f"threshold {_span(threshold)} every {support_update} it., sigma {_span(problem.info['support_smooth'])} px; "
          f"free pixels {problem.info['free_pixels']} of {problem.info['measured_pixels']} measured; "
          f"oversampling estimate {_fmt(problem.info.get('oversampling_estimate'))}")
    with c.progress("phase", total=runs * n_it) as tick:
        seen: dict[int, int] = {}

        def on_progress(ev: dict) -> None:
            if ev["run"] >= runs and ev["run"] not in seen:  # positivity auto's second pass
                tick(0, total=2 * runs * n_it)
            if progress_json:
                print(json.dumps({"schema": "cxdi.phase.progress/1", **_clean(ev)}), file=sys.stderr, flush=True)
            if ev.get("done"):
                step = n_it - seen.get(ev["run"], 0)
                seen[ev["run"]] = n_it
                m = ev["metrics"]
                tick(step, info=f"run {ev['run']}: llk_free {_fmt(m.get('llk_free'))}")
            else:
                step = ev["iteration"] - seen.get(ev["run"], 0)
                seen[ev["run"]] = ev["iteration"]
                tick(step, info=f"run {ev['run']} {ev['algorithm']} llk {_fmt(ev.get('llk'))}")

        rec = phasing.phase(pattern, options, jobs=jobs, keep=keep, on_progress=on_progress, problem=problem)
    step_info = io.make_step(c.command_line(), {**options.as_dict(), "jobs": jobs, "keep": keep,
                                                "support_file": support}, [input])
    io.write_reconstruction(output, rec, step_info)
    auto = rec.extra.get("phase", {}).get("positivity", "")
    if auto.startswith("auto: off"):
        c.warn(f"positivity {auto}")
    failed = sum(1 for r in rec.runs if r.metrics.get("failed"))
    if rec.runs[0].metrics.get("failed"):
        c.warn("every run was flagged as failed (more of |P_M rho|^2 off the support than photon noise explains)")
    c.say(f"cxdi phase: best run {rec.runs[0].params['run_index']}: llk {_fmt(rec.runs[0].metrics['llk'])}, "
          f"llk_free {_fmt(rec.runs[0].metrics['llk_free'])}; {failed} of {len(rec.runs)} written run(s) flagged failed")
    c.report(json_report, "cxdi.phase/1", input=input, output=output, shape=list(pattern.intensity.shape),
             recipe=rcp.format_recipe(steps), iterations=n_it, seed=problem.seed, runs_requested=runs,
             pixel_size_m=list(rec.pixel_size) if rec.pixel_size else None,
             free_pixels=problem.info["free_pixels"], measured_pixels=problem.info["measured_pixels"],
             runs=[{"entry": k, "run_index": r.params["run_index"], **_clean(r.metrics)}
                   for k, r in enumerate(rec.runs, start=1)])


def _schedule(text: str, option: str, expected: str, lo: float, hi: float) -> tuple[float, float]:
    """START,END (or one value for both) from an option string; usage error otherwise."""
    try:
        vals = tuple(float(v) for v in text.split(","))
        if len(vals) == 1:
            vals = (vals[0], vals[0])
        if len(vals) != 2 or not all(lo <= v <= hi for v in vals):
            raise ValueError
    except ValueError:
        raise c.usage_error(f"{option} {text!r}: expected {expected}") from None
    return vals  # type: ignore[return-value]


def _span(v: tuple[float, float]) -> str:
    return f"{v[0]:g}" if v[0] == v[1] else f"{v[0]:g} -> {v[1]:g}"


def _fmt(v: object) -> str:
    return "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _clean(d: dict) -> dict:
    """JSON-safe copy: non-finite floats become null."""
    import math  # noqa: PLC0415

    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _clean(v)
        elif isinstance(v, float) and not math.isfinite(v):
            v = None
        elif hasattr(v, "item"):
            v = v.item()
        out[k] = v
    return out
