"""Phase retrieval runs: one start (the recipe loop and its metrics, `run_one`) and many starts (stages,
positivity auto, guided generations, the consensus order: `phase`). The job itself — options, prepared
data, default recipe — is `phasing.problem`; the defaults it holds are explained here.

A run is an independent task `run_one(problem, options, index, report)`: a pure function of the
prepared problem, the options and the run index (its random numbers come from
`SeedSequence([seed, index])`), so runs can go to any executor (`cxdi_cli.executor`: in-process, local
processes, a Dask cluster) and the same seed gives the same runs whatever the executor.

Metrics (recorded every `record_every` iterations in the run's history, and at the end; Ic = |F rho|^2
with the unitary transform F, I the measured photons):

- ``llk``: Poisson negative log-likelihood ratio per pixel over the measured pixels used by the
  modulus constraint, (1/n) sum [Ic - I + I ln(I/Ic)]; 0 for a perfect fit, about 0.5 for Poisson
  noise on the true model.
- ``llk_free``: the same over the free pixels: about `free_fraction` of the measured pixels, in small
  islands (a few pixels across, with their centro-symmetric mates, none in the central speckle),
  withheld from the modulus constraint. Unbiased by the fit, it ranks runs (Favre-Nicolin, Leake &
  Chushkin 2020, doi:10.1038/s41598-020-57561-0).
- ``chi2``: (1/n) sum (I - Ic)^2 / max(Ic, 1) over the constrained pixels.
- ``support_size``: pixels in the support; ``outside_fraction``: the fraction of |P_M rho|^2 off the
  support (for the final object: of the modulus projection of the final object).
- A run is flagged ``failed`` when outside_fraction > `max_outside` (0.1) plus the noise fraction of the
  data (photon noise in P_M rho spreads everywhere: sum v(I) / sum I, v = I/(1+4I)), or a metric is not finite.

Defaults, chosen by measurement on `cxdi simulate` data (tungsten letters and weak-phase cells on
128-, 256- and 512-pixel detectors, linear oversampling about 4, 5 runs each; a 32^3 porous particle):
- recipe ``hio**600,er**200,ml**100``: HIO (beta 0.9) reached the 256-pixel tungsten object from 5
  of 5 starts where RAAR 800 + ER 200 (PyNX's 3D recipe) or RAAR 600 + ER 200 + ML 100 reached it
  from 3 of 5 with the same shrink-wrap settings; the closing Poisson-ML block lowered the 3D error
  from about 0.09 to 0.001-0.02 and the cells error by about 0.01, for the cost of about 250 HIO
  iterations.
- 3D: the default recipe closes with ``cut(photons=1)`` (`problem.CUT_3D`, `regularise.make_cut`):
  the unmeasured voxels of the shells whose measured voxels hold under 1 photon on average are
  zeroed; ER and ML left noise there. Photon-starved 96^3 tilt series (3e5 photons per frame,
  +-70 deg, 8 runs): /entry_1 0.52 -> 0.29, average 0.52 -> 0.24 (seed 2: 0.34, 0.25); the EMC volume
  of bench_orient --full: average 0.26-0.27 over 3 seeds (0.32-0.38); bright volumes lose only the
  corners beyond the data (+-60 deg wedge, average 0.20). Without ML (er**300) the starved runs were
  0.50 (median), the cut is what counts. Not (yet) the default: ``er**200,tv**40,cut`` instead of
  ER + ML (6 starts from one search, median start/average): starved 0.25/0.21 (seeds 1, 2), +-60 deg
  wedge 0.21/0.12, bright 0.11/0.08 against 0.32/0.24, 0.32/0.20, 0.28/0.17 -- the simulated particle
  is piecewise constant, TV's own prior -- but its free LLK is 3-8x worse (the ranking then disagrees
  with the error) and a tv block of 60-80 iterations or more diverged (shrink-wrap collapses).
- 2D: the default recipe's HIO block grows with the initial autocorrelation support, 600 x
  clip(pixels / 5000, 1, 4) (`default_recipe_for`; a given recipe is run as written). The 512^2
  hard tungsten case (gap cross through the beam, beamstop 1.5 speckles, oversampling 3, pixel-
  integrated; 18157 px) with positivity, 8 starts, seed 1 (`phase --jobs 2`): 600 HIO converged
  1/8 starts, 1000 2/8, 1500 5/8, 2180 5/8, 2400 8/8 (0.062-0.068); `--support-smooth 2,0.5` 0/8,
  `--psf gaussian:1` 0/8, RAAR 600 + HIO 300 1/8. The harness (`tests.robustness --full`, one
  process, its own FFT plans): 2180 2/8, 2400 4/8, 3600 4/8 (/entry_1 0.063-0.065, average
  0.056-0.058, against 0/8, 0.839, 0.754 before). The same data point-sampled fail alike with 600
  (1/8): the failure at full size is mostly too short a search for an object of 4x the pixels, not
  the pixel integration; which starts converge changes with the FFT plan's roundoff (HIO is
  chaotic), so compare shares over several seeds, not single starts. At 256 px only the
  oversampling-3 case grows (6831 px: 820 HIO, 8/8 from 6/8); the others are unchanged.
- shrink-wrap threshold from 0.12 to 0.10 of the maximum (linear over the run), every 20
  iterations: 0.2 (the usual choice for compact strong objects) cut the dim parts of the cells
  (error 0.34 against about 0.1); a constant 0.10 let some tungsten starts keep an oversized
  support, a constant 0.12 left the 405-pixel cells crop at 0.24, 0.12 -> 0.08 lost more starts;
  0.12 -> 0.10 gave 5 of 5 tungsten starts at every size and 4-5 of 5 cells starts.
- shrink-wrap Gaussian sigma from max(1, extent/40) to 0.5 pixels, the object extent estimated from
  the initial support: a fixed 1 -> 0.5 reached the 420-pixel tungsten crop from 1 of 5 starts, a
  fixed 3 -> 0.5 failed on the 100- and 210-pixel crops; scaled, all sizes converged 5 of 5.
- initial support: the autocorrelation blurred by 1 pixel, above 0.05 of its maximum: the thin
  tungsten strokes give the autocorrelation a sharp central peak, and at 0.1 the initial support
  was smaller than the object (2117 against 3717 pixels). Sparse objects (clusters of small
  discs) have far wider autocorrelations; for them 0.1 is the better cut.
- positivity "auto" (the real part of rho non-negative on the support, up to a global phase): without
  it the tungsten error rose from 0.045 to 0.15-0.20 and starts stagnated; but a specimen whose phase
  varies by more than about a radian cannot be fitted with it (0.73 against 0.045 without). Every
  start runs with it to the end of the search (the HIO steps), the first 2 also without; positivity
  stays on unless the best of those without reaches a free LLK below 0.3 of the best with it (a
  +-2.5 rad specimen: 87 against 1343; nearly real ones: 0.6-0.7x when both variants converge, 60x
  worse without when they do not). The variants are compared with each other, not with an absolute
  misfit, which partial coherence and processed data exceed whatever the constraint; the losing
  variant's runs stop there (never run to the end).
- runs are written best first within their consensus group (`cxdi_cli.consensus`): the largest set
  of runs within 2x of the best free LLK that agree pairwise after alignment (distance <= 0.3, or
  up to 0.6 when photon noise spreads the runs: `consensus.effective_threshold`): converged starts
  of a data set differ by 0.04-0.06 (hard tungsten), 0.4 (photon-limited cells), stagnated ones by
  0.65-1.
- guided generations on (`generations` 3, `guide_above` 2; generations.py): the first generation
  ends at half the search, the second at three quarters; there every run whose free LLK is above
  twice the best's (a stalled start: 10-1000x) is replaced by its blend with the best, and the
  converged runs go on unchanged (independent, for the average). Measured (in-process, 8 starts,
  seeds 1 and 2, against generations 1; "conv" = within 1.5x the best start and below 0.2): the 512^2
  hard tungsten case 5/8 -> 8/8 (/entry_1 0.063 -> 0.039 with the PSF below), the strong phase
  object (256^2 cells, 1.8 rad) 5/8 and 4/8 -> 8/8 and 8/8 (average 0.076/0.088 -> 0.077/0.087),
  256^2 hard 8/8, 7/8 -> 8/8, 8/8, oversampling 3 8/8, 7/8 -> 8/8, 8/8; gap cross, beamstop and
  processed cases unchanged within one start. Chen et al.'s rule (every run blended, generations
  at thirds of the search) had lost every start of the phase object: its best run at a third of a
  600-iteration search was a stalled one.
- psf "auto" (psf.py) in 2D: a Gaussian PSF from 1 px, its width refined by Poisson ML every 25
  projections, switched on for the final `ml` block only and dropped when the fitted FWHM falls
  below 0.6 px. A detector integrates the intensity over each pixel's area (a blur of about 1 px;
  truth of the coherent 256 hard case: llk 65 per pixel coherent, 1.4 with a 1-px box) and a
  partly coherent beam blurs more; the coherent model then leaves the object's fine detail wrong.
  512^2 hard tungsten (pixel-integrated, 8 starts): /entry_1 0.064 -> 0.039, average 0.058 ->
  0.029, fitted 0.95 px; the PSF from the end of the search (ER and ML with it) gave 0.040 for
  1.5x the time. Point-sampled (truly coherent) 256^2 hard data: fitted 0.58 px, dropped, /entry_1
  0.053/0.056 against 0.059/0.057; on nearly noise-free 64^2 discs (exact transform) the ML block
  fits 0.84 px and the error goes from 0.0015 to 0.0106, well below what noise leaves on real data.
  Before any search, `psf.estimate_blur` reads the data's own blur (the widest PSF under which a
  non-negative coherent pattern still fits the bright pixels within Poisson noise); from 1.5 px on,
  the search runs on the data deconvolved by it (`_deconvolved_pass`), else it stays coherent and
  a fitted width above BLURRED_DATA_FWHM (1.5 px) is only reported (`blurred_data`). Off for 3D
  volumes (anisotropic blur) and for photon-limited patterns (noise fraction above 1e-3: on
  2e6-photon cells the fitted 0.86 px deconvolved noise, average 0.20 against 0.15). Cost: an
  iteration with a PSF is 3.1 HIO iterations, an ML one 8.8. Measured before: the PSF on from a
  third of the recipe turned
  positivity off on a nearly real 128^2 specimen (free LLK 5.8e4 with positivity against 740
  without) and did not rescue a 2-px-blurred pattern (hard tungsten 256: 0.91-0.98 with or without,
  0.93 with the exact PSF fixed from iteration 0 whatever the initial support: the blurred
  autocorrelation's 2747 px, the coherent case's 5041, the transfer divided out 7447-12985); the
  same data converge from random starts on the true support (2440 px, 0.07) but not on it dilated
  3 px (4345 px, 1 of 2) or 8 px (0/2): blurred data constrain the object less, and the search
  needs a support close to the object, which shrink-wrap from the autocorrelation does not find.
  Richardson-Lucy width updates stalled (0.9 px on coherent data; 1.06 px of 2).
- no `detwin` step in the default recipe: ``detwin**20,hio**580,er**200,ml**100`` (HIO on the
  initial support cut at its centre of mass for 20 iterations) converged 8/8 starts on the hard,
  gap and oversampling-3 cases (256 px, 8 starts, seed 1; 7/8, 8/8 and 6/8 without) but 3/8 on the
  2-speckle beamstop (7/8), 4/8 on the strong phase object (5/8), 6/8 on the processed pattern
  (7/8), 7/8 at 2e6 photons (6/8): 44 against 46 over the seven cases. Cost: one HIO iteration
  each (it replaces HIO iterations).
- shrink-wrap blur kept at max(1, extent/40) -> 0.5: ``--support-smooth 2,0.5`` converged 6/8
  (hard, 7/8 without), 8/8 (gap, 8/8), 7/8 (oversampling 3, 6/8) on the same 256-px cases: no
  consistent gain there (issue 12 measured gains at 512 px, not repeated here).
- shrink-wrap never shrinks the support below 1/(4 * 2^N) of the initial autocorrelation support
  (a collapse onto a bright speck, seen on 256-pixel data, is refused).
At linear oversampling below about 3, a higher threshold (``--support-threshold 0.2``) is safer.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from cxdi_cli import fft
from cxdi_cli.model import Pattern, Reconstruction, Run, UsageError
from cxdi_cli.phasing import algorithms as alg
from cxdi_cli.phasing import psf as psfm, recipe as rcp
from cxdi_cli.phasing.defaults import DEFAULT_RECIPE  # noqa: F401 - re-exported
from cxdi_cli.phasing.problem import (  # noqa: F401 - the job's pieces, re-exported for callers of runs
    AUTO_PSF, AUTO_PSF_MAX_NOISE, AUTO_PSF_OFF, HIO_MAX_SCALE, HIO_REFERENCE_SUPPORT, Options, Problem, amplitude_misfit,
    auto_psf_veto, count_iterations, default_recipe_for, noise_fraction, pair_schedule, parse_recipe, prepare,
    psf_start, psf_switch_on,
)

if TYPE_CHECKING:
    from cxdi_cli.executor import Executor


def run_seed(seed: int, index: int) -> np.random.SeedSequence:
    """The seed sequence of run `index` of a job seeded with `seed`."""
    return np.random.SeedSequence([int(seed), int(index)])


@dataclasses.dataclass
class Checkpoint:
    """A run stopped between two steps of its recipe (`run_one(..., stop=K)`), to be continued by
    `run_one(..., start=checkpoint)`: everything the run's state holds except its FFT plans.

    Positivity "auto" stops runs after the first stage to compare the variants; guided generations
    stop every run at each generation's end and continue from a blend with the best. `metrics` are
    those of the object restricted to its support (llk, llk_free, chi2): a HIO iterate off the support
    is not an object."""

    index: int
    iteration: int
    position: tuple[int, int]            # (step of the flattened recipe, repetitions of it done)
    rho: np.ndarray                      # complex64, FFT order
    support: np.ndarray                  # bool, FFT order
    history: dict[str, list[float]]
    metrics: dict[str, float]
    elapsed_s: float = 0.0
    psf: Any = None                      # the state's partial-coherence model (psf.Psf) if on
    detwin_saved: Any = None             # the full support while a detwin block runs
    psf_retired: Any = None              # psf "auto": the PSF dropped as coherent (its fit is reported)
    ml: dict[str, Any] = dataclasses.field(default_factory=dict)  # conjugate-gradient state inside an ml block
    handed_over: bool = False            # the continuing run works on rho and support in place (no copy of
    # a volume): `_stages` hands each checkpoint to exactly one next task and keeps no other use of it

    def centred(self) -> tuple[np.ndarray, np.ndarray]:
        """(object restricted to the support, support), centred as a Run's."""
        return np.fft.fftshift(self.rho * self.support), np.fft.fftshift(self.support)


