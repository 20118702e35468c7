"""Phase retrieval runs: preparation of the data, random starts, the recipe loop, metrics, many runs.

A run is an independent task `run_one(problem, options, index, report)`: a pure function of the
prepared problem, the options and the run index (its random numbers come from
`SeedSequence([seed, index])`), so runs can go to any executor (local processes now, a cluster
engine later) and the same seed gives the same runs whatever the executor.

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
  varies by more than about a radian cannot be fitted with it (0.73 against 0.045 without), so when
  even the best run's amplitude misfit exceeds 0.012 the same starts run again without it and the
  best runs of both sets are kept (real-valued specimens fit to 0.0004-0.007, stuck runs 0.016-0.2).
- shrink-wrap never shrinks the support below 1/(4 * 2^N) of the initial autocorrelation support
  (a collapse onto a bright speck, seen on 256-pixel data, is refused).
At linear oversampling below about 3, a higher threshold (``--support-threshold 0.2``) is safer.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import math
import time
from typing import Any, Callable

import numpy as np

from cxdi_cli.phasing import algorithms as alg
from cxdi_cli import fft
from cxdi_cli.phasing import recipe as rcp, support as sup
from cxdi_cli.phasing import regularise  # noqa: F401 - registers gps, tv, cpower, oss in alg.STEPS
from cxdi_cli.sampling import estimate_oversampling
from cxdi_cli.model import DataError, Pattern, Reconstruction, Run, UsageError
from cxdi_cli.phasing.defaults import DEFAULT_RECIPE


@dataclasses.dataclass
class Options:
    """Every parameter of a phasing job; `as_dict()` is what goes into each run's parameters."""

    recipe: str = DEFAULT_RECIPE
    runs: int = 5
    seed: int | None = None
    positivity: bool | str = "auto"       # True, False, or "auto": on, and off again if it cannot fit
    auto_misfit: float = 0.012                # "auto": the excess amplitude misfit that turns it off
    amplitude_bound: float | None = None
    support_threshold: tuple[float, float] = (0.12, 0.1)  # shrink-wrap threshold (of the max), start -> end
    support_smooth: tuple[float, float] | None = None  # shrink-wrap Gaussian sigma, start -> end (pixels);
    # None: (max(1, object extent / 40), 0.5), the extent (pixels) estimated from the initial support
    support_update: int = 20                  # shrink-wrap period (iterations); 0: only `sup` steps
    support_min_fraction: float | None = None  # shrink-wrap never goes below this fraction of the
    # initial support (None: 1/(4 * 2^N) of an autocorrelation support, which spans 2^N times the
    # object, or 1/4 of a given support): a collapse onto a bright speck is refused
    autocorrelation_threshold: float = 0.05   # initial support: autocorrelation > this * max
    autocorrelation_smooth: float = 1.0       # Gaussian sigma (pixels) on the autocorrelation
    free_fraction: float = 0.05               # measured pixels withheld for the free log-likelihood
    free_island: int = 3                      # free islands are cubes of this many pixels across
    record_every: int = 10                    # history every k iterations
    report_every: int = 50                    # progress callback every k iterations
    max_outside: float = 0.1                  # failed run: more than this fraction off the support
    threads: int | None = None                # FFT threads per run
    check_oversampling: bool = True

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["support_smooth"] = None if self.support_smooth is None else list(_pair(self.support_smooth))
        d["support_threshold"] = list(_pair(self.support_threshold))
        return d


def _pair(v: Any) -> tuple[float, float]:
    """A (start, end) schedule from a number or a pair."""
    if isinstance(v, (int, float)):
        return (float(v), float(v))
    a, b = v
    return (float(a), float(b))


@dataclasses.dataclass
class Problem:
    """The prepared data of a phasing job (FFT order), shared read-only by every run."""

    amp: np.ndarray              # float32 sqrt(photons), 0 where not measured
    kind: np.ndarray             # int8 alg.MASKED / MEASURED / FREE
    support: np.ndarray | None   # bool initial support (None: from the autocorrelation)
    shape: tuple[int, ...]
    seed: int
    steps: tuple[rcp.Item, ...]
    n_iterations: int
    info: dict[str, Any]


def parse_recipe(text: str) -> tuple[rcp.Item, ...]:
    """Parse a recipe against the registered steps (UsageError with the valid names otherwise)."""
    items = rcp.parse(text, alg.step_parameters())
    if not any(s.name in alg.ITERATIVE for s in rcp.flatten(items)):
        raise UsageError(f"recipe {text!r}: no iterative step (one of {', '.join(sorted(alg.ITERATIVE))})")
    return items


