"""Consensus of phase-retrieval runs: which runs agree with each other once the trivial ambiguities are gone.

A run is worth keeping when independent starts found the same object. Every pair of runs is aligned
(`registration.align_to`: translation, twin, phase ramp, global phase) and their distance is the
normalised RMS difference after the optimal complex scale, d = ||c a - b|| / ||b|| = sqrt(1 - C^2)
with C the normalised correlation after alignment (so d is symmetric, 0 for identical runs, 1 for
orthogonal ones). Two runs agree when d <= the threshold; the consensus group is the largest set of
runs that all agree pairwise (a maximum clique of the agreement graph), ties broken by the best
score. A lone run with a slightly better likelihood never beats a group that agrees: stagnated
starts (twin superpositions, partial objects) differ from each other and from the solution by
d = 0.65-1, converged starts of the same data by 0.04-0.06 (hard tungsten). Photon noise spreads
converged runs too: on photon-limited cells (5e5 photons) every pair of converged runs is 0.37-0.42
apart. So the threshold adapts: max(`threshold`, min(0.6, 1.25 x the median distance of a run to its
nearest other run)): 0.3 on the tungsten runs, 0.48 on the photon-limited cells, and never past
0.6, where stagnated starts begin.

In the base because `phase` (which run is /entry_1) and `average` (which runs are averaged) both
decide with it.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable, Sequence

import numpy as np

from cxdi_cli import registration
from cxdi_cli.model import DataError

__all__ = ["DEFAULT_THRESHOLD", "MAX_THRESHOLD", "SCORE_FACTOR", "score_candidates", "effective_threshold", "Consensus", "boxes", "box_index", "compact", "pairwise_distances", "largest_agreeing_group", "find_consensus"]

#: Two runs agree when their normalised distance after alignment is at most this (at least; see
#: `effective_threshold`).
DEFAULT_THRESHOLD = 0.3
#: The threshold follows the runs' spread up to this: stagnated starts lie 0.65-1 from the solution.
MAX_THRESHOLD = 0.6
#: ... as this multiple of the median nearest-neighbour distance.
SPREAD_FACTOR = 1.25


#: The consensus group is drawn from the runs whose score (free LLK) is at most this many times the best
#: one: converged starts of one data set are within 1.2x of each other (hard tungsten: 2.18-2.64),
#: stagnated ones 50x or more above; a group of stagnated starts that agree must not outvote a run
#: that fits (2-px-blurred 504^2 tungsten: two stalled runs at 69.5 and 70.0 agreed, the run that fit
#: best had 15.2).
SCORE_FACTOR = 2.0


def score_candidates(scores: Sequence[float], factor: float = SCORE_FACTOR) -> list[int]:
    """Indices of the runs the consensus group may come from: finite score at most `factor` times the
    best (lower is better). Every index when no score is finite."""
    finite = [float(v) for v in scores if v is not None and np.isfinite(v)]
    if not finite:
        return list(range(len(scores)))
    best = min(finite)
    return [i for i, v in enumerate(scores) if v is not None and np.isfinite(v) and v <= factor * best + 1e-12]


def effective_threshold(distance: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> float:
    """max(threshold, min(MAX_THRESHOLD, SPREAD_FACTOR x median over runs of the distance to the
    nearest other run)): photon noise spreads converged runs apart, and they still agree."""
    m = distance.shape[0]
    if m < 2:
        return float(threshold)
    nearest = np.min(distance + np.diag(np.full(m, np.inf)), axis=1)
    return float(max(threshold, min(MAX_THRESHOLD, SPREAD_FACTOR * float(np.median(nearest)))))


@dataclasses.dataclass
class Consensus:
    """The agreement between runs and the groups it makes."""

    distance: np.ndarray          # (M, M) normalised distance after alignment, 0 on the diagonal
    threshold: float              # runs agree when distance <= threshold
    group: list[int]              # the consensus group (indices), best score first
    labels: list[int]             # group number of every run: 1 = the consensus group, 2.. = the others
    agreement: list[float]        # per run: median distance to the consensus group's other members

    def run_metrics(self, i: int) -> dict[str, Any]:
        """What a run records about the consensus: its group, the group's size and its agreement."""
        size = self.labels.count(self.labels[i])
        return {"consensus_group": int(self.labels[i]), "consensus_group_size": int(size),
                "consensus_size": len(self.group), "consensus_distance": float(self.agreement[i]),
                "consensus_threshold": float(self.threshold)}


