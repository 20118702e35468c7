"""Alignment of reconstructions: sub-pixel translation, twin, linear phase ramp and global phase.

In the base because two stages need it: analysis (averaging, `cxdi_cli.analysis.align` is its public
name there) and phasing (consensus selection and guided generations align runs to each other).

Phase retrieval leaves every run defined only up to the trivial ambiguities of the Fourier modulus:
a translation of the object, its twin conj(rho(-r)), a constant phase, and (when the centre of the
diffraction pattern is off by a fraction of a pixel) a linear phase ramp. `align_to` removes all four
against a reference; `nrms_error` is the comparison every test and `average` uses.

Conventions: arrays are centred (DESIGN §4), r is counted from index n // 2 of every axis; a shift
``s`` applied to ``x`` gives ``x(r - s)``; a ramp ``k`` (cycles per array length, per axis) multiplies
by ``exp(2 pi i k . r / n)``.

References
----------
M. Guizar-Sicairos, S. T. Thurman, J. R. Fienup, "Efficient subpixel image registration algorithms",
Opt. Lett. 33, 156-158 (2008), doi:10.1364/OL.33.000156.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from cxdi_cli import fft
from cxdi_cli.model import DataError

__all__ = ["register_translation", "fourier_shift", "phase_ramp", "twin_image", "align_to", "nrms_error",
           "optimal_scale", "remove_global_phase"]


def _coords(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Centred integer coordinates per axis, broadcastable (r = i - n // 2)."""
    out = []
    for ax, n in enumerate(shape):
        c = np.arange(n, dtype=np.float64) - n // 2
        sh = [1] * len(shape)
        sh[ax] = n
        out.append(c.reshape(sh))
    return out