def _checkpoint_metrics(state: alg.State) -> dict[str, float]:
    """llk, llk_free, chi2 of rho restricted to the support (one forward FFT; the buffer holds rho again)."""
    buf = state.pair.buffer
    np.multiply(state.rho, state.support, out=buf)
    state.pair.forward(scale=False)
    if state.psf is not None:                # the blurred model, the PSF's schedule untouched
        m = state.psf.evaluate(buf, state.amp, state.kind)
    else:
        m = alg.fourier_metrics(state)
    buf[...] = state.rho
    return {k: float(m[k]) for k in ("llk", "llk_free", "chi2") if k in m}


def run_one(problem: Problem, options: Options, index: int,
            report: Callable[[dict[str, Any]], None] | None = None, *, start: Checkpoint | None = None,
            stop: int | None = None) -> Run | Checkpoint:
    """One run from a random start: random phases on the measured amplitudes, the initial support.

    `report` receives a progress event every `options.report_every` iterations (run, iteration,
    total, algorithm, llk, llk_free, chi2, support_size, elapsed_s, eta_s). Returns a centred Run.
    With `stop` (iterations), the run stops at the first step boundary at or after that iteration and
    returns a `Checkpoint`; `start` continues a checkpoint (possibly modified: guided generations) and
    gives exactly what an uninterrupted run would (same seed, same steps)."""
    if options.threads is not None:
        fft.set_threads(options.threads)
    shape = problem.shape
    pair = fft.FFTPair(shape)
    buf = pair.buffer
    if start is None:
        rng = np.random.default_rng(run_seed(problem.seed, index))
        phases = rng.random(shape, dtype=np.float32)   # random phases on the measured amplitudes,
        phases *= np.float32(2 * np.pi)                 # built in place (no complex128 temporaries)
        np.cos(phases, out=buf.real)
        np.sin(phases, out=buf.imag)
        del phases
        buf *= problem.amp
        pair.inverse()
        support = problem.support.copy()
        buf *= support
        rho = buf.copy()
        history: dict[str, list[float]] = {k: [] for k in ("iteration", "llk", "llk_free", "chi2",
                                                             "support_size", "outside_fraction")}
    else:
        if start.handed_over:               # continued in place: a 3D run holds one object, not two
            rho = np.require(start.rho, np.complex64, ["C", "W"])
            support = np.require(start.support, bool, ["C", "W"])
        else:
            rho = np.array(start.rho, np.complex64)
            support = np.array(start.support, bool)
        buf[...] = rho
        history = {k: list(v) for k, v in start.history.items()}
    t0 = time.perf_counter() - (start.elapsed_s if start is not None else 0.0)
    total = problem.n_iterations

    def on_record(state: alg.State, name: str) -> None:
        last = state.last
        if options.record_every > 0 and state.iteration % options.record_every == 0:
            history["iteration"].append(state.iteration)
            for key in ("llk", "llk_free", "chi2", "support_size", "outside_fraction"):
                history[key].append(float(last.get(key, math.nan)))
        if report is not None and options.report_every > 0 and state.iteration % options.report_every == 0:
            elapsed = time.perf_counter() - t0
            report({"run": index, "iteration": state.iteration, "total": total, "algorithm": name,
                    "llk": last.get("llk"), "llk_free": last.get("llk_free"), "chi2": last.get("chi2"),
                    "support_size": last.get("support_size"), "elapsed_s": round(elapsed, 3),
                    "eta_s": round(elapsed / max(1, state.iteration) * (total - state.iteration), 3)})

    min_fraction = options.support_min_fraction
    if min_fraction is None:
        from_file = problem.info.get("support_from") != "autocorrelation"  # file or object-sized
        min_fraction = 0.25 if from_file else 0.25 / 2 ** len(shape)
    state = alg.State(pair=pair, rho=rho, amp=problem.amp, kind=problem.kind, support=support,
                      positivity=options.positivity is not False, amplitude_bound=options.amplitude_bound,
                      support_update=options.support_update, support_threshold=pair_schedule(options.support_threshold),
                      support_smooth=pair_schedule(problem.info["support_smooth"]), support_min_fraction=min_fraction,
                      total=total, record_every=options.record_every, on_record=on_record,
                      initial_support_size=int(np.count_nonzero(problem.support)),
                      psf_start=psf_start(options.psf), psf_update=options.psf_update,
                      psf_method=options.psf_refine)
    auto_psf = options.psf.strip().lower() == "auto"
    retired = None                          # "auto": a PSF whose fitted width fell below AUTO_PSF_OFF
    if start is not None:
        state.iteration, state.psf, state.detwin_saved = start.iteration, start.psf, start.detwin_saved
        state.ml = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in start.ml.items()}
    psf_from = problem.info.get("psf_from_iteration")   # None: off, or a `psf` step of the recipe decides
    if start is not None:
        retired = start.psf_retired
        if psf_from is not None and (start.psf is not None or retired is not None):
            psf_from = None                 # switched on before the checkpoint (and perhaps dropped)
    state.report_every = options.report_every if report is not None else 0   # history keeps its own period
    first, done = start.position if start is not None else (0, 0)
    flat = rcp.flatten(problem.steps)
    for k, step in enumerate(flat):
        if k < first:
            continue
        fn = alg.build(step.name, dict(step.params))
        for rep in range(done if k == first else 0, step.count):
            if stop is not None and state.iteration >= stop:
                return Checkpoint(index=index, iteration=state.iteration, position=(k, rep), rho=state.rho,
                                  support=state.support, history=history, metrics=_checkpoint_metrics(state),
                                  elapsed_s=time.perf_counter() - t0, psf=state.psf,
                                  detwin_saved=state.detwin_saved, ml=dict(state.ml), psf_retired=retired)
            if psf_from is not None and state.psf is None and state.iteration >= psf_from:
                state.psf = psfm.Psf(shape, state.psf_start, state.psf_update, options.psf_refine,
                                     off_below=AUTO_PSF_OFF if auto_psf else None)
                psf_from = None
            elif state.psf is not None and state.psf.coherent:
                retired, state.psf = state.psf, None
            fn(state)
        end = getattr(fn, "end", None)      # a block with a closing action (detwin restores the support)
        if end is not None:
            end(state)
        nxt = flat[k + 1].name if k + 1 < len(flat) else None
        if step.name == "ml" and nxt != "ml" and (nxt in alg.ITERATIVE or all(s.name != "ml" for s in flat[k + 1:])):
            for key in ("psi", "d", "gprev", "block_start"):   # the ml block is over for good (the next ml block,
                state.ml.pop(key, None)                        # if any, starts afresh): its three work arrays go
    state.ml.clear()                          # free the ML work arrays before the output copy
    metrics = final_metrics(state, options, problem.info["noise_fraction"])
    if retired is not None and state.psf is None:
        metrics["psf_fwhm_px"] = retired.fwhm()
    metrics["elapsed_s"] = round(time.perf_counter() - t0, 3)
    obj = np.fft.fftshift(state.rho).astype(np.complex64, copy=False)
    if start is not None and start.handed_over:
        start.rho = start.support = None    # they were this run's arrays: the stage's task list drops them now
    params = options.as_dict()
    params.update(seed=problem.seed, run_index=index, effective_recipe=rcp.format_recipe(problem.steps),
                  support_smooth=problem.info["support_smooth"])
    used = state.psf if state.psf is not None else retired
    if used is not None:                    # the fitted PSF: its width as a metric, the kernel (centred crop)
        params["psf_fit"] = {**used.describe(), "kernel_centred": used.centred_crop().tolist()}
    hist = {k: np.asarray(v, np.float64) for k, v in history.items()}
    return Run(obj=obj, support=np.fft.fftshift(state.support), metrics=metrics, params=params, history=hist)


