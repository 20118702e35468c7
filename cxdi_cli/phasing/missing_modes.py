"""Missing-mode diagnostics: which object modes the support and the mask leave unconstrained.

Thibault, Elser, Jacobsen, Shapiro & Sayre 2006 (Acta Cryst. A 62, 248): an object confined to the
support S whose transform lies entirely in the unmeasured pixels M' is invisible to both
constraints; any multiple of it can be added to a reconstruction. The operator

    A = P_S F^-1 P_M' F P_S        (P_S: keep the support, P_M': keep the unmeasured pixels)

is Hermitian with eigenvalues in [0, 1]: an eigenvector's eigenvalue is the fraction of its power
that falls in the unmeasured pixels. Eigenvalues near 1 are modes the data do not constrain (their
amplitude is set only by the algorithm's drift); the trace, |S| |M'| / N, is the Shannon-like number
of degrees of freedom the mask removes from the support. When the beamstop is small against the
central speckle (a few pixels at sigma >= 2), every eigenvalue stays well below 1; a beamstop two or
three speckles wide leaves several modes above 0.9, smooth blobs that fill the support.

The leading eigenpairs come from ARPACK (`scipy.sparse.linalg.eigsh`) on a `LinearOperator` whose
product is two FFTs (`cxdi_cli.fft.FFTPair`), on the smaller side: the support's pixels, or the
unmeasured pixels through the dual operator P_M' F P_S F^-1 P_M' (same non-zero eigenvalues). Small
problems are solved densely.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cxdi_cli import fft
from cxdi_cli.model import ComputeError, DataError

#: modes with an eigenvalue above this are "unconstrained" (more than 90 % of their power unmeasured)
THRESHOLD = 0.9
_DENSE = 2500  # dimension up to which the operator is built (n products) and diagonalised densely


@dataclasses.dataclass
class MissingModes:
    """The leading eigenvalues (descending) and modes (centred complex arrays, unit norm) of A."""

    eigenvalues: np.ndarray
    modes: list[np.ndarray]
    count: int                   # eigenvalues above `threshold` among those computed
    complete: bool               # False when every computed eigenvalue is above it (count is a lower bound)
    threshold: float
    support_size: int
    unmeasured: int
    shannon: float               # trace of A = |S| |M'| / N

    def summary(self) -> dict[str, Any]:
        """A JSON-ready report (no arrays)."""
        return {"count": self.count, "count_is_lower_bound": not self.complete, "threshold": self.threshold,
                "eigenvalues": [round(float(v), 6) for v in self.eigenvalues],
                "support_pixels": self.support_size, "unmeasured_pixels": self.unmeasured,
                "degrees_of_freedom_removed": round(self.shannon, 3), "hint": hint(self)}


def hint(mm: MissingModes) -> str:
    """One line: is the masked region too large for this support?"""
    n = f"{mm.count}{'+' if not mm.complete else ''}"
    if mm.count == 0:
        top = float(mm.eigenvalues[0]) if mm.eigenvalues.size else 0.0
        return (f"no unconstrained mode (largest eigenvalue {top:.2f} < {mm.threshold}): the mask leaves "
                "every object mode measured")
    return (f"{n} object mode(s) have more than {100 * mm.threshold:.0f} % of their power in unmeasured pixels: "
            "the masked region (beamstop, gaps, missing wedge) is too big for this support (more than about "
            "the central speckle); "
            "expect low-frequency errors -- shrink the beamstop, add positivity, or use cpower/tv steps")


def _eig(matvec, n: int, k: int, dtype=np.complex128, max_restarts: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenpairs of a Hermitian positive operator of dimension n (descending; fewer when
    ARPACK has not converged on all of them within `max_restarts`)."""
    if n <= _DENSE:
        eye = np.eye(n, dtype=dtype)
        mat = np.stack([matvec(eye[:, j]) for j in range(n)], axis=1)
        mat = 0.5 * (mat + mat.conj().T)
        w, v = np.linalg.eigh(mat)
        order = np.argsort(w)[::-1]               # all of them: the count above the threshold is exact
        return w[order], v[:, order[:k]]
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
    op = LinearOperator((n, n), matvec=matvec, dtype=dtype)
    rng = np.random.default_rng(0)            # a fixed generic start: a symmetric one (all ones) keeps the
    v0 = rng.standard_normal(n) + 1j * rng.standard_normal(n)  # Krylov space symmetric and misses degenerate modes
    k = min(k, n - 2)
    try:  # a missing wedge puts hundreds of eigenvalues within 1e-3 of 1: bounded restarts, then what converged
        w, v = eigsh(op, k=k, which="LA", tol=1e-6, v0=v0.astype(dtype), ncv=min(n - 1, max(4 * k, 40)),
                     maxiter=max_restarts)
    except ArpackNoConvergence as exc:
        w, v = exc.eigenvalues, exc.eigenvectors
        if w.size == 0:
            raise ComputeError(f"the missing-mode eigenvalues did not converge in {max_restarts} restarts "
                               f"(dimension {n}): give a tighter --support or bin the data") from None
    order = np.argsort(w)[::-1]
    return w[order], v[:, order]


