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
from cxdi_cli.phasing.kernels import kernel


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
    pair = fft.FFTPair(np.shape(intensity))   # in place: one complex array (3D memory), the runs' plans
    buf = pair.buffer
    buf.real[...] = intensity
    buf.real[~np.asarray(measured, bool)] = 0
    buf.imag[...] = 0
    factors = _gaussian_factors(buf.shape, max(0.0, float(sigma)))  # and the 1/N of numpy's inverse transform
    _gaussian_product(buf.reshape(_as_3d(buf.shape)), *factors)
    pair.inverse(scale=False)
    return np.abs(buf)


def autocorrelation_support(intensity: np.ndarray, measured: np.ndarray, *, threshold: float = 0.1,
                            sigma: float = 1.0, halve: bool = False) -> np.ndarray:
    """Initial support: the blurred autocorrelation above `threshold` times its maximum (bool, FFT order).

    The autocorrelation spans the object's difference set S - S, twice the object along every axis
    (2^N times its volume: 145k voxels for a 16k-voxel 3D particle). `halve` returns (S - S)/2
    instead (`halve_about_origin`), the object's own extent for a convex centro-symmetric object and
    close to it for compact ones (a 15-voxel porous particle: 1.9 times its volume, 30 voxels: 1.6).
    Raises DataError when nothing is measured."""
    if not np.any(measured & (intensity > 0)):
        raise DataError("no measured pixel holds any photon: nothing to phase")
    auto = autocorrelation(intensity, measured, sigma)
    support = auto > threshold * auto.max()
    return halve_about_origin(support) if halve else support


def halve_about_origin(mask: np.ndarray) -> np.ndarray:
    """The mask scaled by 1/2 about the origin (index 0, FFT order): out[r] = mask[2r] for |r| < n/4."""
    out = mask
    for ax, n in enumerate(mask.shape):
        c = np.fft.fftfreq(n, 1.0 / n).astype(np.int64)        # signed coordinates of FFT order
        inside = np.abs(2 * c) < n // 2 + (n % 2)
        shape = [1] * mask.ndim
        shape[ax] = n
        out = np.take(out, (2 * c) % n, axis=ax) & inside.reshape(shape)
    return out


def shrink_wrap(state, threshold: float | None = None, sigma: float | None = None) -> None:
    """Replace `state.support` by {blur(|rho|, sigma) > threshold * max} (the state's schedule by default).

    threshold and sigma go linearly from state.support_threshold[0] and state.support_smooth[0] to
    their [1] over the recipe's iterations. The blur is a product in Fourier space on the pair's
    buffer (its plans, no other full-size array: the separable Gaussian factors are applied in one
    pass); the buffer holds rho again on return. A support that would fall below
    `state.support_min_fraction` of the initial one, or vanish, is not applied.
    """
    frac = min(1.0, state.iteration / max(1, state.total))
    if threshold is None:
        t0, t1 = state.support_threshold
        threshold = t0 + (t1 - t0) * frac
    if sigma is None:
        s0, s1 = state.support_smooth
        sigma = s0 + (s1 - s0) * frac
    buf = state.pair.buffer
    flat = buf.reshape(-1)
    rho = state.rho.reshape(-1)
    _abs_into(flat, rho)
    state.pair.forward(scale=False)
    _gaussian_product(buf.reshape(_as_3d(buf.shape)), *_gaussian_factors(buf.shape, float(sigma)))
    state.pair.inverse(scale=False)
    thr = np.float32(threshold) * np.float32(_max_real(flat))
    count = int(_count_above(flat, thr))
    ok = count > 0 and count >= state.support_min_fraction * max(1, state.initial_support_size)
    _set_support(flat, rho, state.support.reshape(-1), thr, ok)


def _as_3d(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (1,) * (3 - len(shape)) + tuple(shape)  # type: ignore[return-value]


def _gaussian_factors(shape: tuple[int, ...], sigma: float) -> list[np.ndarray]:
    """Per-axis factors of `gaussian_transfer` (padded to 3 axes), the 1/N of the unscaled pair in the first."""
    out = []
    for n in _as_3d(shape):
        f = np.fft.fftfreq(n).astype(np.float32)
        out.append(np.exp(np.float32(-2.0 * np.pi ** 2 * sigma ** 2) * f * f).astype(np.float32))
    out[0] = (out[0] * np.float32(1.0 / float(np.prod(shape)))).astype(np.float32)
    return out


def _np_abs_into(buf, rho):
    buf.real = np.abs(rho)
    buf.imag = 0


@kernel(_np_abs_into)
def _abs_into(buf, rho):  # pragma: no cover - compiled
    """buf <- |rho| (real)."""
    for i in range(buf.size):
        z = rho[i]
        buf[i] = np.sqrt(z.real * z.real + z.imag * z.imag)


def _np_gaussian_product(buf3, g0, g1, g2):
    buf3 *= g0[:, None, None] * g1[None, :, None] * g2[None, None, :]


@kernel(_np_gaussian_product)
def _gaussian_product(buf3, g0, g1, g2):  # pragma: no cover - compiled
    """buf3[i, j, k] *= g0[i] g1[j] g2[k] (a separable transfer function, one pass)."""
    for i in range(buf3.shape[0]):
        for j in range(buf3.shape[1]):
            gij = g0[i] * g1[j]
            for k in range(buf3.shape[2]):
                buf3[i, j, k] = buf3[i, j, k] * (gij * g2[k])


def _np_max_real(buf):
    return float(buf.real.max())


@kernel(_np_max_real)
def _max_real(buf):  # pragma: no cover - compiled
    """max of the real part."""
    m = buf[0].real
    for i in range(buf.size):
        m = max(m, buf[i].real)
    return m


def _np_count_above(buf, thr):
    return int(np.count_nonzero(buf.real > thr))


@kernel(_np_count_above)
def _count_above(buf, thr):  # pragma: no cover - compiled
    """Pixels whose real part exceeds thr."""
    n = 0
    for i in range(buf.size):
        n += buf[i].real > thr
    return n


def _np_set_support(buf, rho, support, thr, apply):
    if apply:
        support[:] = buf.real > thr
    buf[:] = rho


@kernel(_np_set_support)
def _set_support(buf, rho, support, thr, apply):  # pragma: no cover - compiled
    """support <- real(buf) > thr when `apply`; then buf <- rho."""
    for i in range(buf.size):
        if apply:
            support[i] = buf[i].real > thr
        buf[i] = rho[i]


def support_size_check(support: np.ndarray, source: str) -> None:
    """DataError when the support is empty or larger than half the array (sigma^N below 2)."""
    n = int(np.count_nonzero(support))
    if n == 0:
        raise DataError(f"{source}: the support is empty")
    if n > support.size / 2:
        raise DataError(f"{source}: the support covers {100 * n / support.size:.0f}% of the array (more than half): "
                        "the object is not oversampled enough to be phased (crop less, or bin less)")
