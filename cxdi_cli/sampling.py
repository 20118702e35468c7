"""How finely a measured pattern samples the object's transform: the linear oversampling from the data.

Part of the base: the reduction stages, phasing and `info` all report it, so it imports numpy only."""
from __future__ import annotations

import numpy as np

#: shells whose mean is below this many photons per pixel are left out: their contrast is mostly
#: Poisson noise, and any error in the noise model is amplified there by 1/<I>
MIN_SHELL_MEAN = 4.0


def _radius(shape: tuple[int, ...]) -> np.ndarray:
    """Integer distance (pixels) of every pixel from the centre n // 2 (int32; no full-size grids)."""
    r2 = np.zeros((1,) * len(shape), np.float32)
    for ax, n in enumerate(shape):
        g = (np.arange(n, dtype=np.float32) - np.float32(n // 2)) ** 2
        sh = [1] * len(shape)
        sh[ax] = n
        r2 = r2 + g.reshape(sh)
    return np.sqrt(r2).astype(np.int32)


#: arrays above this many pixels are estimated on their central part of at most this many pixels
#: (`estimate_oversampling`); the speckles' size is the same everywhere, and the bright shells the
#: estimate uses are the central ones
MAX_PIXELS = 1 << 24


def _central_part(data: np.ndarray, meas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The centred crop of at most MAX_PIXELS pixels (each axis cut to the same length around n // 2,
    which stays the crop's centre), or the arrays themselves when small enough."""
    if data.size <= MAX_PIXELS:
        return data, meas
    side = int(round(MAX_PIXELS ** (1.0 / data.ndim)))
    side -= side % 2
    sl = tuple(slice(n // 2 - min(n, side) // 2, n // 2 - min(n, side) // 2 + min(n, side)) for n in data.shape)
    return data[sl], meas[sl]


def estimate_oversampling(intensity: np.ndarray, measured: np.ndarray) -> float | None:
    """Linear oversampling sigma from the speckle pattern's correlation between neighbouring pixels.

    The speckle contrast x = I / <I>_shell - 1 (the radial average over measured pixels, zero counts
    included) has, for an object of extent S sampled at sigma = lambda D / (p S) pixels per speckle,
    the neighbour correlation C(1)/C(0) = sinc^2(1/sigma) (sinc(u) = sin(pi u)/(pi u)); C(0) of
    integer data (counts) is corrected for the Poisson noise variance, uncorrelated between pixels.
    Only shells with a mean of at least MIN_SHELL_MEAN photons count, and none within two speckles
    of q = 0 (there the envelope changes faster than the radial average follows: on simulated 2D
    data those shells read 1.7-1.9 for 4.3-5.6); the first estimate sets that radius, the second is
    returned. Solved per axis; the smallest value (the object's largest extent along an axis) is
    returned, None when too few pixels are measured. Centred input (q = 0 at n // 2). Arrays of more
    than MAX_PIXELS pixels are estimated on their central MAX_PIXELS (a 512^3 volume: 26 s whole)."""
    data, meas = _central_part(np.asarray(intensity, np.float32), np.asarray(measured, bool))
    if np.count_nonzero(meas & (data > 0)) < 64:
        return None
    radius = _radius(data.shape)
    r_meas = radius[meas]
    sums = np.bincount(r_meas, weights=data[meas], minlength=int(radius.max()) + 1)
    counts = np.bincount(r_meas, minlength=int(radius.max()) + 1)
    del r_meas
    shell = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    shell = np.where(shell >= MIN_SHELL_MEAN, shell, 0.0).astype(np.float32)
    sel = np.flatnonzero(meas & (data > 0))
    counts_data = bool(np.all(data.reshape(-1)[sel] == np.rint(data.reshape(-1)[sel])))
    del sel
    sigma = _estimate(data, meas, radius, shell, counts_data, 4)
    if sigma is None:
        return None
    return _estimate(data, meas, radius, shell, counts_data, max(4, int(np.ceil(2 * sigma)))) or sigma


def _estimate(data: np.ndarray, meas: np.ndarray, radius: np.ndarray, shell: np.ndarray, counts_data: bool,
              r_min: int) -> float | None:
    """One estimate from the shells at radius >= r_min (see `estimate_oversampling`)."""
    shell = shell.copy()
    shell[:r_min] = 0
    mean = shell[radius]
    ok = meas & (mean > 0)
    n_ok = int(np.count_nonzero(ok))
    if n_ok < 64:
        return None
    inv = np.divide(np.float32(1.0), mean, out=np.zeros_like(mean), where=ok)
    del mean
    x = data * inv                         # float32, in place from here on
    x -= np.float32(1.0)
    x[~ok] = 0
    # C(0) less the Poisson noise var(I)/<I>^2 = 1/<I> (inv is 0 off `ok`) when the data are counts;
    # non-integer data are expected intensities (a noise-free simulation: 1814 for 5 on a 160^3 volume
    # when its 1/<I> was subtracted)
    noise = float(inv.sum(dtype=np.float64)) if counts_data else 0.0
    del inv
    flat = x.reshape(-1)
    c0 = (float(np.dot(flat, flat)) - noise) / n_ok
    if c0 <= 0:
        return None
    estimates = []
    for ax in range(data.ndim):
        a = [slice(None)] * data.ndim
        b = [slice(None)] * data.ndim
        a[ax], b[ax] = slice(0, -1), slice(1, None)
        n_pair = int(np.count_nonzero(ok[tuple(a)] & ok[tuple(b)]))
        if n_pair < 32:
            continue
        # x is 0 off `ok`, so the sum over all neighbours is the sum over measured pairs
        c1 = float(np.sum(x[tuple(a)] * x[tuple(b)], dtype=np.float64))
        ratio = c1 / n_pair / c0
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
