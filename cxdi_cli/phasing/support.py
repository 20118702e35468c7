"""Object support: the initial estimate from the autocorrelation, and shrink-wrap updates.

All arrays are in FFT order (the origin of real space at index 0), as inside a phasing run.

- Initial support (Fienup 1987; Marchesini et al. 2003): the autocorrelation of the object is the
  inverse transform of the measured intensity; it spans twice the object. It is blurred by a
  Gaussian (sigma in pixels) and thresholded at a fraction of its maximum. Masked pixels count as
  zero intensity.
- Shrink-wrap (Marchesini et al. 2003, doi:10.1103/PhysRevB.68.140101): every k iterations the
  support becomes {blur(|rho|, sigma) > threshold * max}, sigma shrinking linearly over the run.
"""
from __future__ import annotations

import numpy as np

from cxdi_cli import fft
from cxdi_cli.model import DataError


def gaussian_transfer(shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """The transform (FFT order) of a unit-sum Gaussian of `sigma` pixels: exp(-2 pi^2 sigma^2 f^2)."""
    out = np.ones(shape, np.float32)
    for ax, n in enumerate(shape):
        f = np.fft.fftfreq(n).astype(np.float32)
        g = np.exp(np.float32(-2.0 * np.pi ** 2 * sigma ** 2) * f * f).astype(np.float32)
        sh = [1] * len(shape)
        sh[ax] = n
        out *= g.reshape(sh)
    return out


def autocorrelation(intensity: np.ndarray, measured: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """|inverse transform of the measured intensity|, blurred by `sigma` pixels (FFT order in and out)."""
    spec = np.where(measured, intensity, 0).astype(np.complex64)
    if sigma > 0:
        spec *= gaussian_transfer(spec.shape, sigma)
    return np.abs(fft.ifftn(spec)).astype(np.float32)


def autocorrelation_support(intensity: np.ndarray, measured: np.ndarray, *, threshold: float = 0.1,
                            sigma: float = 1.0) -> np.ndarray:
    """Initial support: the blurred autocorrelation above `threshold` times its maximum (bool, FFT order).

    Raises DataError when nothing is measured or the support fills more than half of the array (the
    object is then not oversampled: sigma^N = array size / object size must exceed 2)."""
    if not np.any(measured & (intensity > 0)):
        raise DataError("no measured pixel holds any photon: nothing to phase")
    auto = autocorrelation(intensity, measured, sigma)
    support = auto > threshold * auto.max()
    return support


def shrink_wrap(state, threshold: float | None = None, sigma: float | None = None) -> None:
    """Replace `state.support` by {blur(|rho|, sigma) > threshold * max} (the state's schedule by default).

    threshold and sigma go linearly from state.support_threshold[0] and state.support_smooth[0] to
    their [1] over the recipe's iterations. The pair's
    buffer is used as scratch and holds rho again on return. A support that would fall below
    `state.support_min_fraction` of the initial one, or vanish, is not applied.
    """
    frac = min(1.0, state.iteration / max(1, state.total))
    if threshold is None:
        t0, t1 = state.support_threshold
        threshold = t0 + (t1 - t0) * frac
    if sigma is None:
        s0, s1 = state.support_smooth
        sigma = s0 + (s1 - s0) * frac
    thr = threshold
    buf = state.pair.buffer
    np.abs(state.rho, out=buf.real)   # |rho| into the real part of the pair's buffer
    buf.imag = 0
    state.pair.forward(scale=False)
    buf *= gaussian_transfer(buf.shape, float(sigma))
    state.pair.inverse(scale=False)
    blurred = buf.real
    new = blurred > np.float32(thr) * blurred.max()
    count = int(np.count_nonzero(new))
    if count > 0 and count >= state.support_min_fraction * max(1, state.initial_support_size):
        state.support[...] = new
    buf[...] = state.rho


def support_size_check(support: np.ndarray, source: str) -> None:
    """DataError when the support is empty or larger than half the array (sigma^N below 2)."""
    n = int(np.count_nonzero(support))
    if n == 0:
        raise DataError(f"{source}: the support is empty")
    if n > support.size / 2:
        raise DataError(f"{source}: the support covers {100 * n / support.size:.0f}% of the array (more than half): "
                        "the object is not oversampled enough to be phased (crop less, or bin less)")
