"""Detwinning: break the centro-symmetric twin ambiguity early in a run.

|F rho(r)| = |F conj(rho(-r))|: the object and its twin fit the data equally, and a run that starts
from a centro-symmetric support (the autocorrelation's) can stall in a superposition of both. For a
few tens of iterations the support is cut to one half, the pixels on one side of its centre of mass
along an axis; the iterate that survives there has no centro-symmetric partner, so one of the two
solutions wins. The full support is restored afterwards (the `detwin` recipe step in algorithms.py).
"""
from __future__ import annotations

import numpy as np


def half_support(support: np.ndarray, axis: int = 0, weights: np.ndarray | None = None) -> np.ndarray:
    """The part of `support` (bool, FFT order) on the low side of its centre of mass along `axis`
    (coordinates taken centred, -n/2 .. n/2 - 1; `weights`, e.g. |rho|, weigh the centre of mass)."""
    axis = int(axis) % support.ndim
    n = support.shape[axis]
    coord = ((np.arange(n) + n // 2) % n - n // 2).astype(np.float64)
    sh = [1] * support.ndim
    sh[axis] = n
    coord = coord.reshape(sh)
    w = support.astype(np.float64) if weights is None else np.where(support, np.abs(weights), 0).astype(np.float64)
    total = w.sum()
    if not total > 0:
        return support.copy()
    com = float((w * coord).sum() / total)
    return support & (coord <= com)
