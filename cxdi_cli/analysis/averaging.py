"""Selecting, aligning and averaging phase-retrieval runs; orthogonal-mode decomposition.

Random starts of phase retrieval end in slightly different solutions. The scientist keeps the best
runs (by a likelihood metric), removes the trivial ambiguities against a reference (`align.align_to`:
translation, twin, phase ramp, global phase), rejects runs that still disagree with the others, and
averages the rest. The singular value decomposition of the aligned stack gives orthogonal modes;
the weight of the first mode (its share of the stack's total power) is the usual quality figure:
close to 1 when every run found the same object.

`average_runs` is the whole `cxdi average` job as one call: read reconstructions in, the average out.
By default it averages only the consensus group (`cxdi_cli.consensus`): the largest set of the
selected runs that agree pairwise after alignment, so a stagnated start is never averaged in, even
when its likelihood is close to the good ones'.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import numpy as np

from cxdi_cli.analysis import align
from cxdi_cli import consensus as cns, fft, io
from cxdi_cli.model import DataError, Reconstruction, Run

__all__ = ["METRICS", "AverageResult", "rank_runs", "average_objects", "svd_modes", "check_compatible",
           "select_runs", "average_runs"]

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


def _labelled_runs(recs: Sequence[tuple[str, Reconstruction] | Reconstruction]
                   ) -> list[tuple[str, str, Run, Reconstruction]]:
    """(file name, label, run, its reconstruction) for every run: label ``FILE::entry_K`` (the entry given, or the run's place)."""
    out = []
    for n, item in enumerate(recs):
        name, rec = item if isinstance(item, tuple) else (item.source or f"input_{n + 1}", item)
        base, dset = io.split_url(name)
        entry = dset.strip("/").split("/")[0] if dset else None
        for k, run in enumerate(rec.runs, start=1):
            out.append((name, f"{base}::{entry or f'entry_{k}'}", run, rec))
    return out


def select_labelled(recs: Sequence[tuple[str, Reconstruction] | Reconstruction], by: str = "llk_free", *,
                    best: int | None = None) -> tuple[list[tuple[str, str, Run, Reconstruction]], list[int],
                                                      list[tuple[int, str]], str]:
    """Every run of `recs` labelled (`_labelled_runs`), and `select_runs` over them: (entries, order of
    the usable runs best first, skipped runs with why, the metric used)."""
    entries = _labelled_runs(recs)
    items = [(label, run.obj.shape, rec.pixel_size, rec.geometry) for _, label, run, rec in entries]
    order, skipped, key = select_runs(items, [run.metrics for _, _, run, _ in entries], by, best=best)
    return entries, order, skipped, key


def average_runs(recs: Sequence[tuple[str, Reconstruction] | Reconstruction], *, best: int | None = 10,
                 by: str = "llk_free", twin: bool = True, ramp: bool = True, upsample: int = 20,
                 outlier: float = 5.0, modes: int = 3, consensus: bool = True,
                 agree: float = cns.DEFAULT_THRESHOLD,
                 on_progress: Callable[..., None] | None = None) -> Reconstruction:
    """Select, align and average the runs of reconstructions: the library side of `cxdi average`.

    `recs` are ``(name, Reconstruction)`` pairs (the name labels the runs: ``FILE::entry_K``) or bare
    Reconstructions. Failed runs and runs without the metric are skipped; the best `best` by `by`
    (lower is better) are kept; with `consensus`, only their largest agreeing group (pairwise
    distance after alignment <= `agree`, or up to 0.6 when photon noise spreads the runs:
    `consensus.effective_threshold`), drawn from the runs within `consensus.SCORE_FACTOR` of the best
    score as `phase` draws it, is averaged, the reference being its
    best run. Then `average_objects` (two alignment passes, outlier rejection, SVD modes).

    Returns a one-run Reconstruction: the average and its support; metrics n_runs, n_rejected,
    mode_1_weight, <metric>_best, reference; params; extra: alignment (one row per averaged run),
    skipped ([{run, reason}]), mode_weights, metric, reference, consensus (size, threshold, runs
    compared), notes (one line per warning), summary (one line: how many runs and why),
    inputs_provenance (of the inputs whose provenance differs from the reference's); arrays: mode_K
    and run_intensity. DataError when the runs are not of one data set or none is usable.
    """
    by_key = by.replace("-", "_")
    entries, order, skipped, key = select_labelled(recs, by_key, best=best)
    metrics = [run.metrics for _, _, run, _ in entries]
    labels = [label for _, label, _, _ in entries]
    notes = []
    if key == "none":
        notes.append(f"no run carries a metric ({', '.join(METRICS)}); averaging the runs in the order given")
    elif key != by_key:
        notes.append(f"no run has a finite {by_key.replace('_', '-')}; selecting by {key.replace('_', '-')}")
    objs = [run.obj for _, _, run, _ in entries]
    tick = on_progress or (lambda *a, **k: None)
    n_pairs = len(order) * (len(order) - 1) // 2 if consensus and len(order) > 1 else 0
    tick(0, total=n_pairs + 2 * len(order))
    cons_info: dict[str, Any] = {"used": False}
    why = f"the best {len(order)} by {key}" if key != "none" else f"the first {len(order)}"
    if n_pairs:
        cands = (cns.score_candidates([metrics[i].get(key) for i in order]) if key != "none"
                 else list(range(len(order))))
        con = cns.find_consensus([objs[i] for i in order], list(range(len(order))), threshold=agree,
                                 supports=[entries[i][2].support for i in order], twin=twin, ramp=ramp,
                                 candidates=cands, on_progress=tick)
        group = [order[k] for k in con.group]
        thr = con.threshold
        for k, i in enumerate(order):
            if i in group:
                continue
            if k not in cands:
                skipped.append((i, f"{key} {metrics[i].get(key):.4g} more than {cns.SCORE_FACTOR:g} times the "
                                   "best's: a stalled start, whoever it agrees with"))
            else:
                skipped.append((i, f"disagrees with the consensus group of {len(group)} run(s) (median distance "
                                   f"{con.agreement[k]:.3f} after alignment > {thr:.3g})"))
        cons_info = {"used": True, "size": len(group), "compared": len(order), "threshold": thr,
                     "runs": [labels[i] for i in group]}
        why = (f"the consensus group: {len(group)} of the {len(order)} best by {key} agree within {thr:.3g} "
               "after alignment" if key != "none" else
               f"the consensus group: {len(group)} of {len(order)} runs agree within {thr:.3g} after alignment")
        order = group
        tick(0, total=n_pairs + 2 * len(order))
    res = average_objects([objs[i] for i in order], [entries[i][2].support for i in order], reference=0,
                          twin=twin, ramp=ramp, upsample=upsample, outlier=outlier, n_modes=modes,
                          on_progress=lambda *a, **k: tick(*a, **{x: y for x, y in k.items() if x != "total"}))
    table = []
    for row in res.table:
        i = order[row["index"]]
        value = metrics[i].get(key)
        table.append({"run": labels[i], key: float(value) if finite(value) else None,
                      **{k: v for k, v in row.items() if k != "index"}})
    for row in table:
        if not row["used"]:
            notes.append(f"{row['run']} rejected: {row['reason']}")
    skipped_rows = [{"run": labels[i], "reason": r} for i, r in skipped]
    ref_name, _, _, ref_rec = entries[order[0]]
    others: dict[str, Any] = {}
    for name, _, _, rec in entries:
        if name != ref_name and name not in others and rec.provenance != ref_rec.provenance:
            others[name] = rec.provenance
    params = {"best": best, "by": key, "twin": twin, "ramp": ramp, "upsample": upsample, "outlier": outlier,
              "modes": modes, "consensus": consensus, "agree": agree}
    reference = labels[order[0]]
    run_metrics = {"n_runs": len(res.used), "n_rejected": len(res.rejected), "mode_1_weight": res.mode_weights[0],
                   f"{key}_best": table[0][key], "reference": reference}
    summary = (f"averaged {len(res.used)} of {len(labels)} runs: {why}"
               + (f", {len(res.rejected)} rejected as outliers" if res.rejected else "")
               + f"; mode 1 weight {res.mode_weights[0]:.3f}")
    extra = {"alignment": table, "skipped": skipped_rows, "mode_weights": res.mode_weights, "metric": key,
             "reference": reference, "consensus": cons_info, "notes": notes, "summary": summary,
             "inputs_provenance": others}
    arrays = {f"mode_{k + 1}": np.asarray(m, np.complex64) for k, m in enumerate(res.modes)}
    arrays["run_intensity"] = res.run_intensity
    return Reconstruction(runs=[Run(obj=res.average, support=res.support, metrics=run_metrics, params=params)],
                          pixel_size=ref_rec.pixel_size, geometry=ref_rec.geometry,
                          provenance=list(ref_rec.provenance), extra=extra, arrays=arrays)