def final_metrics(state: alg.State, options: Options, noise: float) -> dict[str, Any]:
    """Metrics of the final object (see the module docstring for the formulas)."""
    buf = state.pair.buffer
    buf[...] = state.rho
    state.pair.forward(scale=False)
    n = buf.size
    if state.psf is None:
        m = alg.fourier_metrics(state)
        m["amplitude_misfit"] = amplitude_misfit(buf, state.amp, state.kind, 1.0 / math.sqrt(n))
        alg._modulus(buf.reshape(-1), state.amp.reshape(-1), state.kind.reshape(-1),
                     np.float32(1.0 / np.sqrt(n)), np.float32(1.0 / n))
    else:                                   # partial coherence: every metric of the blurred model
        psf = state.psf
        psf.update_every = 0                # no refinement in the final evaluation
        m = psf.project(buf, state.amp, state.kind, record=True) or {}
        m["amplitude_misfit"] = amplitude_misfit(np.sqrt(np.maximum(psf.model, 0)).astype(np.complex64), state.amp,
                                                 state.kind, 1.0)
        m["psf_fwhm_px"] = psf.fwhm()
    m["noise_fraction"] = noise
    state.pair.inverse(scale=False)
    m["outside_fraction"] = alg.outside_fraction(state, buf)
    buf[...] = state.rho
    m["support_size"] = int(np.count_nonzero(state.support))
    m["iterations"] = state.iteration
    finite = all(math.isfinite(m[k]) for k in ("llk", "chi2", "outside_fraction"))
    # photon noise in P_M rho is spread over the whole array: allow for it, or every low-dose run fails
    limit = options.max_outside + m["noise_fraction"]
    m["failed"] = bool((not finite) or m["outside_fraction"] > limit or m["support_size"] == 0)
    return m


