"""Guided generations (guided HIO; Chen, Miao, Wang & Lee 2007, Phys. Rev. B 76, 064113).

The iterations of the search (the HIO/RAAR steps at the head of the recipe) are split into G
generations. At the end of each generation every run is replaced by a blend of itself and the best run
of that generation, then continues: the runs are pulled towards the best basin while keeping part of
their own diversity. The best run is the one with the lowest free log-likelihood of its object
restricted to its support (a HIO iterate off the support is not an object).

The blend of a run a with the best b: a is aligned onto b (translation, twin, phase ramp, global
phase and complex scale, `registration.align_to`), then

    |new| = sqrt(|a| |b|)      (Chen et al.'s geometric mean, for complex objects on the amplitudes)
    arg new = arg(a + b)       (the phase of their mean: for nearly real objects the best's, with
                                the run's own phase where the best has little amplitude)

on the best's support (the geometric mean vanishes where either run is zero). Only the support boxes
are aligned and blended (`consensus.boxes`), which is exact for objects restricted to their supports
and sigma^N times cheaper than the whole arrays.

Measured (tests/robustness.py, 256^2, 8 starts, seed 1, G = 3 against G = 1): starts converged
gap cross 8/8 -> 8/8, hard tungsten 7/8 -> 8/8, processed (subtracted, symmetrised) 7/8 -> 8/8
with /entry_1 0.092 -> 0.062 and the average 0.081 -> 0.061; but the strong phase object (cells,
1.8 rad) went from 4/8 at 0.092 to 0/8 (every run pulled at iteration 200 towards a best start that
was wrong, positivity "auto" decided that early turned it off). So generations stay off by default
(`--generations 1`); the CPU cost is the blends, 0.25 CPU-s per generation for 8 runs at 504^2
(+2-4 % of the job).

Each generation is a barrier between independent tasks: the runs of a generation are `run_one` calls
from checkpoints, so any executor can run them and the same seed gives the same result whatever runs
them. Only pure functions here; `runs.phase` drives the stages.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from cxdi_cli import consensus as cns, registration

#: Steps that explore (the generations split their iterations); the first other step ends the search.
SEARCH_STEPS = ("hio", "raar", "detwin")


def search_iterations(steps: Sequence[Any], iterative: set[str] | frozenset[str]) -> int:
    """Iterations of the search: the iterative steps from the start of the flattened recipe up to the
    first iterative step that is not in `SEARCH_STEPS` (all of them when every step searches)."""
    total = 0
    for step in steps:
        if step.name not in iterative:
            continue
        if step.name not in SEARCH_STEPS:
            break
        total += step.count
    return total


#: The first generation runs this share of the search; the others split the rest evenly. A best run
#: chosen early is often wrong (a strong phase object at a third of a 600-iteration search: every
#: run pulled onto a stalled start).
FIRST_GENERATION = 0.5


def boundaries(search: int, generations: int) -> list[int]:
    """The iterations at which generations end: FIRST_GENERATION of the search, then the rest of it
    in G - 1 equal parts (distinct, inside the search)."""
    if generations <= 1 or search <= 1:
        return []
    first = FIRST_GENERATION * search
    cuts = sorted({int(round(first + (search - first) * g / (generations - 1))) for g in range(0, generations - 1)})
    return [c for c in cuts if 0 < c < search]


def _score(metrics: dict[str, Any]) -> float:
    """Free LLK, or LLK when there are no free pixels (nan when neither)."""
    v = metrics.get("llk_free", math.nan)
    return float(v) if v is not None and math.isfinite(v) else float(metrics.get("llk", math.nan))


def best_index(scores: Sequence[float]) -> int:
    """Index of the lowest finite score (the first when none is finite)."""
    vals = [s if s is not None and math.isfinite(s) else math.inf for s in scores]
    return int(np.argmin(vals))


def blend_objects(a: np.ndarray, b: np.ndarray, *, upsample: int = 8) -> np.ndarray:
    """Chen et al.'s blend of `a` with the best run `b` (centred arrays of one shape): `a` aligned onto
    `b`, amplitude sqrt(|a| |b|), phase arg(a + b). Returned in `b`'s frame."""
    x, info = registration.align_to(a, b, upsample=upsample)
    x = x * info["optimal_scale"]
    amp = np.sqrt(np.abs(x) * np.abs(b))
    return (amp * np.exp(1j * np.angle(x + b))).astype(np.complex64)


def blend(run: Any, best: Any, *, margin: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The blend of a checkpoint with the best one (objects restricted to their supports, FFT order).

    Returns ``(rho, support)`` in FFT order: the best's support, the blended object on it."""
    shape = run.rho.shape
    a = np.fft.fftshift(run.rho * run.support)
    b = np.fft.fftshift(best.rho * best.support)
    sa, sb = np.fft.fftshift(run.support), np.fft.fftshift(best.support)
    box, (fa, fb) = cns.boxes([sa, sb], margin)
    ib = cns.box_index(shape, box, fb)
    mixed = blend_objects(a[cns.box_index(shape, box, fa)], b[ib])
    out = np.zeros(shape, np.complex64)
    out[ib] = mixed
    out *= sb
    return np.fft.ifftshift(out), np.array(best.support, bool)


def guide(checkpoints: Sequence[Any], above: float = 0.0) -> tuple[list[Any], int]:
    """One generation's end: every checkpoint whose score exceeds `above` times the best's replaced
    by its blend with the best (`above` <= 1: every run but the best, Chen et al.'s rule).

    Returns ``(new checkpoints, index of the best)``; the best and the runs within `above` of it
    continue unchanged."""
    scores = [_score(cp.metrics) for cp in checkpoints]
    k = best_index(scores)
    out = []
    for i, cp in enumerate(checkpoints):
        if i == k or (math.isfinite(scores[i]) and scores[i] <= above * scores[k]):
            out.append(cp)
            continue
        rho, support = blend(cp, checkpoints[k])
        out.append(dataclasses.replace(cp, rho=rho, support=support))
    return out, k