def missing_modes(support: np.ndarray, unmeasured: np.ndarray, k: int = 12, threshold: float = THRESHOLD,
                  n_modes: int = 3) -> MissingModes:
    """Leading eigenvalues and modes of A = P_S F^-1 P_M' F P_S (support and unmeasured: centred bool).

    The `k` largest eigenvalues are reported (fewer if the operator's rank is smaller); the count
    above `threshold` is exact when the operator is small enough to diagonalise densely (dimension
    up to _DENSE on the smaller side), else a lower bound once all k are above it. `n_modes` modes
    are kept as centred, unit-norm complex images of the full shape."""
    support = np.asarray(support, bool)
    unmeasured = np.asarray(unmeasured, bool)
    if support.shape != unmeasured.shape:
        raise DataError(f"support shape {support.shape} differs from the mask {unmeasured.shape}")
    if not support.any():
        raise DataError("the support is empty: no object modes to analyse")
    shape = support.shape
    n_tot = support.size
    s_idx = np.flatnonzero(np.fft.ifftshift(support))
    m_idx = np.flatnonzero(np.fft.ifftshift(unmeasured))
    shannon = s_idx.size * m_idx.size / n_tot
    if m_idx.size == 0:
        return MissingModes(np.zeros(0), [], 0, True, threshold, int(s_idx.size), 0, 0.0)
    pair = fft.FFTPair(shape)
    flat = pair.buffer.reshape(-1)
    on_support = s_idx.size <= m_idx.size
    inner, outer = (s_idx, m_idx) if on_support else (m_idx, s_idx)

    def matvec(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v).reshape(-1)
        flat[:] = 0
        flat[inner] = v
        pair.forward() if on_support else pair.inverse()
        keep = flat[outer].copy()
        flat[:] = 0
        flat[outer] = keep
        pair.inverse() if on_support else pair.forward()
        return flat[inner].astype(np.complex128)

    rank = min(s_idx.size, m_idx.size)
    w, v = _eig(matvec, inner.size, min(k, rank))
    w = np.clip(w.real, 0.0, 1.0)
    exact = w.size == inner.size                  # the dense path: every eigenvalue
    modes = []
    for j in range(min(n_modes, v.shape[1])):
        flat[:] = 0
        flat[inner] = v[:, j]
        if not on_support:                     # the real-space mode: P_S F^-1 of the unmeasured-side vector
            pair.inverse()
            keep = flat[s_idx].copy()
            flat[:] = 0
            flat[s_idx] = keep
        m = np.fft.fftshift(pair.buffer.copy())
        norm = np.linalg.norm(m)
        if norm > 0:
            m /= norm
            big = m.reshape(-1)[np.argmax(np.abs(m))]  # global phase: the largest value real positive
            m *= np.conj(big) / abs(big)
        modes.append(m.astype(np.complex64))
    count = int(np.count_nonzero(w > threshold))
    complete = exact or ((count < w.size or w.size >= rank) and w.size == min(k, rank))
    return MissingModes(w[:k], modes, count, complete, threshold, int(s_idx.size), int(m_idx.size), shannon)


def object_support(intensity: np.ndarray, measured: np.ndarray, threshold: float = 0.05,
                   sigma: float = 1.0) -> np.ndarray:
    """A support estimate from the data (centred bool): the autocorrelation support (phase's initial
    support) shrunk by 2 about the centre. The autocorrelation of an object spans S - S, twice a
    convex centro-symmetric S; the initial support of `phase` itself is that larger set, so counting
    modes with it would overstate them."""
    from cxdi_cli.phasing.support import autocorrelation_support
    data_f = np.fft.ifftshift(np.where(measured, np.maximum(intensity, 0), 0)).astype(np.float32)
    auto = np.fft.fftshift(autocorrelation_support(data_f, np.fft.ifftshift(measured), threshold=threshold,
                                                   sigma=sigma))
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in auto.shape], indexing="ij")
    idx = tuple(np.clip(2 * g + n // 2, 0, n - 1) for g, n in zip(grids, auto.shape))
    inside = np.ones(auto.shape, bool)
    for g, n in zip(grids, auto.shape):
        inside &= np.abs(2 * g) < n // 2 + 1
    return auto[idx] & inside


def for_pattern(pattern: Any, support: np.ndarray | None = None, k: int = 12, threshold: float = THRESHOLD,
                n_modes: int = 3) -> MissingModes:
    """The missing modes of a `Pattern` (unmeasured = every masked pixel), with `support` (centred
    bool) or the data's own estimate (`object_support`)."""
    measured = pattern.measured
    if support is None:
        support = object_support(np.asarray(pattern.intensity, np.float32), measured)
    return missing_modes(support, ~measured, k=k, threshold=threshold, n_modes=n_modes)