def rank_key(run: Run) -> tuple[int, float]:
    """Sort key of runs, best first: not failed before failed, then free LLK (LLK if no free pixels)."""
    return (1 if run.metrics.get("failed") else 0, _score(run.metrics))


def _worker(problem: Problem, options: Options, index: int, start: Checkpoint | None, stop: int | None,
            report: Callable[[dict[str, Any]], None] | None) -> Run | Checkpoint:
    """One task of a stage (`executor` calling convention: shared problem first, report last)."""
    return run_one(problem, options, index, report, start=start, stop=stop)


def _score(metrics: dict[str, Any]) -> float:
    """Free LLK, or LLK when there are no free pixels, or inf."""
    for key in ("llk_free", "llk"):
        v = metrics.get(key)
        if v is not None and math.isfinite(v):
            return float(v)
    return math.inf


def phase(pattern: Pattern, options: Options, *, support: np.ndarray | None = None, jobs: int = 1,
          keep: int | None = None, on_progress: Callable[[dict[str, Any]], None] | None = None,
          executor: Executor | None = None, problem: Problem | None = None) -> Reconstruction:
    """Run `options.runs` starts and return them best first: the consensus group first (the largest
    set of runs that agree with each other after alignment, `cxdi_cli.consensus`), each group by free
    LLK (`rank_key`), failed runs last. A lone run with a slightly better likelihood never goes before
    a group that agrees; each run records its group and agreement in its metrics.

    Positivity "auto" and guided generations (`options.generations`) run the starts in stages
    (`_stages`). Tasks go to `executor` (`cxdi_cli.executor`: in-process, local processes, Dask), by
    default `executor.choose(jobs)`. `on_progress` receives the run events of `run_one` and, when a
    run ends, {"run", "done": True, "metrics"}. `keep` keeps the best K runs."""
    from cxdi_cli import executor as exe  # noqa: PLC0415 - the executor module loads only when phasing

    if options.runs < 1:
        raise UsageError(f"--runs {options.runs}: at least one run is needed")
    problem = problem or prepare(pattern, options, support)
    own = executor is None
    ex = executor if executor is not None else exe.choose(jobs)
    try:
        given = _given_psf(problem, options)
        estimate = _blur_estimate(problem, options) if given is None else None
        if estimate is not None and (estimate["fwhm"] or 0) >= psfm.BLUR_LADDER[0]:
            given = psfm.PsfSpec("gaussian", float(estimate["fwhm"]), 0.0)
        if given is not None:                 # a known PSF: search the deconvolved data from the start
            runs, info = _deconvolved_pass(pattern, problem, options, given, ex, on_progress, support)
        else:
            runs, info = _stages(problem, options, ex, on_progress)
        if estimate is not None:
            info["blur_estimate"] = estimate
    finally:
        if own:
            ex.close()
    runs.sort(key=lambda r: r.params["run_index"])
    t0 = time.perf_counter()
    ordered, cons = _consensus_order(runs, options)
    info["consensus"] = {**cons, "elapsed_s": round(time.perf_counter() - t0, 3)}
    for rank, run in enumerate(ordered, start=1):
        run.metrics["rank"] = rank
    blur = ordered[0].metrics.get("psf_fwhm_px") if ordered else None
    dec = info.get("deconvolved")
    if dec is not None:
        found = ("estimated from the data" if "blur_estimate" in info else "given")
        info["blurred_data"] = (f"partially coherent data: PSF {dec['psf']} ({found}); the search "
                                f"({dec['recipe']}) ran on the data deconvolved by it, from iteration "
                                f"{dec['handover']} on the measured data with it")
    elif blur is not None and math.isfinite(blur) and blur > BLURRED_DATA_FWHM:
        info["blurred_data"] = (f"the best run's fitted PSF is {blur:.2g} px wide (a pixel's area alone gives about 1): "
                                f"the data look partially coherent, and the coherent search may have stalled")
    if keep is not None:
        ordered = ordered[:max(1, keep)]
    geometry = pattern.geometry
    return Reconstruction(runs=ordered, pixel_size=geometry.real_pixel(problem.shape), geometry=geometry,
                          provenance=list(pattern.provenance),
                          extra={"phase": {"seed": problem.seed, "recipe": rcp.format_recipe(problem.steps),
                                           **{k: v for k, v in problem.info.items() if k != "warnings"},
                                           **info}})


