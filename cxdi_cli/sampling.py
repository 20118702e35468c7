"""How finely a measured pattern samples the object's transform: the linear oversampling from the data.

Part of the base: the reduction stages, phasing and `info` all report it, so it imports numpy only."""
from __future__ import annotations

import numpy as np


def estimate_oversampling(intensity: np.ndarray, measured: np.ndarray) -> float | None:
    """Linear oversampling sigma from the speckle pattern's correlation between neighbouring pixels.

    The speckle contrast x = I / <I>_shell - 1 (the radial average taken over measured pixels) has,
    for an object of extent S sampled at sigma = lambda D / (p S) pixels per speckle, the
    neighbour correlation C(1)/C(0) = sinc^2(1/sigma) (sinc(u) = sin(pi u)/(pi u)); C(0) is corrected
    for the Poisson noise variance, which is uncorrelated between pixels. Solved per axis; the
    smallest value (the object's largest extent) is returned, None when too few pixels are measured.
    Centred input (q = 0 at n // 2)."""
    data = np.asarray(intensity, np.float64)
    meas = np.asarray(measured, bool) & (data > 0)
    if meas.sum() < 64:
        return None
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in data.shape], indexing="ij")
    radius = np.sqrt(sum(g.astype(np.float64) ** 2 for g in grids)).astype(np.int64)
    sums = np.bincount(radius[meas], weights=data[meas], minlength=radius.max() + 1)
    counts = np.bincount(radius[meas], minlength=radius.max() + 1)
    mean = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)[radius]
    ok = meas & (mean > 0)
    x = np.where(ok, data / np.where(ok, mean, 1.0) - 1.0, 0.0)
    noise = np.where(ok, 1.0 / np.where(ok, mean, 1.0), 0.0)   # Poisson: var(I)/<I>^2 = 1/<I>
    c0 = float(np.sum(x * x - noise) / ok.sum())
    if c0 <= 0:
        return None
    estimates = []
    for ax in range(data.ndim):
        a = [slice(None)] * data.ndim
        b = [slice(None)] * data.ndim
        a[ax], b[ax] = slice(0, -1), slice(1, None)
        pair = ok[tuple(a)] & ok[tuple(b)]
        if pair.sum() < 32:
            continue
        ratio = float(np.sum((x[tuple(a)] * x[tuple(b)])[pair]) / pair.sum()) / c0
        if ratio <= 0:
            estimates.append(1.0)
            continue
        target = np.sqrt(min(ratio, 0.999999))
        lo, hi = 1e-6, 1.0                 # sinc(u) falls from 1 to 0 on (0, 1]: bisection on u = 1/sigma
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if np.sinc(mid) > target:
                lo = mid
            else:
                hi = mid
        estimates.append(1.0 / (0.5 * (lo + hi)))
    return float(min(estimates)) if estimates else None