def _freqs(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Signed DFT frequencies (cycles / sample) per axis, in FFT order, broadcastable."""
    out = []
    for ax, n in enumerate(shape):
        sh = [1] * len(shape)
        sh[ax] = n
        out.append(np.fft.fftfreq(n).reshape(sh))
    return out


def _upsampled_cc(spectrum: np.ndarray, centre: np.ndarray, upsample: int, size: int) -> np.ndarray:
    """Cross-correlation sum_k X(k) exp(2 pi i k.d) on a grid d = centre + (m - size // 2) / upsample.

    A matrix-multiply DFT restricted to a small neighbourhood (Guizar-Sicairos et al. 2008): one
    tensor contraction per axis, so the cost is O(N * size) per axis instead of an upsampled FFT.
    """
    out = spectrum
    for ax, n in enumerate(spectrum.shape):
        d = centre[ax] + (np.arange(size) - size // 2) / upsample
        kernel = np.exp(2j * np.pi * np.outer(d, np.fft.fftfreq(n)))  # (size, n)
        moved = np.moveaxis(out, ax, 0)
        # small products: einsum's own loops, not BLAS, whose threads cost milliseconds per call in
        # synchronisation on a busy host; large (3D) ones: BLAS
        flat = moved.reshape(n, -1)
        flat = kernel @ flat if flat.size > 1 << 20 else np.einsum("mk,kr->mr", kernel, flat, optimize=False)
        out = np.moveaxis(flat.reshape((size,) + moved.shape[1:]), 0, ax)
    return out


def register_translation(a: np.ndarray, b: np.ndarray, upsample: int = 20) -> np.ndarray:
    """Sub-pixel translation between two arrays by upsampled cross-correlation (2D or 3D).

    Returns the shift ``s`` (pixels, one float per axis) such that ``fourier_shift(b, s)`` best
    matches ``a``, i.e. ``a(r) ~ b(r - s)``. The integer peak of the cross-correlation
    ``IFFT(A conj(B))`` is refined on a 1.5-pixel neighbourhood sampled at 1/`upsample` pixel with a
    matrix DFT (Guizar-Sicairos, Thurman & Fienup, Opt. Lett. 33, 156 (2008),
    doi:10.1364/OL.33.000156). Accuracy is about 1/`upsample` pixel.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise DataError(f"cannot register arrays of different shapes {a.shape} and {b.shape}")
    return _register(fft.fftn(a), b, upsample)


def _register(spectrum_a: np.ndarray, b: np.ndarray, upsample: int) -> np.ndarray:
    """`register_translation` with the transform of `a` already computed (reused across candidates)."""
    spectrum = spectrum_a * np.conj(fft.fftn(b))
    cc = np.abs(fft.ifftn(spectrum))
    peak = np.array(np.unravel_index(int(np.argmax(cc)), cc.shape), dtype=np.float64)
    shape = np.array(b.shape)
    peak = np.where(peak > shape // 2, peak - shape, peak)
    if upsample <= 1:
        return peak
    upsample = int(upsample)
    size = int(np.ceil(1.5 * upsample))
    size += 1 - size % 2  # odd: the coarse peak sits at the centre of the neighbourhood
    fine = np.abs(_upsampled_cc(spectrum.astype(np.complex128), peak, upsample, size))
    idx = np.array(np.unravel_index(int(np.argmax(fine)), fine.shape), dtype=np.float64)
    return peak + (idx - size // 2) / upsample


def fourier_shift(x: np.ndarray, shift: Any) -> np.ndarray:
    """Translate ``x`` by ``shift`` pixels (sub-pixel, periodic): returns ``x(r - shift)``.

    Applied as the phase ramp exp(-2 pi i k.s) on the transform (Fourier shift theorem).
    """
    x = np.asarray(x)
    shift = np.broadcast_to(np.asarray(shift, dtype=np.float64), (x.ndim,))
    if not np.any(shift):
        return x.astype(np.result_type(x.dtype, np.complex64), copy=True)
    phase = sum(f * s for f, s in zip(_freqs(x.shape), shift))
    ramp = np.exp(-2j * np.pi * phase).astype(fft._complex_dtype(x))
    return fft.ifftn(fft.fftn(x) * ramp)


def phase_ramp(shape: tuple[int, ...], ramp: Any, dtype: Any = np.complex64) -> np.ndarray:
    """exp(2 pi i sum_ax ramp[ax] * r_ax / n_ax), r counted from index n // 2 (``ramp`` in cycles per
    array length; a ramp of k shifts the transform by k pixels)."""
    ramp = np.broadcast_to(np.asarray(ramp, dtype=np.float64), (len(shape),))
    arg = sum(k * r / n for k, r, n in zip(ramp, _coords(tuple(shape)), shape))
    return np.exp(2j * np.pi * arg).astype(dtype)


def twin_image(x: np.ndarray) -> np.ndarray:
    """The twin image conj(rho(-r)), with r counted from index n // 2 of every axis.

    It has the same Fourier modulus as rho (its transform is conj(F)), so phase retrieval cannot
    tell the two apart.
    """
    y = np.conj(np.asarray(x))
    for ax, n in enumerate(y.shape):
        y = np.flip(y, axis=ax)
        if n % 2 == 0:
            y = np.roll(y, 1, axis=ax)  # i -> 2 (n // 2) - i  (mod n)
    return np.ascontiguousarray(y)


def remove_global_phase(obj: np.ndarray, support: np.ndarray | None = None) -> np.ndarray:
    """The object with its global phase removed: the phase of sum(obj) over `support` (the whole
    array when None or empty), i.e. the amplitude-weighted mean phase, becomes 0.

    The one convention for pictures (`cxdi show` PNG, terminal) and TIFF export of a run.
    """
    obj = np.asarray(obj)
    support = None if support is None else np.asarray(support, bool)
    ref = np.sum(obj[support]) if support is not None and support.any() else np.sum(obj)
    if abs(ref) == 0:
        return obj
    return obj * np.conj(ref) / abs(ref)


def optimal_scale(a: np.ndarray, ref: np.ndarray) -> complex:
    """The complex scalar c minimising ||c a - ref||: c = sum(conj(a) ref) / sum(|a|^2)."""
    den = float(np.vdot(a, a).real)
    return complex(np.vdot(a, ref) / den) if den > 0 else 0j


def _ramp_from_gradient(product: np.ndarray) -> np.ndarray:
    """Mean phase gradient of ``product`` (e.g. a * conj(ref)) per axis, as a ramp in cycles per length.

    Each axis: angle(sum P(r + e) conj(P(r))) / (2 pi) * n: an amplitude-weighted estimate that needs
    no phase unwrapping.
    """
    out = np.zeros(product.ndim)
    for ax, n in enumerate(product.shape):
        lo = [slice(None)] * product.ndim
        hi = [slice(None)] * product.ndim
        lo[ax] = slice(0, -1)
        hi[ax] = slice(1, None)
        s = np.vdot(product[tuple(lo)], product[tuple(hi)])
        out[ax] = np.angle(s) / (2 * np.pi) * n if s != 0 else 0.0
    return out


def _peak_correlation(ref: np.ndarray, x: np.ndarray) -> float:
    """Normalised modulus of the inner product, in [0, 1]."""
    den = np.sqrt(float(np.vdot(ref, ref).real) * float(np.vdot(x, x).real))
    return float(abs(np.vdot(ref, x)) / den) if den > 0 else 0.0


def _align_candidate(obj: np.ndarray, ref: np.ndarray, ref_spectrum: np.ndarray, k: np.ndarray | None,
                     upsample: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Remove ramp and translation of one candidate (obj or its twin).

    `ref_spectrum` is fftn(ref); `k` the ramp from the |F| registration (None: no ramp removal). A
    candidate and its twin share |F| (the twin's transform is conj(F)), hence the same `k`.
    """
    x = obj
    if k is not None:
        x = x * phase_ramp(x.shape, -k, x.dtype)
    s = _register(ref_spectrum, x, upsample)
    x = fourier_shift(x, s)
    if k is None:
        return x, s, np.zeros(obj.ndim)
    # refine: residual linear phase of x conj(ref), weighted by both amplitudes
    dk = _ramp_from_gradient(x * np.conj(ref))
    x = x * phase_ramp(x.shape, -dk, x.dtype)
    return x, s, k + dk


def align_to(obj: np.ndarray, ref: np.ndarray, *, twin: bool = True, ramp: bool = True,
             upsample: int = 20) -> tuple[np.ndarray, dict[str, Any]]:
    """Align a complex object onto a reference: translation, twin, linear phase ramp, global phase.

    Steps, for ``obj`` and (``twin=True``) for its twin conj(obj(-r)): the phase ramp from the
    sub-pixel registration of the Fourier moduli (a ramp translates |F|; a translation leaves |F|
    unchanged), the translation from the upsampled complex cross-correlation, a refinement of the
    ramp from the mean phase gradient of obj * conj(ref); the candidate with the larger normalised
    correlation |<ref, x>| / (||ref|| ||x||) wins. Finally the global phase of <ref, x> is removed.

    Returns ``(aligned, info)``; ``info`` has ``shift`` (pixels per axis, applied after the ramp),
    ``twin`` (bool), ``ramp`` (cycles per array length per axis, removed), ``phase`` (radians,
    removed), ``correlation`` (normalised, in [0, 1]), ``optimal_scale`` (the complex scalar c of
    `optimal_scale(aligned, ref)`) and ``residual``: ||c a - ref|| / ||ref|| (see `nrms_error`).
    """
    obj = np.asarray(obj)
    ref = np.asarray(ref)
    if obj.shape != ref.shape:
        raise DataError(f"cannot align an object of shape {obj.shape} to a reference of shape {ref.shape}")
    dtype = np.result_type(obj.dtype, ref.dtype, np.complex64)
    obj = obj.astype(dtype, copy=False)
    ref = ref.astype(dtype, copy=False)
    candidates = [(False, obj)] + ([(True, twin_image(obj))] if twin else [])
    ref_spectrum = fft.fftn(ref)
    k0 = None
    if ramp:
        # A real-space ramp k translates the transform by k: register |F| (insensitive to translation);
        # once, for obj and its twin alike (|F_twin| = |conj F| = |F|).
        k0 = -register_translation(np.abs(fft.cfftn(ref)), np.abs(fft.cfftn(obj)), upsample)
    best = None
    for is_twin, cand in candidates:
        x, s, k = _align_candidate(cand, ref, ref_spectrum, k0, upsample)
        score = _peak_correlation(ref, x)
        if best is None or score > best[0] + 1e-12:
            best = (score, is_twin, x, s, k)
    score, is_twin, x, s, k = best  # type: ignore[misc]
    phase = float(np.angle(np.vdot(x, ref)))  # angle of sum conj(x) ref
    x = (x * np.exp(1j * phase)).astype(dtype)
    c = optimal_scale(x, ref)
    nref = float(np.linalg.norm(ref))
    residual = float(np.linalg.norm(c * x - ref) / nref) if nref > 0 else float("nan")
    info = {"shift": [float(v) for v in s], "twin": bool(is_twin), "phase": phase,
            "ramp": [float(v) for v in k], "correlation": float(score), "residual": residual,
            "optimal_scale": c}
    return x, info


def nrms_error(obj: np.ndarray, truth: np.ndarray, **kw: Any) -> float:
    """Normalised RMS distance of a reconstruction to the truth, after alignment.

    ``a = align_to(obj, truth, **kw)[0]``; with the optimal complex scalar
    ``c = sum(conj(a) truth) / sum(|a|^2)``, returns ``||c a - truth|| / ||truth||`` over the whole
    array: 0 for a perfect reconstruction (up to the trivial ambiguities), 1 for an orthogonal one.
    """
    return float(align_to(obj, truth, **kw)[1]["residual"])