#: A fitted PSF wider than this (FWHM, pixels) in the final refinement of a coherent search says the
#: data may be partially coherent after all: pixel integration alone fits 0.86-0.95 px.
BLURRED_DATA_FWHM = 1.5


def _auto_psf(options: Options) -> bool:
    return options.psf.strip().lower() == "auto"


def _given_psf(problem: Problem, options: Options) -> psfm.PsfSpec | None:
    """The PSF a 2D job's search is deconvolved by from the start: one given as MODEL:FWHM, switched on
    at its default point (the final refinement); None otherwise."""
    if len(problem.shape) != 2 or _auto_psf(options) or options.psf_from is not None:
        return None
    if any(s.name == "psf" for s in rcp.flatten(problem.steps)):
        return None
    spec = psf_start(options.psf)
    return spec if isinstance(spec, psfm.PsfSpec) else None


def _blur_estimate(problem: Problem, options: Options) -> dict[str, Any] | None:
    """`--psf auto` on a 2D pattern it is not vetoed for: the data's own blur (`psf.estimate_blur`),
    decided before any search. A 2-px-blurred pattern reads 1.94 (252^2) and 2.10 px (504^2); the
    coherent family reads "under 1.5". The median width fitted by a coherent search's runs had
    scattered from 1.7 to 3.3 px on the same 504^2 data, and deconvolving by 2.25 px lost every start."""
    if len(problem.shape) != 2 or not _auto_psf(options) or problem.info.get("psf") is None:
        return None
    measured = problem.kind != alg.MASKED
    return psfm.estimate_blur(problem.amp.astype(np.float32) ** 2, measured)


