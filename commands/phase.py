"""cxdi phase: iterative phase retrieval (ER, HIO, RAAR, Poisson ML, shrink-wrap), many random starts."""
from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Optional

import typer

from cxdi_cli.commands import _common as c
from cxdi_cli.phasing.defaults import DEFAULT_PSF as _DEFAULT_PSF, DEFAULT_RECIPE as _DEFAULT_RECIPE  # no imports there: --help stays light


def phase(
    input: c.InputArg,
    output: c.OutputOpt = "-",
    runs: Annotated[int, typer.Option("--runs", "-n", min=1, help="Independent random starts.")] = 5,
    recipe: Annotated[str, typer.Option(
        "--recipe", "-r", help="Steps run LEFT TO RIGHT: NAME[(k=v,...)][**N], groups (..)**N. "
                               "Names: er, hio, raar, ml, sup, detwin, psf, gps, tv, cpower, oss.")] = _DEFAULT_RECIPE,
    seed: c.SeedOpt = None,
    support: Annotated[Optional[str], typer.Option(
        "--support", help="Initial support (centred, non-zero = inside): FILE or FILE::/path; "
                          "default: the thresholded autocorrelation.", show_default=False)] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Runs in parallel processes.")] = 1,
    scheduler: c.SchedulerOpt = None,
    scheduler_file: c.SchedulerFileOpt = None,
    keep: Annotated[Optional[int], typer.Option("--keep", min=1, help="Keep only the K best runs.",
                                                show_default=False)] = None,
    positivity: Annotated[Optional[bool], typer.Option(
        "--positivity/--no-positivity", help="Real part of the object non-negative on the support "
        "(up to one global phase) [default: auto: every start runs with it to the end of the search "
        "stage, the first 2 also without; it stays on unless the best without fits clearly better (free LLK "
        "below 0.3 of the best with it), as for specimens whose phase varies by more than about a radian; "
        "the losing variant's runs stop there].", show_default=False)] = None,
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
    psf: Annotated[str, typer.Option(
        "--psf", help="Partial coherence: the measured intensity as |F rho|^2 blurred by a detector-plane "
        "PSF whose width is refined (Poisson ML) from the first ml step of the recipe (without one, from "
        "the end of the search; or from a `psf` step): auto, off, gaussian:FWHM, lorentzian:FWHM or "
        "pseudo-voigt:FWHM,ETA (FWHM in pixels). auto: gaussian:1, dropped for the rest of the run when "
        "the fitted FWHM falls below 0.6 px (coherent data); off for 3D volumes and photon-limited "
        "patterns (noise fraction above 1e-3). The blur of a pixel's area (about 1 px) and of a partly "
        "coherent beam both sharpen the object in the final refinement: hard 512^2 tungsten, /entry_1 "
        "0.064 -> 0.039. Strongly blurred data defeat the search itself, so with MODEL:FWHM the search "
        "runs on the pattern deconvolved by the PSF (Richardson-Lucy) and hands over to the measured "
        "data at the ml step; auto first reads the data's own blur (the widest Gaussian PSF under which "
        "a non-negative coherent pattern still fits the bright pixels within Poisson noise) and does "
        "the same from 1.5 px on (2-px-blurred hard tungsten reads 1.9-2.1 px; 256^2: 0.93 -> 0.06). "
        "The fitted FWHM is the run "
        "metric psf_fwhm_px.")] = _DEFAULT_PSF,
    free_fraction: Annotated[float, typer.Option(
        "--free-fraction", min=0.0, max=0.5, help="Measured pixels withheld for the free log-likelihood.")] = 0.05,
    history_every: Annotated[int, typer.Option("--history-every", min=1, help="Record metrics every K iterations.")] = 10,
    generations: Annotated[int, typer.Option(
        "--generations", min=1, help="Guided generations (Chen et al. 2007): the search steps at the head of the "
                                     "recipe end in G generations (the first half the search, the others "
                                     "splitting the rest); after each, every run whose free LLK is above "
                                     "--guide-above times the best's is replaced by a blend of itself and "
                                     "the best run, aligned (1: every run, Chen et al.'s rule).")] = 3,
    guide_above: Annotated[float, typer.Option(
        "--guide-above", min=0.0, help="Guided generations: runs within this factor of the best free LLK "
                                       "(converged ones) go on unchanged; stalled ones (10-1000x) are "
                                       "pulled onto the best.")] = 2.0,
    consensus: Annotated[bool, typer.Option(
        "--consensus/--no-consensus", help="Write the runs best first within their largest agreeing group "
                                           "(aligned distance <= 0.3, up to 0.6 when photon noise spreads "
                                           "every run): /entry_1 is the best run that others "
                                           "agree with, not a lone outlier.")] = True,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted run of this command from the finished runs it kept in "
                         "OUT.partial (same data and options; its seed unless --seed is given); the result "
                         "equals an uninterrupted run and the checkpoint is removed.")] = False,
    series: Annotated[bool, typer.Option(
        "--series", help="INPUT is a time series of 2D frames (cxdi simulate series; io.series layout): the "
                         "summed frames are phased first with every option above (the reference), then each "
                         "frame in time order, warm-started from the previous frame's object and support; "
                         "OUT holds one entry per frame in time order.")] = False,
    frame_recipe: Annotated[Optional[str], typer.Option(
        "--frame-recipe", help="--series: the recipe of each warm-started frame [default: "
                               "raar**50,er**100,ml**50].", show_default=False)] = None,
    frame_runs: Annotated[int, typer.Option(
        "--frame-runs", min=1, help="--series: runs per frame, run j following the reference's run j from "
                                    "frame to frame (independent chains for a per-frame PRTF).")] = 1,
    cold_frames: Annotated[bool, typer.Option(
        "--cold-frames", help="--series: phase every frame from a random start with --recipe instead "
                              "(the baseline warm starts are measured against).")] = False,
    reference_out: Annotated[Optional[str], typer.Option(
        "--reference", help="--series: also write the reference (every run on the summed frames) to this "
                            "file.", show_default=False)] = None,
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

    Steps for noisy and missing data (formulas in cxdi_cli/phasing/regularise.py; `cxdi info
    --missing-modes DATA` tells before phasing how many object modes the mask leaves unconstrained):
    gps(t=1,s=0.9,sigma=1,eps=0): generalized proximal smoothing (Pham, Yin, Rana, Osher & Miao 2019,
    Opt. Express 27, 2792), a primal-dual iteration with y the real-space dual variable:
    rho+ = F^-1 prox(F(rho - t y)), prox the modulus projection relaxed by eps,
    (t sqrt(I) + eps |x|)/(t + eps) x/|x|; y+ = (1 + s G)^-1 P_out(y + s (2 rho+ - rho)), G a Gaussian
    of sigma pixels, P_out what lies off the support (s = t = 1, sigma = 0 is HIO with beta = 1).
    tv(weight=0.02,beta=0,n=10): total-variation regularised projection for incomplete data (Chang,
    Lou, Ng & Zeng 2016, SIAM J. Sci. Comput. 38, A3672): on the support P_M rho becomes
    argmin_u |u - P_M rho|^2/2 + lambda TV(u), lambda = weight x rms |P_M rho| (n Chambolle
    iterations), off it ER (beta=0) or HIO. cpower(kappa=4,beta=0.9,shells=0): constrained power (after
    Thibault, Elser, Jacobsen, Shapiro & Sayre 2006, Acta Cryst. A 62, 248): HIO whose modulus step
    also clips |F rho|^2 <= kappa B(q) behind the beamstop (shells with no measured pixel), B the
    Porod envelope I_edge (r_edge/r)^(d+1), flat in the central speckle; shells=1 also bounds the
    masked pixels of partly measured shells by the shell's largest measured intensity. oss(beta=0.9,n=0): oversampling smoothness (Rodriguez et al. 2013, J. Appl. Cryst. 46,
    312): HIO, then rho off the support filtered by exp(-k^2/(2 alpha^2)), alpha from N down to 1/N
    in 10 stages over n iterations (0: to the end of the recipe).

    Which method when (tests/compare_algorithms.py: simulate, assemble3d/preprocess, mask, phase;
    600 search iterations + er**200,ml**100, 3 starts; NRMSE best/median start; particle3d 48^3
    volumes, 2D 128^2), for hio (the default) / gps / oss / hio**400,tv**200 / cpower:

    photon-starved 3D (3e4 photons/frame): .61/.67, .61/.67, .60/.62, .59/.61, .57/.68.

    wedge, tilts +-60 deg: .30/.30, .37/.37, .30/.35, .32/.34, .35/.37.

    wedge, tilts +-75 deg: .28/.29, .32/.33, .27/.29, .23/.31, .66/.81.

    beamstop 2.5 speckles 3D: .37/.39, .85/.91, .39/.53, .40/.57, .40/.40.

    tungsten 2D: .089/.091, .77/.82, .087/.79, .086/.53, .089/.091.

    cells 2D: .078/.087, .10/.62, .073/.085, .076/.091, .078/.087.

    No method wins on most cases, so the default stays HIO. oss and hio+tv are as good or a little
    better on photon-starved and +-75 deg data but lose starts on tungsten; gps loses on every
    missing-data case (its dual smoothing damps the low frequencies: 0.85-0.91 with a beamstop);
    cpower equals HIO where its bound is inactive and hurts wedges in 3D (the Porod envelope from
    the beamstop's edge lies below the true centre: try kappa=1000). Check first how many modes the
    mask leaves free with `cxdi info --missing-modes DATA`.

    3D volumes: the default recipe closes with cut(photons=1), a resolution cut-off of the unmeasured
    voxels: the object's transform is set to 0 in the masked voxels of every shell from the first
    whose measured voxels hold under 1 photon on average (their signal below the Poisson noise) outward.
    Nothing constrains those voxels (a missing wedge at high q, the corners beyond the detector) and ER
    and ML leave noise there. Photon-starved 96^3 tilt series (3e5 photons per frame, +-70 deg, flat
    geometry; 8 runs): /entry_1 0.52 -> 0.29 (seed 1; 0.34 seed 2), `cxdi average` 0.52 -> 0.24 (0.25
    seed 2; every run now in the consensus group, which was the best run alone); bright volumes lose
    only the corners beyond the data (+-60 deg wedge at 1e8 photons per frame: average 0.20, both seeds).
    tests/compare_algorithms.py (48^3, 3 starts, seed 1), the default against the same recipe without
    the cut (row hio), best/median start: photon-starved .33/.33 against .62/.63, wedge +-60 deg
    .27/.29 against .29/.30, +-75 deg .26/.28 against .28/.29, beamstop .30/.32 against .31/.33. The
    EMC volume of tests/bench_orient.py --full (3000 frames of 2000 photons): average 0.262, 0.266,
    0.266 over phase seeds 1-3 (0.316-0.380 before).

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
    the runs are aligned to each other and the largest group that agrees (normalised distance after
    alignment <= 0.3, up to 0.6 when photon noise spreads every run) comes first, by llk_free:
    /entry_1 is the best run that other runs agree with, so a lone outlier with a slightly better
    llk_free never wins; each run's consensus_group (1 = the consensus) and consensus_distance
    (median distance to the group) are in its metrics.

    Runs are tasks: --jobs J runs them in J local processes, --scheduler (or --scheduler-file,
    CXDI_SCHEDULER) on the workers of a Dask cluster, which get the pattern once; a worker that dies
    loses only its runs, which are rerun elsewhere. The same --seed gives the same runs, written in the
    same order, wherever they ran; a run that still fails is left out and named on stderr.

    Time series (--series): a stack of 2D frames of a changing specimen. The frames summed are phased
    as one pattern (the options above; /entry_1/reference in OUT is its best run); frame 0 then starts
    from that object, frame k from frame k-1's, its support grown by 2 pixels, with --frame-recipe (one
    run per frame, the positivity the reference chose). On 20 simulated 128^2 frames of a growing
    disc (tests/bench_series.py) the warm frames reached the llk of a cold start 5x sooner (155
    against 805 iterations) and stayed within NRMSE 0.10-0.13 of each frame's truth, where cold
    starts lost a frame (0.85). A short RAAR block first: ER alone stalled on some frames (0.16-0.27).
    Entry K is frame K-1 (its frame_index, time_s, start, llk_free and iterations_to_converge in its
    process group); with --frame-runs R, frame k's R runs follow each other, run j continuing the
    reference's run j, so that their spread gives the frame's PRTF. `cxdi resolve-prt OUT --data SERIES` gives one PRTF per frame; `cxdi show OUT`
    draws the frames as a strip (.png) or an animation (.gif).

    Example: cxdi phase pattern.cxi -o runs.cxi --runs 10 --recipe "hio**600,er**200,ml**100" --seed 1

    Example: cxdi phase --series series.cxi -o frames.cxi --seed 1
    """
    c.check_stdout(output, json_report)
    smooth = None if support_smooth is None else \
        _schedule(support_smooth, "--support-smooth", "START,END in pixels, e.g. 2,0.5", 0.0, 100.0)
    threshold = _schedule(support_threshold, "--support-threshold", "T or START,END between 0 and 1", 0.0, 1.0)
    from cxdi_cli import fft, io  # noqa: PLC0415
    from cxdi_cli.phasing import runs as phasing  # noqa: PLC0415
    from cxdi_cli.phasing import recipe as rcp  # noqa: PLC0415

    threads = fft.threads_per_job(jobs, int(os.environ["CXDI_THREADS"]) if os.environ.get("CXDI_THREADS") else None)
    options = phasing.Options(
        recipe=recipe, runs=runs, seed=seed, positivity="auto" if positivity is None else positivity,
        amplitude_bound=amplitude_bound,
        support_threshold=threshold, support_smooth=smooth, support_update=support_update,
        free_fraction=free_fraction, record_every=history_every, threads=threads, psf=psf, generations=generations, guide_above=guide_above,
        consensus=consensus)
    steps = phasing.parse_recipe(recipe)           # usage error (exit 2) before reading anything
    pool = c.executor(jobs, scheduler, scheduler_file)  # a scheduler that does not answer fails here, in seconds
    if pool.kind == "dask":  # the workers share their own cores among their tasks, unless --threads says
        options.threads = int(os.environ["CXDI_THREADS"]) if os.environ.get("CXDI_THREADS") else None
    phasing.psf_start(psf)
    if series:
        _phase_series(input, output, options, pool, jobs, support, frame_recipe, frame_runs, cold_frames,
                      reference_out, resume, json_report)
        return
    if frame_recipe is not None or frame_runs != 1 or cold_frames or reference_out is not None:
        raise c.usage_error("--frame-recipe, --frame-runs, --cold-frames and --reference go with --series")
    pattern = io.read_pattern(input)
    given = None
    if support is not None:
        given = io.read_array(support, "support") != 0
    from cxdi_cli.phasing import resume as rsm  # noqa: PLC0415

    session = rsm.Session.start(output, resume, options, [input, support])  # on --resume: finished runs, seed
    if session.done:
        c.say(f"cxdi phase: resuming from {len(session.done)} finished run(s) in {session.path}")
    problem = phasing.prepare(pattern, options, given)
    for w in problem.info["warnings"]:
        c.warn(w)
    options.seed = problem.seed
    n_it = problem.n_iterations
    c.say(f"cxdi phase: {pattern.intensity.ndim}D {tuple(pattern.intensity.shape)}, recipe "
          f"{rcp.format_recipe(problem.steps)} ({n_it} iterations, left to right), {runs} run(s), seed {problem.seed}, "
          f"executor: {pool.describe()}")
    pos_text = "auto" if positivity is None else ("on" if positivity else "off")
    c.say(f"  positivity {pos_text}, amplitude bound {amplitude_bound or 'none'}, "
          f"support from {problem.info['support_from']} ({problem.info['initial_support_size']} px), shrink-wrap "
          f"threshold {_span(threshold)} every {support_update} it., sigma {_span(problem.info['support_smooth'])} px; "
          f"free pixels {problem.info['free_pixels']} of {problem.info['measured_pixels']} measured; "
          f"oversampling estimate {_fmt(problem.info.get('oversampling_estimate'))}")
    with c.progress("phase", total=runs * n_it) as tick:
        seen: dict[int, int] = {}
        probes: set[int] = set()

        def on_progress(ev: dict) -> None:
            if ev["run"] >= runs and ev["run"] not in probes:  # positivity auto's probes without it
                probes.add(ev["run"])
                tick(0, total=(runs + len(probes)) * n_it)
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

        c.STATE.interrupt_note = session.note  # every finished run is kept beside the output as it ends
        rec = phasing.phase(pattern, options, jobs=jobs, keep=keep, on_progress=on_progress, problem=problem,
                            executor=session.executor(pool, problem.seed))
    step_info = io.make_step(c.command_line(), {**options.as_dict(), "jobs": jobs, "keep": keep,
                                                "support_file": support}, [input])
    io.write_reconstruction(output, rec, step_info)
    session.finish()
    for lost in rec.extra.get("phase", {}).get("lost_runs", []):
        c.warn(f"run {lost['run']} failed on {pool.describe()} and is not in {output}: {lost['error']}")
    if rec.extra.get("phase", {}).get("blurred_data"):
        c.warn(rec.extra["phase"]["blurred_data"])
    auto = rec.extra.get("phase", {}).get("positivity", "")
    if auto.startswith("auto: off"):
        c.warn(f"positivity {auto}")
    few = few_agree(rec.extra.get("phase", {}).get("consensus", {}))
    if few:
        c.warn(few)
    failed = sum(1 for r in rec.runs if r.metrics.get("failed"))
    if rec.runs[0].metrics.get("failed"):
        c.warn("every run was flagged as failed (more of |P_M rho|^2 off the support than photon noise explains)")
    c.say(f"cxdi phase: best run {rec.runs[0].params['run_index']}: llk {_fmt(rec.runs[0].metrics['llk'])}, "
          f"llk_free {_fmt(rec.runs[0].metrics['llk_free'])}; {failed} of {len(rec.runs)} written run(s) flagged failed")
    c.report(json_report, "cxdi.phase/1", input=input, output=output, shape=list(pattern.intensity.shape),
             recipe=rcp.format_recipe(problem.steps), iterations=n_it, seed=problem.seed, runs_requested=runs,
             pixel_size_m=list(rec.pixel_size) if rec.pixel_size else None,
             free_pixels=problem.info["free_pixels"], measured_pixels=problem.info["measured_pixels"],
             runs=[{"entry": k, "run_index": r.params["run_index"], **_clean(r.metrics)}
                   for k, r in enumerate(rec.runs, start=1)])


def few_agree(consensus: dict) -> str:
    """The warning when /entry_1 rests on few starts: fewer than half of 4 or more compared runs in its
    consensus group ("" otherwise). The others stalled or found something else; more starts make the
    result trustworthy (2-px-blurred 504^2 tungsten: one start of eight fitted in one seed of three)."""
    size, compared = int(consensus.get("size") or 0), int(consensus.get("compared") or 0)
    if not consensus.get("used") or compared < 4 or 2 * size >= compared:
        return ""
    return (f"only {size} of {compared} runs agree with /entry_1 (its consensus group); the others stalled or "
            f"found something else: the result rests on few starts, run more (--runs {2 * compared})")


def _phase_series(input: str, output: str, options, pool, jobs: int, support: Optional[str],  # noqa: ANN001
                  frame_recipe: Optional[str], chains: int, cold: bool, reference_out: Optional[str],
                  resume: bool, json_report: bool) -> None:
    """--series: the reference, then every frame in time order (phasing.series.phase_series)."""
    from cxdi_cli import io  # noqa: PLC0415
    from cxdi_cli.phasing import series as ps  # noqa: PLC0415

    if resume:
        raise c.usage_error("--resume does not go with --series (a series is rerun whole)")
    if reference_out is not None and reference_out == output:
        raise c.usage_error("--reference: give another file than -o")
    recipe = frame_recipe if frame_recipe is not None else ps.WARM_RECIPE
    ps.rn.parse_recipe(recipe)                      # usage error (exit 2) before reading anything
    data = io.read_series(input)
    given = None if support is None else io.read_array(support, "support") != 0
    c.say(f"cxdi phase --series: {len(data)} frames of {tuple(data.intensity.shape[1:])}, "
          f"{'per-frame masks' if data.mask.ndim == 3 else 'one mask'}; reference: {options.runs} run(s) on "
          f"the summed frames; frames: {chains} run(s) each, {'cold, ' + options.recipe if cold else 'warm, ' + recipe}, "
          f"executor: {pool.describe()}")
    with c.progress("phase --series", total=options.runs + chains * len(data)) as tick:
        def on_progress(ev: dict) -> None:
            if not ev.get("done"):
                return
            if ev["stage"] == "reference":
                tick(1, info=f"reference run {ev['run']}: llk_free {_fmt(ev['metrics'].get('llk_free'))}")
            else:
                tick(1, info=f"frame {ev['frame']}: llk_free {_fmt(ev['metrics'].get('llk_free'))}")

        result = ps.phase_series(data, options, warm=not cold, warm_recipe=recipe, chains=chains, support=given,
                                 jobs=jobs, executor=pool, on_progress=on_progress)
    rec = result.frames
    params = {**options.as_dict(), "series": True, "frame_recipe": rec.extra["series"]["frame_recipe"],
              "frame_runs": chains, "cold_frames": cold, "jobs": jobs, "support_file": support}
    if reference_out is not None:
        io.write_reconstruction(reference_out, result.reference,
                                io.make_step(c.command_line(), {**params, "what": "series reference"}, [input]))
    io.write_reconstruction(output, rec, io.make_step(c.command_line(), params, [input]), arrays=rec.arrays)
    summary = rec.extra["series"]
    for k in summary["failed_frames"]:
        c.warn(f"frame {k} was flagged as failed (more of |P_M rho|^2 off the support than photon noise explains)")
    its = summary["iterations_to_converge"]
    c.say(f"cxdi phase --series: reference llk_free {_fmt(summary['reference_llk_free'])}; {summary['frames']} frames "
          f"written in time order, llk_free {_fmt(min(summary['llk_free']))} to {_fmt(max(summary['llk_free']))}, "
          f"converged after {min(its)} to {max(its)} iterations; {len(summary['failed_frames'])} flagged failed")
    c.report(json_report, "cxdi.phase-series/1", input=input, output=output, reference=reference_out,
             frames=len(data), shape=list(data.intensity.shape), frame_recipe=summary["frame_recipe"],
             warm=not cold, seed=result.reference.extra.get("phase", {}).get("seed"),
             reference_llk_free=summary["reference_llk_free"],
             pixel_size_m=list(rec.pixel_size) if rec.pixel_size else None,
             frame_runs=chains,
             entries=[{"entry": k + 1, "frame_index": r.params["frame_index"], "chain": r.params["chain"],
                       "time_s": r.params["time_s"], **_clean(r.metrics)} for k, r in enumerate(rec.runs)])


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
