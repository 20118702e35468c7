"""Selecting, aligning and averaging phase-retrieval runs; orthogonal-mode decomposition.

Random starts of phase retrieval end in slightly different solutions. The scientist keeps the best
runs (by a likelihood metric), removes the trivial ambiguities against a reference (`align.align_to`:
translation, twin, phase ramp, global phase), rejects runs that still disagree with the others, and
averages the rest. The singular value decomposition of the aligned stack gives orthogonal modes;
the weight of the first mode (its share of the stack's total power) is the usual quality figure:
close to 1 when every run found the same object.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import numpy as np

from cxdi_cli.analysis import align
from cxdi_cli import fft
from cxdi_cli.model import DataError

__all__ = ["METRICS", "AverageResult", "rank_runs", "average_objects", "svd_modes", "check_compatible",
           "select_runs"]

#: Metrics a selection can use, and whether lower is better. Both are Poisson negative
#: log-likelihoods per pixel (PyNX's LLK convention): lower means a better fit to the data.
METRICS: dict[str, bool] = {"llk_free": True, "llk": True, "chi2": True}


@dataclasses.dataclass
class AverageResult:
    """The averaged object and everything `cxdi average` reports about how it was made."""

    average: np.ndarray                 # complex, aligned to the reference run's frame
    support: np.ndarray                 # bool: majority vote of the aligned supports of the used runs
    table: list[dict[str, Any]]         # one row per aligned run (see `average_objects`)
    modes: np.ndarray                   # (k, *shape) orthogonal modes, scaled: mode k has norm s_k/sqrt(M)
    mode_weights: list[float]           # s_k^2 / sum s^2, descending
    reference: int                      # index (into the objects given) of the reference run
    used: list[int]                     # indices averaged
    rejected: list[int]                 # indices rejected as outliers
    run_intensity: np.ndarray           # mean |cfftn(run, unitary)|^2 of the used runs (PRTF scale)


def rank_runs(metrics: Sequence[dict[str, Any]], by: str = "llk_free", *,
              best: int | None = None) -> tuple[list[int], list[tuple[int, str]], str]:
    """Order runs by a metric and keep the best `best` (all when None).

    Runs flagged ``failed`` or whose metric is missing / not finite are skipped with a reason.
    When *no* run has the requested metric ``llk_free`` (no free pixels were kept), ``llk`` is used
    instead; when no run has any metric, the runs are kept in the order given (metric "none"). The
    metric actually used is returned. Direction: `METRICS` (lower is better).

    Returns ``(selected indices best first, [(index, reason) skipped], metric used)``.
    """
    key = by.replace("-", "_")
    if not any(finite(m.get(k)) for m in metrics for k in METRICS):
        # no metric at all (TIFF objects, foreign files): the runs in the order given
        order = [i for i, m in enumerate(metrics) if not m.get("failed")]
        cut = order if best is None else order[:best]
        skipped = [(i, "the run failed (metrics.failed)") for i, m in enumerate(metrics) if m.get("failed")]
        skipped += [(i, f"not among the first {best} (no metric to rank by)") for i in order[len(cut):]]
        return cut, skipped, "none"
    if key == "llk_free" and not any(finite(m.get(key)) for m in metrics) and any(
            finite(m.get("llk")) for m in metrics):
        key = "llk"
    low = METRICS.get(key, True)
    ok: list[tuple[float, int]] = []
    skipped: list[tuple[int, str]] = []
    for i, m in enumerate(metrics):
        if bool(m.get("failed", False)):
            skipped.append((i, "the run failed (metrics.failed)"))
        elif not finite(m.get(key)):
            skipped.append((i, f"no finite {key} metric"))
        else:
            ok.append((float(m[key]) if low else -float(m[key]), i))
    ok.sort()
    order = [i for _, i in ok]
    if best is not None:
        for i in order[best:]:
            skipped.append((i, f"not among the best {best} by {key}"))
        order = order[:best]
    return order, skipped, key


def select_runs(items: Sequence[tuple[str, tuple[int, ...], tuple[float, ...] | None, Any]],
                metrics: Sequence[dict[str, Any]], by: str = "llk_free", *,
                best: int | None = None) -> tuple[list[int], list[tuple[int, str]], str]:
    """The runs to average: `check_compatible(items)`, then `rank_runs(metrics, by, best=best)`.

    Failed runs and runs without the metric are never selected; DataError when no run is usable
    (its message names up to three skipped runs and why). Returns what `rank_runs` returns.
    """
    check_compatible(items)
    order, skipped, key = rank_runs(metrics, by, best=best)
    if not order:
        why = "; ".join(f"{items[i][0]}: {r}" for i, r in skipped[:3])
        raise DataError(f"no usable run ({why})")
    return order, skipped, key


def finite(v: Any) -> bool:
    """True for a number that is not None, NaN or infinite."""
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def check_compatible(items: Sequence[tuple[str, tuple[int, ...], tuple[float, ...] | None, Any]]) -> None:
    """Raise DataError unless all runs come from one data set: same shape, same pixel size, same geometry.

    `items` are ``(label, shape, pixel_size, geometry)``; the first one is the yardstick.
    """
    if not items:
        raise DataError("no runs to average")
    label0, shape0, pix0, geo0 = items[0]
    for label, shape, pix, geo in items[1:]:
        if tuple(shape) != tuple(shape0):
            raise DataError(f"{label}: object shape {tuple(shape)} differs from {tuple(shape0)} of {label0}; "
                            "runs of different data sets cannot be averaged")
        if pix is not None and pix0 is not None and not np.allclose(pix, pix0, rtol=1e-4):
            raise DataError(f"{label}: pixel size {tuple(pix)} m differs from {tuple(pix0)} m of {label0}; "
                            "runs of different data sets cannot be averaged")
        for attr in ("wavelength", "distance"):
            a, b = getattr(geo, attr, None), getattr(geo0, attr, None)
            if a is not None and b is not None and not math.isclose(a, b, rel_tol=1e-4):
                raise DataError(f"{label}: {attr} {a:g} m differs from {b:g} m of {label0}; "
                                "runs of different data sets cannot be averaged")


def svd_modes(stack: np.ndarray, n_modes: int = 5) -> tuple[np.ndarray, list[float]]:
    """Orthogonal modes of a stack of M aligned objects (M, *shape) by singular value decomposition.

    With X the (M, N) matrix of the stack, X = U S V^H; mode k is row k of V^H scaled by s_k/sqrt(M)
    (so the first mode of identical runs equals the run), its weight s_k^2 / sum s^2. Computed from
    the M x M Gram matrix X X^H, so memory stays at one stack for 3D volumes.
    """
    m = stack.shape[0]
    x = stack.reshape(m, -1)
    gram = x.conj() @ x.T                      # G_ij = <x_i, x_j>
    lam, u = np.linalg.eigh(gram)
    order = np.argsort(lam)[::-1]
    lam = np.clip(lam[order].real, 0, None)
    u = u[:, order]
    total = float(lam.sum())
    k = min(n_modes, m)
    modes = np.empty((k,) + stack.shape[1:], dtype=stack.dtype)
    for j in range(k):
        s = math.sqrt(lam[j])
        if s == 0:
            modes[j] = 0
            continue
        v = (u[:, j].conj() @ x) / s           # unit-norm row of V^H
        v *= s / math.sqrt(m)
        modes[j] = v.reshape(stack.shape[1:])
    weights = [float(v / total) if total > 0 else 0.0 for v in lam[:k]]
    return modes, weights


def _aligned_support(support: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    s = support.astype(np.float32)
    if info["twin"]:
        s = align.twin_image(s).real
    return align.fourier_shift(s, info["shift"]).real > 0.5


def average_objects(objs: Sequence[np.ndarray], supports: Sequence[np.ndarray] | None = None, *,
                    reference: int = 0, twin: bool = True, ramp: bool = True, upsample: int = 20,
                    outlier: float = 5.0, refine: bool = True, n_modes: int = 5,
                    on_progress: Callable[..., None] | None = None) -> AverageResult:
    """Align every object onto `objs[reference]`, reject outliers, average, decompose into modes.

    Each object is aligned with `align.align_to` and scaled by the optimal complex scalar onto the
    reference. With `refine`, a provisional average replaces the reference and every run is aligned
    again to it (removing the reference's own noise from the alignment). A run is an outlier when its
    distance to the mean of the *other* runs, ||a_i - mean_others|| / ||mean_others||, exceeds the
    median distance by more than `outlier` robust standard deviations (1.4826 x median absolute
    deviation) and by more than 0.05 (needs at least 3 runs; ``outlier <= 0`` turns rejection off). Supports are aligned with the same shift and twin and
    combined by majority vote.

    The table has one row per object: ``index, shift_px, twin, phase_rad, ramp_cycles, scale,
    correlation, residual`` (nrms distance to the reference after alignment), ``distance`` (to the
    mean of the others), ``used`` and ``reason`` (why it was rejected, or None). The result also holds
    the runs' mean Fourier intensity (unitary transform), which puts the average on the data's scale
    for the PRTF.
    """
    objs = [np.asarray(o) for o in objs]
    if not objs:
        raise DataError("no runs to average")
    shape = objs[0].shape
    for i, o in enumerate(objs):
        if o.shape != shape:
            raise DataError(f"run {i}: shape {o.shape} differs from {shape}")
    if supports is None:
        supports = [np.abs(o) > 0 for o in objs]
    tick = on_progress or (lambda *a, **k: None)
    ref = objs[reference].astype(np.complex64)
    passes = 2 if refine and len(objs) > 1 else 1
    tick(0, total=passes * len(objs))
    used = list(range(len(objs)))
    for p in range(passes):
        aligned, infos = [], []
        for o in objs:
            a, info = align.align_to(o, ref, twin=twin, ramp=ramp, upsample=upsample)
            c = info.pop("optimal_scale")
            aligned.append((a * c).astype(np.complex64))
            info["scale"] = abs(c)
            infos.append(info)
            tick(1, info=f"pass {p + 1}")
        stack = np.stack(aligned)
        used, dist = _reject(stack, outlier)
        avg = stack[used].mean(axis=0)
        if p + 1 < passes:
            ref = avg
    table = []
    rejected = [i for i in range(len(objs)) if i not in used]
    med = float(np.median(dist))
    for i, info in enumerate(infos):
        reason = None
        if i in rejected:
            reason = (f"distance {dist[i]:.3f} to the other runs after alignment exceeds the limit "
                      f"{_threshold(dist, outlier):.3f} (median {med:.3f} + max({outlier:g} robust sigma, 0.05))")
        table.append({"index": i, "shift_px": info["shift"], "twin": info["twin"], "phase_rad": info["phase"],
                      "ramp_cycles": info["ramp"], "scale": info["scale"], "correlation": info["correlation"],
                      "residual": info["residual"], "distance": float(dist[i]), "used": i in used,
                      "reason": reason})
    sup = np.mean([_aligned_support(np.asarray(supports[i]), infos[i]) for i in used], axis=0) >= 0.5
    modes, weights = svd_modes(stack[used], n_modes)
    for j in range(len(modes)):  # give each mode the global phase of the average
        ph = np.vdot(modes[j], avg)
        if ph != 0:
            modes[j] *= ph / abs(ph)
    power = np.zeros(shape, dtype=np.float64)
    for i in used:
        power += np.abs(fft.cfftn(stack[i], norm="ortho")) ** 2
    power /= len(used)
    return AverageResult(average=avg.astype(np.complex64), support=sup, table=table, modes=modes,
                         mode_weights=weights, reference=reference, used=used, rejected=rejected,
                         run_intensity=power.astype(np.float32))


def _reject(stack: np.ndarray, outlier: float) -> tuple[list[int], np.ndarray]:
    """Indices kept and each run's nrms distance to the mean of the others."""
    m = stack.shape[0]
    if m < 2:
        return list(range(m)), np.zeros(m)
    total = stack.sum(axis=0)
    dist = np.empty(m)
    for i in range(m):
        others = (total - stack[i]) / (m - 1)
        n = float(np.linalg.norm(others))
        dist[i] = float(np.linalg.norm(stack[i] - others) / n) if n > 0 else float("inf")
    if m < 3 or outlier <= 0:
        return list(range(m)), dist
    keep = [i for i in range(m) if dist[i] <= _threshold(dist, outlier)]
    return keep, dist


def _threshold(dist: np.ndarray, outlier: float) -> float:
    """Outlier limit on the distances: median + max(outlier x robust sigma (1.4826 MAD), 0.05)."""
    med = float(np.median(dist))
    sigma = 1.4826 * float(np.median(np.abs(dist - med)))
    return med + max(outlier * sigma, 0.05)
