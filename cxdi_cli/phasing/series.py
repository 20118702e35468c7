"""Phase a time-resolved series of 2D patterns frame by frame, each frame warm-started from the last.

1. The reference: the frames summed (`Series.summed`) phased with the normal `runs.phase` (every
   option, many starts, positivity auto decided there).
2. Frame 0 starts from the reference's best object and support, frame k from frame k-1's: the object
   (put on the frame's photon scale) and its support grown by `dilate` pixels (a growing feature must
   be able to leave the old support; shrink-wrap tightens it again) are a `runs.Checkpoint` at the start
   of a short recipe (`WARM_RECIPE`), continued by `runs.run_one(start=...)` on the frame's data.
   With `warm=False` every frame is phased cold instead (random start, autocorrelation support, the
   full recipe): the baseline the warm starts are measured against.

The result is one `Reconstruction` whose runs are the frames in time order (entry k + 1 = frame k with
one chain; with `chains` C, entries C k + 1 ... C k + C are frame k's runs, chain 0 first:
DESIGN §3's one entry per run, each entry's process group holding that frame's metrics and
parameters, `frame_index` and `time_s` among them); the reference's best object and support travel in
`arrays` (`/entry_1/reference`, `/entry_1/reference_support`) and the series summary in
`extra["series"]`. The per-frame metrics add `iterations_to_converge`: the first recorded iteration
whose llk is within `CONVERGED` (relative) of the run's final llk.

Why a Checkpoint at the head of a short recipe, and which (`tests/bench_series.py`: 128^2 frames of
`cxdi simulate series --size 160 --seed 1`, 1e8 photons in the first frame, the reference from 4
starts, one run per frame):
- the warm start is the previous frame's object on its support, run through the whole `run_one`
  loop (shrink-wrap, positivity, metrics, history) from iteration 0 of a short recipe: the same code
  as every other run, not a copy of the loop; continuing the previous frame's own checkpoint would
  restart its schedules at their end (shrink-wrap sigma, PSF).
- recipe, 8 frames: ``er**100,ml**50`` NRMSE 0.103-0.163 (ER stalls on some frames: 0.27 on frame 1
  of a 5-frame run); ``hio**50,er**100,ml**50`` 0.108-0.133; ``hio**100,...`` 0.106-0.139;
  ``raar**50,er**100,ml**50`` 0.103-0.126, the default. Support growth (`dilate`) 0, 2, 4 px: 0.101-0.133,
  0.103-0.126, 0.107-0.129: no clear effect with RAAR's free outside; 2 kept for faster growth.
- 20 frames (disc 0 to 6.4 px radius): warm NRMSE 0.102-0.130 (median 0.117) against cold (the full
  default recipe from a random start per frame) 0.10-0.14 with one frame lost (0.85); the llk that
  both reach ((1 + CONVERGED) x the higher final llk) after 155 iterations warm (120 on one frame)
  against 805-810 cold: 5.2x fewer (4.6-7.3x on other seeds and sizes). The whole series took 1.8 s
  warm and 5.0 s cold on one thread. 256^2 frames (`--size 320`): warm 0.062-0.075 (median 0.069),
  cold median 0.078 with 2 of 20 frames lost (0.76, 1.0); 5.3x fewer iterations (median; 4.0 the
  least); 12.8 s warm, 31.3 s cold.
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from cxdi_cli.model import DataError, Reconstruction, Run, UsageError
from cxdi_cli.phasing import runs as rn

if TYPE_CHECKING:
    from cxdi_cli.executor import Executor
    from cxdi_cli.io.series import Series

#: The recipe of a warm-started frame: a short RAAR block lets the object leave the old support, ER and
#: ML settle it (measured on the bench, module docstring).
WARM_RECIPE = "raar**50,er**100,ml**50"
#: Pixels the previous frame's support grows by before it constrains the next frame.
WARM_DILATE = 2
#: A run has converged at the first recorded iteration whose llk is within this fraction of its final llk.
CONVERGED = 0.05
#: The history period of the frames (iterations): the convergence iteration is known to this step.
FRAME_RECORD_EVERY = 5


@dataclasses.dataclass
class SeriesResult:
    """The frames' reconstruction (runs in time order) and the reference (all its runs, best first)."""

    frames: Reconstruction
    reference: Reconstruction