def _best_score(runs: list[Any]) -> float:
    vals = [_score(r.metrics) for r in runs if not r.metrics.get("failed")]
    vals = [v for v in vals if math.isfinite(v)]
    return min(vals) if vals else math.inf


#: The default recipe's HIO search on deconvolved data is the one of a support this many times the
#: initial one: blurred data constrain the object less. 2-px-blurred 504^2 tungsten, 8 starts, seeds
#: 1 and 2: HIO 1220 (the coherent default for its support) converged 0/8 and 8/8.
DECONVOLVED_SEARCH_SCALE = 2


def _deconvolved_pass(pattern: Pattern, problem: Problem, options: Options, spec: psfm.PsfSpec, ex: Executor,
                      on_progress: Callable[[dict[str, Any]], None] | None,
                      support: np.ndarray | None) -> tuple[list[Run], dict[str, Any]]:
    """Partially coherent data: the search (and ER) on the data deconvolved by `spec` (psf.deconvolve);
    from the first `ml` step on, the measured data with the PSF refined (`psf_switch_on`). The free
    pixels are `problem`'s, so free LLKs compare; so are the initial support and the recipe (from the
    measured data's autocorrelation), the deconvolved amplitudes taking the place of its own: the deconvolved data's is 2.5-3.2 times the object
    (its noise amplified at large distances), and from it 0 of 4 starts converged on 2-px-blurred 504^2
    tungsten deconvolved by 2.1 px; from the measured one (1.13 times the object), 3 of 4. The default
    recipe's HIO search is scaled as for a support DECONVOLVED_SEARCH_SCALE times larger.
    Next to a masked region the deconvolved values are poor (the masked light spilled there cannot
    be put back), yet masking a ring of 1.5 FWHM around the masks lost every start of the 2-px-blurred
    256^2 case (8/8 converged without it): the low-q pixels matter more to the search."""
    measured = problem.kind != alg.MASKED
    j = psfm.deconvolve(problem.amp.astype(np.float32) ** 2, measured, spec)
    amp = np.sqrt(j).astype(np.float32)
    amp[~measured] = 0
    coherent = dataclasses.replace(options, psf="off")
    steps, smooth = problem.steps, problem.info["support_smooth"]
    if support is None:
        if options.recipe == DEFAULT_RECIPE:
            steps = parse_recipe(default_recipe_for(DECONVOLVED_SEARCH_SCALE * problem.info["initial_support_size"]))
        # the shrink-wrap blur follows the deconvolved data's autocorrelation extent (larger than the
        # measured one's): with the measured data's, 2-px-blurred 504^2 tungsten seed 1 went 5/8 -> 0/8
        own = prepare(dataclasses.replace(pattern, intensity=np.fft.fftshift(j)),
                      dataclasses.replace(coherent, check_oversampling=False, free_fraction=0.0))
        smooth = own.info["support_smooth"]
    search = dataclasses.replace(problem, amp=amp, steps=steps, n_iterations=count_iterations(steps),
                                 info={**problem.info, "psf": None, "psf_from_iteration": None,
                                       "support_smooth": smooth})
    switch = psf_switch_on(search.steps)
    measured_problem = dataclasses.replace(search, amp=problem.amp, info={**search.info, "psf": str(spec),
                                                                          "psf_from_iteration": switch})
    runs, info = _stages(search, coherent, ex, on_progress,
                         finish=(measured_problem, dataclasses.replace(options, psf=str(spec)), switch))
    info["deconvolved"] = {"psf": str(spec), "iterations": psfm.DECONVOLVE_ITERATIONS, "handover": switch,
                           "initial_support_size": search.info["initial_support_size"],
                           "recipe": rcp.format_recipe(search.steps), "llk_free": _best_score(runs)}
    return runs, info