def count_iterations(items: tuple[rcp.Item, ...]) -> int:
    """Iterations (FFT-pair steps) of a parsed recipe."""
    return sum(s.count for s in rcp.flatten(items) if s.name in alg.ITERATIVE)


def _free_islands(kind: np.ndarray, centre_radius: float, fraction: float, island: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Mark about `fraction` of the measured pixels FREE, in cubes `island` pixels across, with their
    centro-symmetric mates, none within `centre_radius` pixels of q = 0 (arrays in FFT order)."""
    shape = kind.shape
    measured = kind == alg.MEASURED
    n_meas = int(np.count_nonzero(measured))
    target = fraction * n_meas
    if target < 1:
        return kind
    freqs = np.meshgrid(*[np.fft.fftfreq(n, 1.0 / n) for n in shape], indexing="ij")
    radius = np.sqrt(sum(f.astype(np.float32) ** 2 for f in freqs))
    candidates = np.flatnonzero(measured & (radius > centre_radius))
    if candidates.size == 0:
        return kind
    free = np.zeros(shape, bool)
    half = island // 2
    offsets = np.stack(np.meshgrid(*[np.arange(-half, island - half)] * len(shape), indexing="ij"), -1)
    offsets = offsets.reshape(-1, len(shape))
    order = rng.permutation(candidates)
    count = 0
    for flat in order:
        if count >= target:
            break
        c = np.array(np.unravel_index(flat, shape))
        for sign in (1, -1):
            pts = tuple((((sign * c)[None, :] + offsets) % np.array(shape)).T)
            ok = measured[pts] & ~free[pts] & (radius[pts] > centre_radius)
            free[tuple(p[ok] for p in pts)] = True
            count += int(np.count_nonzero(ok))
    kind = kind.copy()
    kind[free] = alg.FREE
    return kind


def prepare(pattern: Pattern, options: Options, support: np.ndarray | None = None) -> Problem:
    """Check the data, move them to FFT order (once), choose the free pixels and the initial support.

    `support` (centred, bool) replaces the autocorrelation support. Raises DataError on data that
    cannot be phased (nothing measured, NaNs, a support larger than half the array, an oversampling
    below 2^(1/N)) and UsageError on a bad recipe."""
    src = pattern.source or "input"
    steps = parse_recipe(options.recipe)
    data = np.asarray(pattern.intensity, np.float32)
    if data.ndim not in (2, 3):
        raise DataError(f"{src}: a {data.ndim}-D array; phase retrieval needs a 2D pattern or a 3D volume")
    measured = pattern.measured
    if measured.shape != data.shape:
        raise DataError(f"{src}: mask shape {measured.shape} differs from the data {data.shape}")
    if not np.any(measured):
        raise DataError(f"{src}: every pixel is masked: nothing to phase")
    if not np.all(np.isfinite(data[measured])):
        raise DataError(f"{src}: measured pixels hold NaN or infinite values")
    if not np.any(data[measured] > 0):
        raise DataError(f"{src}: no measured pixel holds any photon: nothing to phase")
    info: dict[str, Any] = {"shape": list(data.shape), "warnings": []}
    unfriendly = [n for n in data.shape if fft.good_size(n) != n]
    if unfriendly:
        info["warnings"].append(f"array size {data.shape} is not FFT-friendly (2^a 3^b 5^c 7^d): slower FFTs")
    if options.check_oversampling:
        sigma = estimate_oversampling(data, measured)
        info["oversampling_estimate"] = sigma
        if sigma is not None and sigma < 2 ** (1.0 / data.ndim):
            raise DataError(f"{src}: linear oversampling about {sigma:.2f} (from the speckle correlation), below "
                            f"2^(1/{data.ndim}) = {2 ** (1.0 / data.ndim):.2f}: this pattern cannot be phased")
    seed = options.seed if options.seed is not None else int(np.random.SeedSequence().entropy % (2 ** 63))
    meas_f = np.fft.ifftshift(measured)
    data_f = np.fft.ifftshift(np.where(measured, np.maximum(data, 0), 0)).astype(np.float32)
    kind = np.where(meas_f, alg.MEASURED, alg.MASKED).astype(np.int8)
    if support is not None:
        support = np.asarray(support).astype(bool)
        if support.shape != data.shape:
            raise DataError(f"support shape {support.shape} differs from the data {data.shape}")
        support_f = np.fft.ifftshift(support)
        sup.support_size_check(support_f, "the given support")
        info["support_from"] = "file"
    else:
        support_f = sup.autocorrelation_support(data_f, meas_f, threshold=options.autocorrelation_threshold,
                                                sigma=options.autocorrelation_smooth)
        info["support_from"] = "autocorrelation"
    info["initial_support_size"] = int(np.count_nonzero(support_f))
    # central speckle: about (array size / object extent) pixels across; object extent from the
    # support (the autocorrelation spans twice the object)
    extents = []
    for ax in range(data.ndim):
        prof = np.any(support_f, axis=tuple(a for a in range(data.ndim) if a != ax))
        extents.append(max(1, int(np.count_nonzero(prof))) / (2.0 if support is None else 1.0))
    centre_radius = max(3.0, 1.5 * max(n / e for n, e in zip(data.shape, extents)))
    info["object_extent_px"] = max(extents)
    info["support_smooth"] = list(_pair(options.support_smooth)) if options.support_smooth is not None \
        else [round(max(1.0, max(extents) / 40.0), 2), 0.5]
    info["free_exclusion_radius_px"] = centre_radius
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2 ** 31 - 1]))
    if options.free_fraction > 0:
        kind = _free_islands(kind, centre_radius, options.free_fraction, options.free_island, rng)
    info["measured_pixels"] = int(np.count_nonzero(kind != alg.MASKED))
    info["free_pixels"] = int(np.count_nonzero(kind == alg.FREE))
    amp = np.sqrt(data_f).astype(np.float32)
    amp[kind == alg.MASKED] = 0
    info["noise_fraction"] = noise_fraction(amp, kind)  # a property of the data: once, not per run
    return Problem(amp=amp, kind=kind, support=support_f, shape=tuple(data.shape), seed=seed, steps=steps,
                   n_iterations=count_iterations(steps), info=info)


def run_seed(seed: int, index: int) -> np.random.SeedSequence:
    """The seed sequence of run `index` of a job seeded with `seed`."""
    return np.random.SeedSequence([int(seed), int(index)])


def run_one(problem: Problem, options: Options, index: int,
            report: Callable[[dict[str, Any]], None] | None = None) -> Run:
    """One run from a random start: random phases on the measured amplitudes, the initial support.

    `report` receives a progress event every `options.report_every` iterations (run, iteration,
    total, algorithm, llk, llk_free, chi2, support_size, elapsed_s, eta_s). Returns a centred Run."""
    if options.threads is not None:
        fft.set_threads(options.threads)
    rng = np.random.default_rng(run_seed(problem.seed, index))
    shape = problem.shape
    pair = fft.FFTPair(shape)
    buf = pair.buffer
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
    history: dict[str, list[float]] = {k: [] for k in ("iteration", "llk", "llk_free", "chi2", "support_size",
                                                         "outside_fraction")}
    t0 = time.perf_counter()
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
        from_file = problem.info.get("support_from") == "file"
        min_fraction = 0.25 if from_file else 0.25 / 2 ** len(shape)
    state = alg.State(pair=pair, rho=rho, amp=problem.amp, kind=problem.kind, support=support,
                      positivity=options.positivity is not False, amplitude_bound=options.amplitude_bound,
                      support_update=options.support_update, support_threshold=_pair(options.support_threshold),
                      support_smooth=_pair(problem.info["support_smooth"]), support_min_fraction=min_fraction,
                      total=total, record_every=options.record_every, on_record=on_record,
                      initial_support_size=int(np.count_nonzero(support)))
    state.report_every = options.report_every if report is not None else 0   # history keeps its own period
    for step in rcp.flatten(problem.steps):
        fn = alg.build(step.name, dict(step.params))
        for _ in range(step.count):
            fn(state)
    state.ml.clear()                          # free the ML work arrays before the output copy
    metrics = final_metrics(state, options, problem.info["noise_fraction"])
    metrics["elapsed_s"] = round(time.perf_counter() - t0, 3)
    obj = np.fft.fftshift(state.rho).astype(np.complex64)
    params = options.as_dict()
    params.update(seed=problem.seed, run_index=index, effective_recipe=rcp.format_recipe(problem.steps),
                  support_smooth=problem.info["support_smooth"])
    hist = {k: np.asarray(v, np.float64) for k, v in history.items()}
    return Run(obj=obj, support=np.fft.fftshift(state.support), metrics=metrics, params=params, history=hist)


def final_metrics(state: alg.State, options: Options, noise: float) -> dict[str, Any]:
    """Metrics of the final object (see the module docstring for the formulas)."""
    buf = state.pair.buffer
    buf[...] = state.rho
    state.pair.forward(scale=False)
    m = alg.fourier_metrics(state)
    n = buf.size
    m["amplitude_misfit"] = amplitude_misfit(buf, state.amp, state.kind, 1.0 / math.sqrt(n))
    m["noise_fraction"] = noise
    alg._modulus(buf.reshape(-1), state.amp.reshape(-1), state.kind.reshape(-1),
                 np.float32(1.0 / np.sqrt(n)), np.float32(1.0 / n))
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


@functools.lru_cache(maxsize=1)
def _sqrt_poisson_table() -> tuple[np.ndarray, np.ndarray]:
    """d(lam) = sqrt(lam) - E[sqrt(k)] for k ~ Poisson(lam), on a log grid of lam (1e-4 .. 1e6).

    The difference is tabulated (not E[sqrt(k)] itself) because it is small and smooth, so linear
    interpolation keeps its relative accuracy where sqrt(lam) is large."""
    lam = np.logspace(-4, 6, 401)
    mean = np.empty_like(lam)
    for j, m in enumerate(lam):
        if m > 400:  # large-mean expansion, exact to < 1e-9 there
            mean[j] = math.sqrt(m) * (1 - 1 / (8 * m) - 7 / (128 * m * m))
            continue
        k = np.arange(0, int(m + 12 * math.sqrt(m) + 30))
        logp = k * math.log(m) - m - np.array([math.lgamma(x + 1) for x in k])
        mean[j] = float(np.sum(np.sqrt(k) * np.exp(logp)))
    return lam, np.sqrt(lam) - mean


def amplitude_misfit(transform: np.ndarray, amp: np.ndarray, kind: np.ndarray, scale: float) -> float:
    """Amplitude misfit over the constrained measured pixels beyond what photon noise explains.

    (sum (|F rho| - sqrt(k))^2 - sum E[(|F rho| - sqrt(k))^2]) / sum k, the expectation taken for
    k ~ Poisson(|F rho|^2): 2 lam - 2 sqrt(lam) E[sqrt(k)] = 2 sqrt(lam) d(lam). About 0 for a model that fits the data
    to the noise, at any dose; a few percent for a run stuck away from any solution. `transform` is
    the unscaled forward transform (times `scale` gives F rho)."""
    measured = kind == alg.MEASURED
    f = np.abs(transform[measured]).astype(np.float64) * scale
    a = amp[measured].astype(np.float64)
    total = float(np.sum(a * a))
    if total <= 0:
        return math.nan
    lam = f * f
    grid, diff = _sqrt_poisson_table()
    d = np.interp(np.log(np.maximum(lam, grid[0])), np.log(grid), diff)
    d = np.where(lam < grid[0], f - lam, d)  # E[sqrt k] ~ lam for a vanishing mean
    expected = 2 * f * d
    return float((np.sum((f - a) ** 2) - np.sum(expected)) / total)


def noise_fraction(amp: np.ndarray, kind: np.ndarray) -> float:
    """Share of the measured amplitudes' power that is photon noise: sum v(I) / sum I, v(I) = I/(1+4I)."""
    a = amp[kind == alg.MEASURED].astype(np.float64)
    i = a * a
    total = float(i.sum())
    return float(np.sum(i / (1 + 4 * i)) / total) if total > 0 else 0.0


def rank_key(run: Run) -> tuple[int, float]:
    """Sort key of runs, best first: not failed before failed, then free LLK (LLK if no free pixels)."""
    m = run.metrics
    score = m.get("llk_free")
    if score is None or not math.isfinite(score):
        score = m.get("llk", math.inf)
    if score is None or not math.isfinite(score):
        score = math.inf
    return (1 if m.get("failed") else 0, float(score))


def _worker(problem: Problem, options: Options, index: int, queue: Any) -> Run:
    report = (lambda ev: queue.put(ev)) if queue is not None else None
    return run_one(problem, options, index, report)


def phase(pattern: Pattern, options: Options, *, support: np.ndarray | None = None, jobs: int = 1,
          keep: int | None = None, on_progress: Callable[[dict[str, Any]], None] | None = None,
          executor: cf.Executor | None = None, problem: Problem | None = None) -> Reconstruction:
    """Run `options.runs` independent starts and return them best first (see `rank_key`).

    `jobs` > 1 runs them in that many local processes (each FFT on `options.threads` threads), unless
    an `executor` is given. `on_progress` receives the run events of `run_one` and, when a run ends,
    {"run", "done": True, "metrics"}. `keep` keeps the best K runs."""
    if options.runs < 1:
        raise UsageError(f"--runs {options.runs}: at least one run is needed")
    problem = problem or prepare(pattern, options, support)
    if options.positivity == "auto":
        return _phase_auto_positivity(pattern, options, support=support, jobs=jobs, keep=keep,
                                      on_progress=on_progress, executor=executor, problem=problem)
    runs: list[Run] = []

    def done(run: Run) -> None:
        runs.append(run)
        if on_progress is not None:
            on_progress({"run": run.params["run_index"], "done": True, "metrics": run.metrics})

    if executor is None and jobs <= 1:
        for k in range(options.runs):
            done(run_one(problem, options, k, on_progress))
    else:
        import multiprocessing as mp  # noqa: PLC0415

        ctx = mp.get_context("spawn")  # FFTW's thread pool does not survive fork()
        manager = ctx.Manager() if on_progress is not None else None
        queue = manager.Queue() if manager is not None else None
        own = executor is None
        ex = executor or cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)
        try:
            futures = [ex.submit(_worker, problem, options, k, queue) for k in range(options.runs)]
            pending = set(futures)
            while pending:
                finished, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
                _drain(queue, on_progress)
                for fut in finished:
                    done(fut.result())
            _drain(queue, on_progress)
        finally:
            if own:
                ex.shutdown(cancel_futures=True)
            if manager is not None:
                manager.shutdown()
    runs.sort(key=lambda r: r.params["run_index"])
    ordered = sorted(runs, key=rank_key)
    for rank, run in enumerate(ordered, start=1):
        run.metrics["rank"] = rank
    if keep is not None:
        ordered = ordered[:max(1, keep)]
    geometry = pattern.geometry
    return Reconstruction(runs=ordered, pixel_size=geometry.real_pixel(problem.shape), geometry=geometry,
                          provenance=list(pattern.provenance),
                          extra={"phase": {"seed": problem.seed, "recipe": rcp.format_recipe(problem.steps),
                                           **{k: v for k, v in problem.info.items() if k != "warnings"}}})