def iterations_to(history: dict[str, Any], target: float) -> int | None:
    """The first recorded iteration at which the run's llk is at or below `target` (None: never)."""
    its = np.asarray(history.get("iteration", []), float)
    llk = np.asarray(history.get("llk", []), float)
    hit = np.flatnonzero(np.isfinite(llk) & (llk <= target))
    return int(its[hit[0]]) if hit.size else None


def converged_at(run: Run, tolerance: float = CONVERGED) -> int:
    """The first recorded iteration whose llk is within `tolerance` of the run's final llk (the final
    iteration when the history never gets there)."""
    final = float(run.metrics.get("llk", math.nan))
    end = int(run.metrics.get("iterations", 0))
    if not math.isfinite(final):
        return end
    k = iterations_to(run.history, final * (1.0 + tolerance) + 1e-12)
    return end if k is None else min(k, end)


def grow(support: np.ndarray, pixels: int) -> np.ndarray:
    """`support` dilated by a disc of `pixels` radius (0: unchanged)."""
    if pixels <= 0:
        return np.asarray(support, bool)
    from scipy.ndimage import binary_dilation  # noqa: PLC0415

    r = int(pixels)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return binary_dilation(np.asarray(support, bool), structure=(yy * yy + xx * xx) <= r * r)


def _photons(pattern: Any) -> float:
    meas = pattern.measured
    return float(np.sum(pattern.intensity[meas], dtype=np.float64))


def warm_frame(pattern: Any, options: rn.Options, obj: np.ndarray, support: np.ndarray, index: int, *,
               scale: float = 1.0, dilate: int = WARM_DILATE,
               report: Callable[[dict[str, Any]], None] | None = None) -> Run:
    """Phase one frame from a previous object (centred) and its support: `options.recipe` run from a
    Checkpoint holding `obj` x `scale` on `support` grown by `dilate` pixels."""
    sup = grow(support, dilate)
    if sup.shape != pattern.intensity.shape:
        raise DataError(f"{pattern.source}: frame shape {pattern.intensity.shape} differs from the previous "
                        f"object's {sup.shape}")
    problem = rn.prepare(pattern, options, sup)
    rho = np.fft.ifftshift(np.asarray(obj, np.complex64) * np.complex64(scale)) * problem.support
    start = rn.Checkpoint(index=index, iteration=0, position=(0, 0), rho=rho.astype(np.complex64),
                          support=problem.support.copy(), metrics={},
                          history={k: [] for k in ("iteration", "llk", "llk_free", "chi2", "support_size",
                                                   "outside_fraction")})
    run = rn.run_one(problem, options, index, report, start=start)
    assert isinstance(run, Run)
    return run


def cold_frame(pattern: Any, options: rn.Options, index: int,
               report: Callable[[dict[str, Any]], None] | None = None) -> Run:
    """Phase one frame from a random start (seeded by the frame index) and the autocorrelation support."""
    problem = rn.prepare(pattern, options)
    run = rn.run_one(problem, options, index, report)
    assert isinstance(run, Run)
    return run