def _span(profile: np.ndarray) -> tuple[int, int]:
    """(start, length) of the shortest circular interval holding every True of a 1-D profile."""
    n = profile.size
    on = np.flatnonzero(profile)
    if on.size == 0:
        return 0, n
    gaps = np.diff(np.concatenate([on, [on[0] + n]]))   # distance to the next occupied index, circularly
    k = int(np.argmax(gaps))
    start = int(on[(k + 1) % on.size])
    return start, n - int(gaps[k]) + 1


def boxes(supports: Sequence[np.ndarray], margin: int = 4) -> tuple[list[int], list[list[int]]]:
    """One box size for all supports and, per support, the first index of its box on every axis
    (circular: indices wrap). The box is the largest support extent plus `margin` pixels each side, at
    most the array, centred on each support's span (also when it is the whole axis)."""
    shape = np.asarray(supports[0]).shape
    spans = []
    for sup in supports:
        sup = np.asarray(sup, bool)
        spans.append([_span(np.any(sup, axis=tuple(a for a in range(sup.ndim) if a != ax)))
                      for ax in range(sup.ndim)])
    box = [min(n, max(sp[ax][1] for sp in spans) + 2 * margin) for ax, n in enumerate(shape)]
    # centred even when the box is the whole axis: alignment (ramp from neighbouring pixels) is more
    # reliable for an object in the middle than for one wrapping round the edges
    firsts = [[(sp[ax][0] + sp[ax][1] // 2 - box[ax] // 2) % n for ax, n in enumerate(shape)] for sp in spans]
    return box, firsts


def box_index(shape: Sequence[int], box: Sequence[int], first: Sequence[int]) -> tuple[np.ndarray, ...]:
    """Open-mesh index of a (wrapping) box of the array: ``x[box_index(...)]`` is the box."""
    return np.ix_(*[np.arange(f, f + b) % n for n, b, f in zip(shape, box, first)])


def compact(objs: Sequence[np.ndarray], supports: Sequence[np.ndarray] | None = None,
            margin: int = 4) -> list[np.ndarray]:
    """The objects cropped to one common box centred on each one's support (`boxes`).

    A run is zero off its support (or nearly so), and at oversampling sigma the support spans about
    1/sigma of each axis, so comparing the boxes instead of the whole arrays costs sigma^N times less
    and gives the same distances (a run may wrap around the edges: the box wraps too)."""
    objs = [np.asarray(o) for o in objs]
    if not objs:
        return []
    if supports is None:
        supports = [np.abs(o) > 1e-2 * float(np.abs(o).max() or 1) for o in objs]
    box, firsts = boxes(supports, margin)
    return [np.ascontiguousarray(o[box_index(o.shape, box, f)]) for o, f in zip(objs, firsts)]


def pairwise_distances(objs: Sequence[np.ndarray], *, supports: Sequence[np.ndarray] | None = None,
                       twin: bool = True, ramp: bool = True, upsample: int = 8,
                       on_progress: Callable[..., None] | None = None) -> np.ndarray:
    """(M, M) symmetric matrix of normalised distances sqrt(1 - C^2) after aligning run j onto run i.

    M (M - 1) / 2 alignments of the `compact`ed runs (the support boxes, not the whole arrays);
    `upsample` 8 (1/8 pixel) is ample for a distance (a 1/8 pixel offset of a sharp object adds
    about 0.01)."""
    objs = [np.asarray(o) for o in objs]
    m = len(objs)
    if m and any(o.shape != objs[0].shape for o in objs):
        raise DataError("runs of different shapes cannot be compared")
    objs = compact(objs, supports)
    dist = np.zeros((m, m))
    tick = on_progress or (lambda *a, **k: None)
    for i, j in itertools.combinations(range(m), 2):
        _, info = registration.align_to(objs[j], objs[i], twin=twin, ramp=ramp, upsample=upsample)
        c = min(1.0, max(0.0, float(info["correlation"])))
        dist[i, j] = dist[j, i] = math.sqrt(max(0.0, 1.0 - c * c))
        tick(1)
    return dist


def _cliques(adj: np.ndarray) -> list[frozenset[int]]:
    """Every maximal clique of an undirected graph (Bron-Kerbosch with pivoting; M is small)."""
    m = adj.shape[0]
    nbr = [frozenset(int(j) for j in np.flatnonzero(adj[i]) if j != i) for i in range(m)]
    out: list[frozenset[int]] = []

    def grow(r: frozenset[int], p: set[int], x: set[int]) -> None:
        if not p and not x:
            out.append(r)
            return
        pivot = max(p | x, key=lambda u: len(nbr[u] & p))
        for v in list(p - nbr[pivot]):
            grow(r | {v}, p & nbr[v], x & nbr[v])
            p.discard(v)
            x.add(v)

    grow(frozenset(), set(range(m)), set())
    return out


def largest_agreeing_group(distance: np.ndarray, threshold: float, order: Sequence[int],
                           among: Sequence[int] | None = None) -> list[int]:
    """The largest set of runs (within `among`, default all) that agree pairwise; ties: the set whose
    best member comes first in `order` (best first), then the next best, and so on. Best first."""
    rank = {int(i): k for k, i in enumerate(order)}
    idx = list(range(distance.shape[0])) if among is None else [int(i) for i in among]
    if not idx:
        return []
    sub = distance[np.ix_(idx, idx)] <= threshold
    best: tuple[Any, ...] | None = None
    for clique in _cliques(sub):
        members = sorted((idx[k] for k in clique), key=lambda i: rank.get(i, len(rank) + i))
        key = (-len(members), [rank.get(i, len(rank) + i) for i in members])
        if best is None or key < best[0]:
            best = (key, members)
    return list(best[1]) if best else []


def find_consensus(objs: Sequence[np.ndarray], order: Sequence[int], *, threshold: float = DEFAULT_THRESHOLD,
                   adaptive: bool = True,
                   supports: Sequence[np.ndarray] | None = None, distance: np.ndarray | None = None,
                   candidates: Sequence[int] | None = None, twin: bool = True, ramp: bool = True, upsample: int = 8,
                   on_progress: Callable[..., None] | None = None) -> Consensus:
    """Pairwise agreement of runs and their groups.

    `order` ranks the runs best first (e.g. by free log-likelihood); it breaks ties between groups of
    equal size and orders each group. Group 1 (the consensus) is the largest agreeing group; the
    remaining runs are grouped the same way (2, 3, ... by decreasing size). A run agreeing with no
    other run is a group of its own; when no two runs agree, the consensus is the best run alone.
    With `adaptive`, the threshold is `effective_threshold(distance, threshold)` (recorded in the
    result). `distance` reuses a matrix already computed (`pairwise_distances`). `candidates` (default: all)
    are the runs the consensus group may be drawn from (e.g. the runs whose likelihood is not far
    from the best: `phase` keeps stagnated starts that happen to agree with each other from
    outvoting a run that fits the data many times better); the other groups are made of the rest."""
    m = len(objs) if distance is None else distance.shape[0]
    if distance is None:
        distance = pairwise_distances(objs, supports=supports, twin=twin, ramp=ramp, upsample=upsample, on_progress=on_progress)
    if adaptive:
        threshold = effective_threshold(distance, threshold)
    labels = [0] * m
    left = [i for i in order] + [i for i in range(m) if i not in set(order)]
    groups: list[list[int]] = []
    if candidates is not None:
        groups.append(largest_agreeing_group(distance, threshold, order, among=[i for i in left if i in
                                                                                  set(candidates)]))
        left = [i for i in left if i not in groups[0]]
    while left:
        g = largest_agreeing_group(distance, threshold, order, among=left)
        groups.append(g)
        left = [i for i in left if i not in g]
    for number, g in enumerate(groups, start=1):
        for i in g:
            labels[i] = number
    first = groups[0] if groups else []
    agreement = []
    for i in range(m):
        others = [distance[i, j] for j in first if j != i]
        agreement.append(float(np.median(others)) if others else 0.0)
    return Consensus(distance=distance, threshold=float(threshold), group=first, labels=labels,
                     agreement=agreement)