def _phase_auto_positivity(pattern: Pattern, options: Options, **kw: Any) -> Reconstruction:
    """Positivity "auto": run with positivity; if even the best run cannot fit the data with it (excess
    amplitude misfit above `options.auto_misfit`, as for specimens whose phase varies by more than
    about a radian), run the same starts without it and keep the best runs of both sets by free LLK.

    Measured on simulated data: converged runs of real-valued specimens (tungsten, cells, the 3D
    particle) have a misfit of 0.0004-0.008; positivity-constrained runs of a specimen with +-1.2 or
    +-2.5 rad phase variations stall at 0.016-0.05, where the unconstrained runs reach 0.04 NRMS."""
    first = phase(pattern, dataclasses.replace(options, positivity=True), **kw)
    best = first.runs[0].metrics.get("amplitude_misfit", math.nan)
    if not (best > options.auto_misfit):
        first.extra["phase"]["positivity"] = f"auto: on (best amplitude misfit {best:.3g})"
        return _mark_positivity(first, "auto: on")
    report = kw.get("on_progress")
    if report is not None:  # second pass: runs numbered on from the first, so progress never goes back
        kw["on_progress"] = lambda ev: report({**ev, "run": ev["run"] + options.runs, "positivity": False})
    second = phase(pattern, dataclasses.replace(options, positivity=False), **kw)
    runs = sorted(first.runs + second.runs, key=rank_key)[: len(first.runs)]
    for rank, run in enumerate(runs, start=1):
        run.metrics["rank"] = rank
    used = sum(1 for r in runs if r.params.get("positivity") is False)
    first.runs = _mark_positivity(Reconstruction(runs=runs), "auto").runs
    first.extra["phase"]["positivity"] = (f"auto: off for {used} of {len(runs)} kept runs (with positivity "
                                          f"the best amplitude misfit was {best:.3g} > {options.auto_misfit})")
    return first


def _mark_positivity(rec: Reconstruction, how: str) -> Reconstruction:
    for run in rec.runs:
        run.params["positivity_mode"] = how
    return rec


def _drain(queue: Any, on_progress: Callable[[dict[str, Any]], None] | None) -> None:
    if queue is None or on_progress is None:
        return
    import queue as q  # noqa: PLC0415

    while True:
        try:
            on_progress(queue.get_nowait())
        except q.Empty:
            return