def _consensus_order(runs: list[Run], options: Options) -> tuple[list[Run], dict[str, Any]]:
    """Runs best first: the consensus group of the usable runs by free LLK, then the other usable runs
    by group (largest first) and free LLK, then the failed ones. Records consensus_* in each run's metrics."""
    from cxdi_cli import consensus as cns  # noqa: PLC0415

    ranked = sorted(runs, key=rank_key)
    usable = [r for r in ranked if not r.metrics.get("failed") and math.isfinite(_score(r.metrics))]
    if not options.consensus or len(usable) < 2:
        return ranked, {"used": False, "compared": len(usable)}
    candidates = cns.score_candidates([_score(r.metrics) for r in usable])
    con = cns.find_consensus([r.obj for r in usable], list(range(len(usable))), threshold=options.agree,
                             supports=[r.support for r in usable], candidates=candidates)
    for i, run in enumerate(usable):
        run.metrics.update(con.run_metrics(i))
    grouped = sorted(range(len(usable)), key=lambda i: (con.labels[i], i))
    ordered = [usable[i] for i in grouped] + [r for r in ranked if all(r is not u for u in usable)]
    return ordered, {"used": True, "compared": len(usable), "size": len(con.group), "threshold": con.threshold,
                     "runs": [usable[i].params["run_index"] for i in con.group]}


