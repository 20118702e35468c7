"""Resolution estimates: phase-retrieval transfer function (PRTF) and Fourier ring / shell correlation.

Pure numerics (no plotting, no files); `resolve` is what `cxdi resolve-prt` computes, from the
reconstructions and data in memory. Frequencies are spatial frequencies q = 1/period (DESIGN §4,
no 2 pi); a resolution is quoted as the half-period d = 1 / (2 q), the convention of the resolution
element Δr = λD/(N p) (DESIGN §1), so that the Nyquist frequency of the grid gives d = one pixel.

References
----------
- PRTF: H. N. Chapman et al., "High-resolution ab initio three-dimensional x-ray diffraction
  microscopy", J. Opt. Soc. Am. A 23, 1179 (2006), doi:10.1364/JOSAA.23.001179.
- FRC/FSC thresholds: M. van Heel & M. Schatz, "Fourier shell correlation threshold criteria",
  J. Struct. Biol. 151, 250 (2005), doi:10.1016/j.jsb.2005.05.009 (half-bit); P. B. Rosenthal &
  R. Henderson, J. Mol. Biol. 333, 721 (2003) (0.143 = 1/7).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from cxdi_cli import fft, registration
from cxdi_cli.analysis import averaging
from cxdi_cli.model import DataError, Pattern, Reconstruction, UsageError

__all__ = ["Curve", "radial_index", "ring_sum", "prtf", "frc", "half_bit", "crossing", "resolution",
           "THRESHOLDS", "PRTF_THRESHOLD", "Resolution", "resolve", "resolve_series", "q_from_pixel"]

#: The PRTF resolution: where the ring-averaged PRTF first drops below 1/e.
PRTF_THRESHOLD = 1.0 / math.e

#: Fixed FRC / FSC thresholds; the half-bit curve depends on the ring size (`half_bit`).
THRESHOLDS: dict[str, float] = {"0.5": 0.5, "1/7": 1.0 / 7.0}


@dataclasses.dataclass
class Curve:
    """A ring- (2D) or shell- (3D) averaged curve against spatial frequency.

    ``q`` in 1/m when the pitch was known (else in cycles per pixel, with ``q_unit = "1/pixel"``),
    ``nyquist_fraction`` = q / q_Nyquist (the smallest Nyquist frequency of the axes), ``value`` the
    curve, ``count`` the pixels (voxels) in each ring (shell).
    """

    q: np.ndarray
    nyquist_fraction: np.ndarray
    value: np.ndarray
    count: np.ndarray
    q_unit: str = "1/m"


def _pitch(shape: tuple[int, ...], q_step: Sequence[float] | None) -> tuple[np.ndarray, str]:
    if q_step is None:
        return np.array([1.0 / n for n in shape]), "1/pixel"
    step = np.asarray(q_step, dtype=np.float64)
    if step.shape != (len(shape),) or not np.all(step > 0):
        raise DataError(f"q pitch {tuple(step)} does not fit an array of {len(shape)} dimensions")
    return step, "1/m"


def radial_index(shape: tuple[int, ...], q_step: Sequence[float] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Ring (shell) index of every pixel of a centred array (q = 0 at n // 2).

    The ring width is the coarsest per-axis pitch; ring k holds round(|q| / width) = k. Rings run up
    to the smallest Nyquist frequency of the axes; pixels beyond (the corners) get index -1.
    Returns ``(index, ring centre q, Nyquist fraction, q unit)``; `q_step` (1/m per axis) None means
    pixel units (cycles per pixel).
    """
    step, unit = _pitch(shape, q_step)
    q2 = np.zeros(shape)
    for ax, n in enumerate(shape):
        sh = [1] * len(shape)
        sh[ax] = n
        q2 = q2 + (((np.arange(n) - n // 2) * step[ax]) ** 2).reshape(sh)
    width = float(step.max())
    nyq = float(min((n // 2) * s for n, s in zip(shape, step)))
    nrings = int(math.floor(nyq / width + 1e-9)) + 1
    idx = np.rint(np.sqrt(q2) / width).astype(np.int64)
    idx[idx >= nrings] = -1
    q = np.arange(nrings) * width
    return idx, q, q / nyq, unit


def ring_sum(values: np.ndarray, index: np.ndarray, nrings: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Sum of `values` over each ring (pixels with index -1, or weight 0, left out)."""
    sel = index >= 0
    if weights is not None:
        sel &= weights.astype(bool)
    return np.bincount(index[sel], weights=np.asarray(values)[sel].real.astype(np.float64), minlength=nrings)[:nrings]


def prtf(obj: np.ndarray, intensity: np.ndarray, measured: np.ndarray, *, q_step: Sequence[float] | None = None,
         run_intensity: np.ndarray | None = None, n_runs: int | None = None) -> tuple[Curve, dict[str, Any]]:
    """Phase-retrieval transfer function of an averaged object against the measured intensity.

    PRTF(q) = sqrt(sum_ring |s F(q)|^2 / sum_ring I(q)) over the measured pixels of each ring (the
    ratio of the ring's powers: unbiased by Poisson noise, unlike a mean of |F| / sqrt(I), which
    climbs above 1 where few photons were counted), with
    F = cfftn(obj, unitary) the transform of the average of the aligned runs (= the mean of their
    transforms) and s the scale putting the runs on the data: s^2 = sum I / sum <|F_run|^2> over the
    measured pixels when `run_intensity` (the runs' mean |F_run|^2, written by `cxdi average`) is
    given, else s = sum |F| sqrt(I) / sum |F|^2 over the measured pixels (the average's own fit to
    the data, which biases the curve upwards where the runs disagree). An exact object against its
    own |F|^2 gives 1 at every q. Rings without a measured pixel or without photons are NaN.

    Finite number of runs: the mean of N runs whose phases disagree keeps |<F>|^2 = <|F|^2> / N, so
    the plain PRTF of N unrelated runs sits at 1/sqrt(N) (0.45 for 5 runs, above 1/e: the curve could
    never cross). With `run_intensity` and `n_runs` = N > 1 (the runs averaged, with `obj` their plain
    mean) the ring power of |<F>|^2 is replaced by its unbiased estimate of |E F|^2,
    (N sum |<F>|^2 - sum <|F|^2>) / (N - 1), clipped at 0, the same correction as for a variance.
    Returns ``(curve, info)``; info holds ``scale``, ``scale_from`` and ``debiased_runs`` (N, or None).
    """
    obj = np.asarray(obj)
    intensity = np.asarray(intensity, dtype=np.float64)
    if obj.shape != intensity.shape:
        raise DataError(f"object shape {obj.shape} differs from the data shape {intensity.shape}")
    meas = np.asarray(measured, dtype=bool) & np.isfinite(intensity) & (intensity >= 0)
    if not meas.any():
        raise DataError("no measured pixel in the data")
    amp = np.abs(fft.cfftn(obj.astype(np.complex128), norm="ortho"))
    if run_intensity is not None:
        run_intensity = np.asarray(run_intensity, dtype=np.float64)
        if run_intensity.shape != obj.shape:
            raise DataError(f"run intensity shape {run_intensity.shape} differs from the object's {obj.shape}")
        den = float(run_intensity[meas].sum())
        scale = math.sqrt(float(intensity[meas].sum()) / den) if den > 0 else float("nan")
        scale_from = "runs"
    else:
        den = float((amp[meas] ** 2).sum())
        scale = float((amp[meas] * np.sqrt(intensity[meas])).sum()) / den if den > 0 else float("nan")
        scale_from = "fit"
    if not math.isfinite(scale) or scale <= 0:
        raise DataError("the object's transform is zero on the measured pixels")
    idx, q, frac, unit = radial_index(obj.shape, q_step)
    n = len(q)
    num = ring_sum((scale * amp) ** 2, idx, n, meas)
    debiased = None
    if run_intensity is not None and n_runs is not None and n_runs > 1:
        runs_power = ring_sum(scale ** 2 * run_intensity, idx, n, meas)
        num = np.maximum((n_runs * num - runs_power) / (n_runs - 1), 0.0)
        debiased = int(n_runs)
    den_r = ring_sum(intensity, idx, n, meas)
    cnt = np.bincount(idx[(idx >= 0) & meas], minlength=n)[:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        val = np.where((cnt > 0) & (den_r > 0), np.sqrt(num / den_r), np.nan)
    return Curve(q=q, nyquist_fraction=frac, value=val, count=cnt, q_unit=unit), {
        "scale": scale, "scale_from": scale_from, "debiased_runs": debiased}


def frc(a: np.ndarray, b: np.ndarray, *, q_step: Sequence[float] | None = None,
        mask: np.ndarray | None = None) -> Curve:
    """Fourier ring (2D) / shell (3D) correlation of two aligned objects.

    FRC(q) = Re sum_ring F_a conj(F_b) / sqrt(sum_ring |F_a|^2 sum_ring |F_b|^2), F = cfftn(.);
    `mask` (centred, like the transforms) restricts the sums to some Fourier pixels. 1 for identical
    objects, about 0 +- 1/sqrt(n) for independent noise (n pixels in the ring).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise DataError(f"cannot correlate objects of shapes {a.shape} and {b.shape}")
    fa = fft.cfftn(a.astype(np.complex128))
    fb = fft.cfftn(b.astype(np.complex128))
    idx, q, frac, unit = radial_index(a.shape, q_step)
    n = len(q)
    num = ring_sum(fa * np.conj(fb), idx, n, mask)
    pa = ring_sum(np.abs(fa) ** 2, idx, n, mask)
    pb = ring_sum(np.abs(fb) ** 2, idx, n, mask)
    sel = idx >= 0 if mask is None else (idx >= 0) & mask.astype(bool)
    cnt = np.bincount(idx[sel], minlength=n)[:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        val = np.where((pa > 0) & (pb > 0), num / np.sqrt(pa * pb), np.nan)
    return Curve(q=q, nyquist_fraction=frac, value=val, count=cnt, q_unit=unit)


def half_bit(count: np.ndarray) -> np.ndarray:
    """Half-bit threshold of van Heel & Schatz (2005) for rings (shells) of `count` pixels (voxels):
    (0.2071 + 1.9102 / sqrt(n)) / (1.2071 + 0.9102 / sqrt(n))."""
    n = np.maximum(np.asarray(count, dtype=np.float64), 1.0)
    r = 1.0 / np.sqrt(n)
    return (0.2071 + 1.9102 * r) / (1.2071 + 0.9102 * r)


def crossing(curve: Curve, threshold: float | np.ndarray, *, start: int = 1) -> float | None:
    """Spatial frequency where `curve.value` first drops below `threshold` (a number or one per ring),
    from ring `start` outward, interpolated linearly between rings; None when it never does (the
    curve stays above up to Nyquist). NaN rings are skipped."""
    v = curve.value
    t = np.broadcast_to(np.asarray(threshold, dtype=np.float64), v.shape)
    prev = None
    for k in range(start, len(v)):
        if not np.isfinite(v[k]):
            continue
        if v[k] < t[k]:
            if prev is None:
                return float(curve.q[k])
            d0, d1 = v[prev] - t[prev], v[k] - t[k]
            w = d0 / (d0 - d1) if d0 != d1 else 0.0
            return float(curve.q[prev] + w * (curve.q[k] - curve.q[prev]))
        prev = k
    return None


def resolution(curve: Curve, threshold: float | np.ndarray, *, start: int = 1) -> dict[str, Any]:
    """The crossing of `threshold` as ``q`` (curve units), ``nyquist_fraction`` and the half-period
    ``d = 1 / (2 q)`` (metres when q is in 1/m, pixels when in 1/pixel); ``reached_nyquist`` True when
    the curve never drops below (then q is the last ring: a lower bound on the resolution)."""
    qc = crossing(curve, threshold, start=start)
    nyq = float(curve.q[-1] / curve.nyquist_fraction[-1]) if curve.nyquist_fraction[-1] > 0 else float("nan")
    reached = qc is None
    if reached:
        qc = float(curve.q[-1])
    return {"q": qc, "nyquist_fraction": qc / nyq if nyq > 0 else float("nan"),
            "d": 1.0 / (2.0 * qc) if qc > 0 else float("inf"), "reached_nyquist": reached}


# --------------------------------------------------------------------------- what `cxdi resolve-prt` computes


@dataclasses.dataclass
class Resolution:
    """The curves and resolutions of `resolve`.

    ``curves``: name ("prtf", "frc" for half-sets, "frc_runs" for split runs) -> (curve, half-bit
    threshold per ring or None); ``report``: per name the resolutions at its thresholds (q in nm^-1
    and half-periods in nm when the pitch is known, else in pixels), the FRC alignment and kind;
    ``messages``: (level "info" or "warning", text) in the order they arose; ``provenance``: the chain
    of the first reconstruction.
    """

    curves: dict[str, tuple[Curve, np.ndarray | None]]
    report: dict[str, Any]
    messages: list[tuple[str, str]]
    provenance: list[dict[str, Any]]

    def datasets(self) -> tuple[dict[str, np.ndarray], dict[str, dict[str, str]], str]:
        """(datasets, attributes, signal) of the curves for `io.write_results`: NAME/q_nm-1 (or q_px-1),
        NAME/nyquist_fraction, NAME/prtf or NAME/frc, NAME/count[, NAME/half_bit]."""
        datasets: dict[str, np.ndarray] = {}
        attrs: dict[str, dict[str, str]] = {}
        for name, (curve, hb) in self.curves.items():
            qk = "q" + q_key(curve)
            datasets[f"{name}/{qk}"] = display_q(curve, curve.q)
            attrs[f"{name}/{qk}"] = {"units": "1/nm" if curve.q_unit == "1/m" else "1/pixel"}
            datasets[f"{name}/nyquist_fraction"] = curve.nyquist_fraction
            datasets[f"{name}/{name.split('_')[0]}"] = curve.value
            datasets[f"{name}/count"] = curve.count
            if hb is not None:
                datasets[f"{name}/half_bit"] = hb
        first = next(iter(self.curves))
        return datasets, attrs, f"{first}/{first.split('_')[0]}"

    def table(self) -> tuple[list[str], np.ndarray]:
        """Column names and a NaN-padded table: per curve q, Nyquist fraction, value, count[, half-bit]."""
        cols, names = [], []
        for name, (curve, hb) in self.curves.items():
            unit = "nm-1" if curve.q_unit == "1/m" else "px-1"
            block = [(f"{name}_q_{unit}", display_q(curve, curve.q)),
                     (f"{name}_nyquist_fraction", curve.nyquist_fraction),
                     (name, curve.value), (f"{name}_count", curve.count)]
            if hb is not None:
                block.append((f"{name}_half_bit", hb))
            for n, v in block:
                names.append(n)
                cols.append(np.asarray(v, dtype=np.float64))
        table = np.full((max(len(v) for v in cols), len(cols)), np.nan)
        for j, v in enumerate(cols):
            table[: len(v), j] = v
        return names, table


def resolve(average: Reconstruction | None = None, data: Pattern | None = None, *,
            half_sets: tuple[Reconstruction, Reconstruction] | None = None,
            split_runs: Sequence[Reconstruction] | None = None) -> Resolution:
    """PRTF of `average` against `data`, FRC/FSC between two `half_sets` averages, and/or the FRC of the
    runs of one data set split in two (`split_runs`: reproducibility, not resolution).

    A reconstruction of several runs is first reduced to one object (its usable runs aligned and
    averaged, `averaging.select_runs`); the PRTF uses the runs' mean intensity and count when the file
    carries them (`cxdi average` writes them) to put the average on the data's scale and remove the
    1/N floor. Names in messages are the reconstructions' `source`.
    """
    if average is None and half_sets is None and not split_runs:
        raise UsageError("nothing to do: give the data (PRTF), two half-set averages (FRC) or run files")
    if (average is None) != (data is None):
        raise UsageError("a PRTF needs both the averaged reconstruction and the data it was phased from")
    out = Resolution(curves={}, report={}, messages=[], provenance=[])
    if average is not None and data is not None:
        _prtf_of(average, data, out)
        out.provenance = average.provenance
    pairs: list[tuple[str, Reconstruction, np.ndarray, Reconstruction, np.ndarray, str, bool]] = []
    if half_sets is not None:
        ra, rb = half_sets
        a = _one_object(ra, out)[0]
        b = _one_object(rb, out)[0]
        pairs.append(("frc", ra, a, rb, b, _name(rb), True))
    if split_runs:
        ra, a, b = _split(split_runs)
        pairs.append(("frc_runs", ra, a, ra, b, f"{_name(ra)} (odd runs)", False))
    for name, ra, a, rb, b, label_b, independent in pairs:
        averaging.check_compatible([(_name(ra), a.shape, ra.pixel_size, ra.geometry),
                                    (label_b, b.shape, rb.pixel_size, rb.geometry)])
        b_al, ainfo = registration.align_to(b, a)
        # the reconstruction's own pixel size first, then the geometry it carries
        q_step = q_from_pixel(ra.pixel_size, a.shape) or ra.geometry.q_step(a.ndim)
        curve = frc(a, b_al, q_step=q_step)
        hb = half_bit(curve.count)
        thresholds = {k: _res(resolution(curve, t), curve) for k, t in THRESHOLDS.items()}
        thresholds["half-bit"] = _res(resolution(curve, hb), curve)
        out.curves[name] = (curve, hb)
        out.report[name] = {"thresholds": thresholds,
                            "alignment": {"shift_px": ainfo["shift"], "twin": ainfo["twin"],
                                          "phase_rad": ainfo["phase"], "ramp_cycles": ainfo["ramp"],
                                          "residual": ainfo["residual"]},
                            "nyquist" + q_key(curve): display_q(curve, curve.q[-1] / curve.nyquist_fraction[-1]),
                            "kind": "resolution (independent half data sets)" if independent
                            else "reproducibility (runs of one data set, not a resolution)"}
        out.provenance = out.provenance or ra.provenance
    return out


def _prtf_of(rec: Reconstruction, data: Pattern, out: Resolution) -> None:
    obj, run_intensity, n_runs = _one_object(rec, out)
    if obj.shape != data.intensity.shape:
        raise DataError(f"{_name(rec)}: object shape {obj.shape} differs from the data shape "
                        f"{data.intensity.shape} of {data.source or 'the data'}; phased from another data set?")
    q_step = data.geometry.q_step(obj.ndim)
    real = data.geometry.real_pixel(obj.shape)
    if real is not None and rec.pixel_size is not None and not np.allclose(real, rec.pixel_size, rtol=1e-3):
        raise DataError(f"{_name(rec)}: pixel size {tuple(rec.pixel_size)} m does not match {tuple(real)} m "
                        f"of the data {data.source or ''}; phased from another data set?")
    if q_step is None:
        q_step = q_from_pixel(rec.pixel_size, obj.shape)
    curve, info = prtf(obj, data.intensity, data.measured, q_step=q_step, run_intensity=run_intensity,
                       n_runs=n_runs)
    res = resolution(curve, PRTF_THRESHOLD)
    out.curves["prtf"] = (curve, None)
    out.report["prtf"] = {**_res(res, curve), "threshold": PRTF_THRESHOLD, "scale_from": info["scale_from"],
                          "debiased_runs": info["debiased_runs"],
                          "nyquist" + q_key(curve): display_q(curve, curve.q[-1] / curve.nyquist_fraction[-1])}
    if info["scale_from"] == "fit":
        out.messages.append(("warning", f"{_name(rec)}: no run_intensity (not written by cxdi average); the "
                                        "PRTF scale is fitted to the data, which flatters the curve"))


def resolve_series(rec: Reconstruction, frames: Sequence[Pattern], times: Sequence[float] | None = None) -> Resolution:
    """One PRTF per frame of a time series (`cxdi phase --series`): the runs grouped by their
    `frame_index` (each group reduced to one object as `resolve` reduces a run file) against that frame's
    data. Curves "prtf_K" per frame K; report["prtf_series"]["frames"] the resolutions in time order."""
    groups: dict[int, list[Any]] = {}
    for run in rec.runs:
        k = run.params.get("frame_index")
        if k is None or isinstance(k, bool):
            raise DataError(f"{_name(rec)}: not a series (a run without frame_index); phase with --series")
        groups.setdefault(int(k), []).append(run)
    if sorted(groups) != list(range(len(frames))):
        raise DataError(f"{_name(rec)}: frames {sorted(groups)[:3]}...{sorted(groups)[-1]} do not match the "
                        f"{len(frames)} frames of the data; phased from another series?")
    out = Resolution(curves={}, report={}, messages=[], provenance=rec.provenance)
    rows, fitted = [], 0
    for k in sorted(groups):
        one = Resolution(curves={}, report={}, messages=[], provenance=[])
        _prtf_of(dataclasses.replace(rec, runs=groups[k], arrays={}, source=f"{_name(rec)}[frame {k}]"),
                 frames[k], one)
        out.curves[f"prtf_{k}"] = one.curves["prtf"]
        fitted += one.report["prtf"]["scale_from"] == "fit"
        rows.append({"frame_index": k, "time_s": float(times[k]) if times is not None else float(k),
                     "runs": len(groups[k]), **one.report["prtf"]})
    if fitted:
        out.messages.append(("warning", f"{_name(rec)}: {fitted} frame(s) of one run each: the PRTF scale is "
                                        "fitted to the frame's data, which flatters the curves"))
    out.report["prtf_series"] = {"threshold": PRTF_THRESHOLD, "frames": rows}
    return out


def _name(rec: Reconstruction) -> str:
    return rec.source or "reconstruction"


def _one_object(rec: Reconstruction, out: Resolution) -> tuple[np.ndarray, np.ndarray | None, int | None]:
    """(object, runs' mean Fourier intensity or None, number of runs averaged or None) of `rec`.

    An average (one run): its object, the /entry_1/run_intensity and metrics.n_runs that `cxdi average`
    writes. Several runs: the usable ones (`averaging.select_runs`) aligned and averaged."""
    if len(rec.runs) == 1:
        obj = rec.runs[0].obj
        ri = rec.arrays.get("run_intensity")
        n = rec.runs[0].metrics.get("n_runs")
        n_runs = int(n) if averaging.finite(n) and not isinstance(n, bool) and n >= 1 else None
        return obj, ri if ri is not None and ri.shape == obj.shape else None, n_runs
    objs, sups, order = _select([rec])
    out.messages.append(("info", f"{_name(rec)}: {len(rec.runs)} runs; aligning and averaging {len(order)} of them"))
    res = averaging.average_objects([objs[i] for i in order], [sups[i] for i in order])
    return res.average, res.run_intensity, len(res.used)


def _select(recs: Sequence[Reconstruction]) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Objects and supports of every run of `recs`, and the usable ones ranked (same data set checked;
    failed runs and runs without a metric never used)."""
    entries, order, _, _ = averaging.select_labelled(list(recs))
    return [run.obj for _, _, run, _ in entries], [run.support for _, _, run, _ in entries], order


def _split(recs: Sequence[Reconstruction]) -> tuple[Reconstruction, np.ndarray, np.ndarray]:
    """The even- and odd-ranked usable runs of `recs`, averaged separately."""
    objs, sups, order = _select(recs)
    if len(order) < 2:
        raise DataError(f"{_name(recs[0])}: --split-runs needs at least 2 usable runs, found {len(order)}")
    a = averaging.average_objects([objs[i] for i in order[0::2]], [sups[i] for i in order[0::2]]).average
    b = averaging.average_objects([objs[i] for i in order[1::2]], [sups[i] for i in order[1::2]]).average
    return recs[0], a, b


def q_from_pixel(pixel: Sequence[float] | None, shape: tuple[int, ...]) -> tuple[float, ...] | None:
    """q pitch 1/(N p) per axis from the real-space pixel, or None (pixel units)."""
    if pixel is None or len(pixel) != len(shape):
        return None
    return tuple(1.0 / (n * p) for n, p in zip(shape, pixel))


def q_key(curve: Curve) -> str:
    """The unit suffix of q in reports and files: "_nm-1", or "_px-1" without a pitch."""
    return "_nm-1" if curve.q_unit == "1/m" else "_px-1"


def display_q(curve: Curve, q: Any) -> Any:
    """q in nm^-1 when the curve is in 1/m, else unchanged (cycles per pixel)."""
    return q * 1e-9 if curve.q_unit == "1/m" else q


def _res(r: dict[str, Any], curve: Curve) -> dict[str, Any]:
    if curve.q_unit == "1/m":
        return {"q_nm-1": r["q"] * 1e-9, "resolution_nm": r["d"] * 1e9, "nyquist_fraction": r["nyquist_fraction"],
                "reached_nyquist": r["reached_nyquist"]}
    return {"q_px-1": r["q"], "resolution_px": r["d"], "nyquist_fraction": r["nyquist_fraction"],
            "reached_nyquist": r["reached_nyquist"]}