def phase_series(series: Series, options: rn.Options, *, warm: bool = True, warm_recipe: str = WARM_RECIPE,
                 dilate: int = WARM_DILATE, chains: int = 1, support: np.ndarray | None = None, jobs: int = 1,
                 executor: Executor | None = None,
                 on_progress: Callable[[dict[str, Any]], None] | None = None) -> SeriesResult:
    """Phase every frame of `series` in time order (module docstring). `options` are those of the
    reference (`options.runs` starts on the summed frames, from `support` (centred) when given); the
    frames run `chains` starts each, with the positivity the reference decided, `warm_recipe` when warm
    (else `options.recipe`): chain j starts from the reference's j-th usable run and follows its own
    previous frame, so a frame's runs are as independent as the reference's starts (what a per-frame
    PRTF needs); the runs are written frame by frame, chain 0 first. `on_progress` receives the
    reference's events as `runs.phase` sends them with "stage": "reference", then each frame's events
    with "stage": "frame", "frame": k and "chain": j (and a "done" event per frame and chain)."""
    from cxdi_cli.io.series import check_series  # noqa: PLC0415

    check_series(series)
    if dilate < 0:
        raise UsageError(f"warm support growth {dilate}: must be 0 or more pixels")
    if chains < 1:
        raise UsageError(f"--frame-runs {chains}: at least one run per frame")
    rn.parse_recipe(warm_recipe)
    tag = (lambda extra: (lambda ev: on_progress({**ev, **extra}))) if on_progress is not None else (lambda extra: None)
    reference = rn.phase(series.summed(), options, support=support, jobs=jobs, executor=executor,
                         on_progress=tag({"stage": "reference"}))
    best = reference.runs[0]
    positivity = best.params.get("positivity", options.positivity)
    frame_opts = dataclasses.replace(options, runs=1, positivity=bool(positivity) if positivity != "auto" else True,
                                     recipe=warm_recipe if warm else options.recipe,
                                     record_every=min(options.record_every, FRAME_RECORD_EVERY))
    usable = [r for r in reference.runs if not r.metrics.get("failed")] or reference.runs[:1]
    seeds = [usable[j % len(usable)] for j in range(chains)]     # chain j starts from reference run j
    summed = _photons(series.summed())
    last = [(r.obj, r.support, summed) for r in seeds]             # each chain's previous frame
    out: list[Run] = []
    for k in range(len(series)):
        pattern = series.frame(k)
        photons = _photons(pattern)
        for j in range(chains):
            report = tag({"stage": "frame", "frame": k, "chain": j})
            index = k * chains + j
            if warm:
                obj, sup, before = last[j]
                run = warm_frame(pattern, frame_opts, obj, sup, index, scale=math.sqrt(photons / before),
                                 dilate=dilate, report=report)
                started = f"reference run {seeds[j].params.get('run_index', j)}" if k == 0 else f"frame {k - 1}"
            else:
                run = cold_frame(pattern, frame_opts, index, report=report)
                started = "cold"
            run.params.update(frame_index=k, chain=j, time_s=float(series.time[k]), start=started,
                              warm_dilate_px=dilate if warm else None)
            run.metrics["iterations_to_converge"] = converged_at(run)
            run.metrics["frame_photons"] = photons
            out.append(run)
            if on_progress is not None:
                on_progress({"stage": "frame", "frame": k, "chain": j, "run": index, "done": True,
                             "metrics": run.metrics})
            if warm and not run.metrics.get("failed"):      # a failed frame does not seed the chain's next
                last[j] = (run.obj, run.support, photons)
    first = [r for r in out if r.params["chain"] == 0]
    geometry = series.geometry
    shape = tuple(series.intensity.shape[1:])
    summary = {
        "frames": len(series), "time_s": [float(t) for t in series.time], "warm": warm,
        "frame_recipe": frame_opts.recipe, "warm_dilate_px": dilate if warm else None,
        "positivity": frame_opts.positivity, "reference_positivity": reference.extra.get("phase", {}).get("positivity"),
        "reference_llk_free": best.metrics.get("llk_free"), "reference_runs": len(reference.runs),
        "chains": chains, "llk_free": [r.metrics.get("llk_free") for r in first],
        "iterations_to_converge": [r.metrics["iterations_to_converge"] for r in first],
        "failed_frames": sorted({r.params["frame_index"] for r in out if r.metrics.get("failed")}),
    }
    frames = Reconstruction(runs=out, pixel_size=geometry.real_pixel(shape), geometry=geometry,
                            provenance=list(series.provenance), extra={"series": summary},
                            arrays={"reference": best.obj.astype(np.complex64),
                                    "reference_support": best.support.astype(np.uint8)})
    return SeriesResult(frames=frames, reference=reference)