def _stages(problem: Problem, options: Options, ex: Executor,
            on_progress: Callable[[dict[str, Any]], None] | None,
            finish: tuple[Problem, Options, int] | None = None) -> tuple[list[Run], dict[str, Any]]:
    """Every start to the end of the recipe, in stages separated by barriers.

    - `finish` (problem, options, iteration): the runs stop at that step boundary and go on to the end
      on that problem with those options (the deconvolved search handing over to the measured data).

    - Guided generations (`options.generations` G > 1): the search iterations (`generations.SEARCH_STEPS`
      at the head of the recipe) end in G generations; at each end every run but the best is replaced
      by its blend with the best (`generations.guide`).
    - Positivity "auto": `_decide_positivity` at the end of the first generation (the search when G = 1).
    Without either, one stage: every run from its start to its end."""
    from cxdi_cli.phasing import generations as gen  # noqa: PLC0415

    total = problem.n_iterations
    search = gen.search_iterations(rcp.flatten(problem.steps), alg.ITERATIVE)
    stops: list[int | None] = list(gen.boundaries(search, options.generations))
    info: dict[str, Any] = {"generations": max(1, options.generations)}
    indices = list(range(options.runs))
    opts = options
    cps: list[Any] = []
    if options.positivity == "auto" and total >= 2:   # every decision point below lies inside the recipe
        decide = stops[0] if stops else (search if 0 < search < total else max(1, (2 * total) // 3))
        opts, cps, text = _decide_positivity(problem, options, ex, decide, on_progress)
        info["positivity"] = text
        if not stops:
            stops = [decide]
    elif options.positivity == "auto":      # no iteration to compare the variants at before the end
        opts = dataclasses.replace(options, positivity=True)
        info["positivity"] = f"auto: on (a recipe of {total} iteration(s) ends before the variants can be compared)"
    stops.append(None if finish is None else finish[2])
    lost: list[dict[str, Any]] = []       # runs whose task failed for good: the others go on

    def go_on(prob: Problem, o: Options, cps: list[Any], stop: int | None) -> list[Any]:
        """Continue the checkpoints to `stop`; runs that already ended (a stop at or past the recipe's
        end: `er**1`) pass through as they are."""
        ended = [cp for cp in cps if not isinstance(cp, Checkpoint)]
        return ended + _map(ex, prob, [(o, cp.index, _hand_over(cp), stop) for cp in cps if isinstance(cp, Checkpoint)],
                            on_progress, lost=lost)

    if not cps:  # the first stage: every start
        cps = _map(ex, problem, [(opts, i, None, stops[0]) for i in indices], on_progress, lost=lost)
    best_runs = []
    for stop in stops[1:]:
        if options.generations > 1 and all(isinstance(cp, Checkpoint) for cp in cps):
            cps, k = gen.guide(cps, options.guide_above)
            best_runs.append(cps[k].index)
        cps = go_on(problem, opts, cps, stop)
    if finish is not None:
        fopts = dataclasses.replace(finish[1], positivity=opts.positivity)
        cps = go_on(finish[0], fopts, cps, None)
    if best_runs:
        info["generation_best_runs"] = best_runs
    if lost:
        info["lost_runs"] = lost
    how = "auto" if options.positivity == "auto" else ("on" if opts.positivity else "off")
    for run in cps:
        run.params["positivity_mode"] = how
        run.params["generations"] = max(1, options.generations)
    return cps, info


def _hand_over(cp: Checkpoint) -> Checkpoint:
    """The checkpoint as the one start of the next stage's task: its run continues on its arrays in place."""
    return dataclasses.replace(cp, handed_over=True)


def _map(ex: Executor, problem: Problem, tasks: list[tuple[Any, ...]],
         on_progress: Callable[[dict[str, Any]], None] | None, offset: int = 0,
         lost: list[dict[str, Any]] | None = None) -> list[Any]:
    """Run one stage's tasks (`_worker` arguments) on the executor; results in task order. A task that
    failed with anything but a CxdiError (after the executor's retries: a lost cluster worker) becomes
    a ComputeError naming it; with a `lost` list, failed runs are left out and named there instead,
    unless every task failed."""
    from cxdi_cli.model import ComputeError  # noqa: PLC0415

    def done(_: int, result: Any) -> None:
        if on_progress is not None and isinstance(result, Run):
            on_progress({"run": result.params["run_index"] + offset, "done": True, "metrics": result.metrics})

    event = None
    if on_progress is not None:
        event = on_progress if not offset else (lambda ev: on_progress({**ev, "run": ev["run"] + offset}))
    out = ex.map(_worker, problem, tasks, on_done=done, on_event=event)
    if out.failures and (lost is None or len(out.failures) == len(tasks)):
        k = min(out.failures)
        raise ComputeError(f"run {tasks[k][1]} failed: {out.describe(k)}") from out.failures[k]
    if lost is not None:
        lost.extend({"run": tasks[k][1], "error": out.describe(k)} for k in sorted(out.failures))
    return out.done()


#: Starts of each variant that positivity "auto" runs to its decision point (the rest run one variant).
AUTO_PROBES = 2
#: Positivity goes off only when the best start without it has a free LLK below this share of the best
#: with it. Measured at the end of the search (iteration 600, best of 2 probes each): a 128^2 specimen
#: of +-2.5 rad phase 87 vs 1343 (0.065); nearly real ones (+-0.2 rad) 4.2 vs 6.1 (0.69) when both
#: variants converged, 931 vs 15 when the unconstrained starts stalled; +-1.2 rad 1149 vs 5.0;
#: tungsten with the gap cross through the beam 146 vs 231 (0.63), the hard tungsten 190 vs 17.
#: 0.3 sits between the real (>= 0.6) and the strongly phased (< 0.1) cases on a log scale.
AUTO_MARGIN = 0.3


def _decide_positivity(problem: Problem, options: Options, ex: Executor, stop: int,
                       on_progress: Callable[[dict[str, Any]], None] | None) -> tuple[Options, list[Any], str]:
    """Positivity "auto", decided early and never by an absolute threshold.

    Every start runs with positivity to iteration `stop` (the end of the search stage), and the first
    `AUTO_PROBES` starts also without it; the variants are compared against each other by the free LLK
    of their objects (restricted to the support) there. Positivity stays on unless the best probe
    without it fits clearly better than the best of all the starts with it (free LLK below
    `AUTO_MARGIN` = 0.3 of it): a specimen whose phase varies by more than about a radian cannot be
    fitted with positivity from any start (free LLK many times higher), while a nearly real specimen
    fits as well or better with it from its best start; comparing with the best of every start keeps
    two unlucky positivity starts from turning it off. Partial coherence and processed data raise
    both variants' misfit alike, so the comparison holds where an absolute misfit threshold would
    switch positivity off. The losing variant's runs stop at `stop` (when positivity loses, the other
    starts run again without it up to `stop`). Returns (options of the winner, its checkpoints at
    `stop` for every start, the decision in words)."""
    probes = list(range(min(options.runs, AUTO_PROBES)))
    on, off = dataclasses.replace(options, positivity=True), dataclasses.replace(options, positivity=False)
    cps_on = _map(ex, problem, [(on, i, None, stop) for i in range(options.runs)], on_progress)
    cps_off = _map(ex, problem, [(off, i, None, stop) for i in probes], on_progress, offset=options.runs)
    best_on = min(_score(cp.metrics) for cp in cps_on)
    best_off = min(_score(cp.metrics) for cp in cps_off)
    use_off = best_off < AUTO_MARGIN * best_on
    opts, cps = (on, cps_on)
    if use_off:
        rest = [i for i in range(options.runs) if i not in probes]
        opts, cps = off, list(cps_off) + (_map(ex, problem, [(off, i, None, stop) for i in rest], on_progress)
                                         if rest else [])
    what = "off" if use_off else "on"
    text = (f"auto: {what} (free LLK at iteration {stop}: best of {len(cps_on)} start(s) with positivity "
            f"{best_on:.4g}, best of {len(probes)} without {best_off:.4g})")
    return opts, cps, text
