"""Partial coherence: the measured intensity as the coherent |F rho|^2 blurred by a detector-plane PSF.

A partially coherent beam (or a detector's point spread) blurs the speckles: the measured intensity
is I = PSF (*) |F rho|^2, the convolution taken in the detector plane (Clark et al. 2012,
doi:10.1038/ncomms1994). With a PSF the modulus projection keeps the phase of Psi = F rho and scales
it by the square root of the ratio of the measured to the blurred intensity,

    Ic = PSF (*) |Psi|^2,    Psi' = Psi sqrt(I / Ic)    on measured pixels,

and the Poisson metrics use Ic. The PSF keeps its start's shape (Gaussian, Lorentzian or
pseudo-Voigt) and its width is refined during the run, every k projections, by one of:

- "ml" (default): the width that minimises the Poisson negative log-likelihood of PSF (*) |Psi|^2
  against the measured pixels, a golden-section search on log FWHM (16 FFTs per update: one
  transform of |Psi|^2, then one inverse per trial width);
- "rl": Richardson-Lucy steps,
PSF <- PSF * [(I / Ic) (x) |Psi|^2] / sum |Psi|^2 ((x): correlation), then replaced by the
pseudo-Voigt of the start's shape (its Lorentzian share eta) that fits it best: the data fix the
blur only where the transform of |Psi|^2 (the object's autocorrelation) is non-zero, and a
free-form kernel drifts (noise-free 64^2 tests: a hole at its centre and 16 % too wide after 200
updates towards a 2.5-pixel Gaussian; a free eta let a Gaussian collapse into a narrow Lorentzian).
Measured on 64^2 discs (3 starts, PSF on from a third of the recipe, from a 1-pixel Gaussian): RL
(4 steps every 5 projections) stalls where the modulus projection has made |Psi|^2 consistent with
the current PSF: 0.9 px on coherent data (error 0.018 against 0.001 without a PSF), 1.06 px for a
2-px blur when switched on at two thirds; the ML width reached 0.4-0.5 px (error 0.001: no harm)
and 1.98-2.01 px (error 0.035-0.13 against 0.42-0.47 without a PSF). Widths are full widths at half
maximum (FWHM) in detector pixels. Convolutions go through the PSF's own `fft.FFTPair` (arrays in
FFT order, as everywhere inside a run).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from cxdi_cli import fft
from cxdi_cli.model import UsageError
from cxdi_cli.phasing.kernels import EXACT, kernel, log_pass, metrics_from_sums, ml_direction

MODELS = ("gaussian", "lorentzian", "pseudo-voigt")
#: PSF refinement methods: the Poisson maximum-likelihood width, or Richardson-Lucy steps
REFINE = ("ml", "rl")


@dataclasses.dataclass(frozen=True)
class PsfSpec:
    """A PSF start: model, FWHM (pixels) and the Lorentzian share `eta` (pseudo-Voigt)."""

    model: str = "gaussian"
    fwhm: float = 1.0
    eta: float = 0.0

    def __str__(self) -> str:
        if self.model == "pseudo-voigt":
            return f"pseudo-voigt:{self.fwhm:g},{self.eta:g}"
        return f"{self.model}:{self.fwhm:g}"


def parse_psf(text: str) -> PsfSpec | str | None:
    """`--psf` text: "off" -> None, "auto" -> "auto", MODEL:FWHM[,ETA] -> PsfSpec (UsageError otherwise)."""
    t = text.strip().lower()
    if t in ("off", "none", "no"):
        return None
    if t == "auto":
        return "auto"
    model, _, args = t.partition(":")
    expected = "auto, off, gaussian:FWHM, lorentzian:FWHM or pseudo-voigt:FWHM,ETA (FWHM in pixels)"
    if model not in MODELS or not args:
        raise UsageError(f"--psf {text!r}: expected {expected}")
    try:
        vals = [float(v) for v in args.split(",")]
    except ValueError:
        raise UsageError(f"--psf {text!r}: expected {expected}") from None
    want = 2 if model == "pseudo-voigt" else 1
    if len(vals) != want or not (0 < vals[0] <= 100) or (want == 2 and not 0 <= vals[1] <= 1):
        raise UsageError(f"--psf {text!r}: expected {expected}, 0 < FWHM <= 100, 0 <= ETA <= 1")
    eta = vals[1] if want == 2 else (1.0 if model == "lorentzian" else 0.0)
    return PsfSpec(model, vals[0], eta)


def _radius2(shape: tuple[int, ...]) -> np.ndarray:
    """Squared distance (pixels^2) to the origin of every pixel, FFT order."""
    r2 = np.zeros(shape, np.float32)
    for ax, n in enumerate(shape):
        f = np.fft.fftfreq(n, 1.0 / n).astype(np.float32)
        sh = [1] * len(shape)
        sh[ax] = n
        r2 = r2 + (f * f).reshape(sh)
    return r2


def profile(r2: np.ndarray, fwhm: float, eta: float) -> np.ndarray:
    """Pseudo-Voigt of unit peak: (1 - eta) Gaussian + eta Lorentzian, both of FWHM `fwhm`, at r^2."""
    w2 = float(fwhm) ** 2
    g = np.exp(np.float32(-4.0 * math.log(2.0) / w2) * r2) if eta < 1 else 0.0
    lor = 1.0 / (1.0 + np.float32(4.0 / w2) * r2) if eta > 0 else 0.0
    return ((1.0 - eta) * g + eta * lor).astype(np.float32)


def make_kernel(shape: tuple[int, ...], spec: PsfSpec) -> np.ndarray:
    """The unit-sum PSF of `spec` on an array of `shape` (float32, FFT order: the centre at index 0)."""
    k = profile(_radius2(shape), spec.fwhm, spec.eta)
    return (k / k.sum()).astype(np.float32)


def _mirror(x: np.ndarray) -> np.ndarray:
    """x(-r) in FFT order."""
    return np.roll(x[tuple(slice(None, None, -1) for _ in x.shape)], 1, axis=tuple(range(x.ndim)))


def fit_fwhm(kernel: np.ndarray, radius: int = 12, eta: float | None = None) -> tuple[float, float]:
    """(FWHM in pixels, eta) of the pseudo-Voigt that fits a PSF (FFT order) best near its centre, by
    least squares; `eta` fixes the Lorentzian share (None: the best of 0, 0.25, ..., 1)."""
    shape = kernel.shape
    r = min(radius, min(shape) // 2 - 1)
    idx = tuple(np.r_[0:r + 1, n - r:n] for n in shape)
    crop = kernel[np.ix_(*idx)].astype(np.float64)
    r2 = _radius2(shape)[np.ix_(*idx)].astype(np.float64)
    y = crop.ravel()

    def cost(w: float, eta: float) -> float:
        m = profile(r2, w, eta).astype(np.float64).ravel()
        a = float(m @ y) / float(m @ m)
        return float(np.sum((y - a * m) ** 2))

    best = (math.inf, 1.0, 0.0)
    for e in ((0.0, 0.25, 0.5, 0.75, 1.0) if eta is None else (float(eta),)):
        lo, hi = math.log(0.05), math.log(4.0 * r)
        g = (math.sqrt(5) - 1) / 2
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        fa, fb = cost(math.exp(a), e), cost(math.exp(b), e)
        for _ in range(40):             # golden-section search on log(FWHM)
            if fa < fb:
                hi, b, fb = b, a, fa
                a = hi - g * (hi - lo)
                fa = cost(math.exp(a), e)
            else:
                lo, a, fa = a, b, fb
                b = lo + g * (hi - lo)
                fb = cost(math.exp(b), e)
        w = math.exp((lo + hi) / 2)
        c = cost(w, e)
        if c < best[0]:
            best = (c, w, e)
    return best[1], best[2]


def _np_project(buf, model, ic, amp, kind, s2, k0, floor):
    m = kind == 1
    np.maximum(model, k0 * ic, out=model)
    buf *= np.where(m, amp / np.sqrt(np.maximum(model, floor)), np.float32(1.0)).astype(np.float32) * s2


@kernel(_np_project)
def _project(buf, model, ic, amp, kind, s2, k0, floor):  # pragma: no cover - compiled
    """buf (unscaled transform z) <- Psi sqrt(I / Ic) on measured pixels, Psi elsewhere, prescaled
    (both transforms' 1/sqrt(N): s2 = 1/N) for the unscaled inverse; Ic = model (the blurred coherent
    intensity), raised in place to its exact lower bound k0 |Psi|^2 (k0: the PSF's centre weight; the
    float32 FFT blur of a pattern spanning 1e9 leaves roundoff of ~1e-7 of its peak, near-zero or
    negative Ic under a non-zero Psi, and sqrt(I / Ic) then overflows: 512^2 HIO runs ended in NaN)
    and floored at `floor`."""
    for i in range(buf.size):
        mi = max(model[i], k0 * ic[i])
        model[i] = mi
        m = np.float32(kind[i] == 1)
        f = m * (amp[i] / np.sqrt(max(mi, floor))) + (np.float32(1.0) - m)
        buf[i] = buf[i] * (f * s2)


def metrics_of(model: np.ndarray, amp: np.ndarray, kind: np.ndarray) -> dict[str, float]:
    """llk, llk_free, chi2 and scale of a blurred model intensity (the formulas of `fourier_metrics`)."""
    return metrics_from_sums(_chunked_sums(model.reshape(-1), amp.reshape(-1), kind.reshape(-1)))


def _chunked_sums(model: np.ndarray, amp: np.ndarray, kind: np.ndarray) -> tuple:
    """(llk_measured, n_measured, llk_free, n_free, chi2, sum Ic, sum I) of the blurred model Ic, chunk
    by chunk with numpy's vectorised float64 log of I / Ic on a cache-sized scratch (a one-pass
    kernel's scalar log cost 1.5 FFT pairs per call at 512^2, and the ML width search calls it 14
    times per update)."""
    acc = np.zeros(7)
    log_pass(model.size, np.float64, lambda y, start: _psf_ratio_chunk(model, amp, y, start),
             lambda y, start: _psf_sums_chunk(model, amp, kind, y, start, acc))
    llk, nm, llkf, nf, chi2, sic, si = acc
    return float(llk), int(nm), float(llkf), int(nf), float(chi2), float(sic), float(si)


def _np_psf_ratio_chunk(model, amp, y, start):
    ic = model[start:start + y.size].astype(np.float64)
    obs = amp[start:start + y.size].astype(np.float64) ** 2
    y[:] = np.where(obs > 0, obs / np.maximum(ic, 1e-12), 1.0)


@kernel(_np_psf_ratio_chunk, EXACT)
def _psf_ratio_chunk(model, amp, y, start):  # pragma: no cover - compiled
    """y <- I / max(Ic, 1e-12) over model[start : start + y.size] (1 where I = 0), float64."""
    model = model[start:start + y.size]
    amp = amp[start:start + y.size]
    for j in range(y.size):
        obs = float(amp[j]) ** 2
        y[j] = obs / max(float(model[j]), 1e-12) if obs > 0.0 else 1.0


def _np_psf_sums_chunk(model, amp, kind, logy, start, acc):
    sl = slice(start, start + logy.size)
    ic = model[sl].astype(np.float64)
    obs = amp[sl].astype(np.float64) ** 2
    term = ic - obs + obs * logy
    m, f = kind[sl] == 1, kind[sl] == 2
    acc += (term[m].sum(), m.sum(), term[f].sum(), f.sum(),
            np.sum((obs[m] - ic[m]) ** 2 / np.maximum(ic[m], 1.0)), ic[m].sum(), obs[m].sum())


@kernel(_np_psf_sums_chunk, EXACT)
def _psf_sums_chunk(model, amp, kind, logy, start, acc):  # pragma: no cover - compiled
    """Adds the sums of `_chunked_sums` over model[start : start + logy.size] to acc; logy = ln(I / Ic)."""
    model = model[start:start + logy.size]
    amp = amp[start:start + logy.size]
    kind = kind[start:start + logy.size]
    llk, nm, llkf, nf, chi2, sic, si = acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6]
    for j in range(logy.size):
        k = kind[j]
        if k == 0:
            continue
        ic = float(model[j])
        obs = float(amp[j]) ** 2
        term = ic - obs + obs * logy[j]
        if k == 1:
            llk += term
            nm += 1.0
            chi2 += (obs - ic) ** 2 / max(ic, 1.0)
            sic += ic
            si += obs
        else:
            llkf += term
            nf += 1.0
    acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6] = llk, nm, llkf, nf, chi2, sic, si


# ----------------------------------------------------------- the passes of `ml_psf_iteration`


def _np_psf_weight(out, model, amp, kind, eps):
    m = kind == 1
    out[:] = np.where(m, np.float32(1) - amp * amp / np.maximum(model, eps), np.float32(0)).astype(np.float32)


@kernel(_np_psf_weight)
def _psf_weight(out, model, amp, kind, eps):  # pragma: no cover - compiled
    """out (complex) <- 1 - I / max(Ic, eps) on measured pixels, 0 elsewhere: dL/dIc."""
    for i in range(out.size):
        m = np.float32(kind[i] == 1)
        out[i] = m * (np.float32(1.0) - amp[i] * amp[i] / max(model[i], eps))


def _np_psf_times_otf(buf, otf, conj):
    buf *= np.conj(otf) if conj else otf


@kernel(_np_psf_times_otf)
def _psf_times_otf(buf, otf, conj):  # pragma: no cover - compiled
    """buf *= otf (a convolution's transform), or its conjugate (a correlation's), in place."""
    if conj:
        for i in range(buf.size):
            buf[i] = buf[i] * np.conj(otf[i])
    else:
        for i in range(buf.size):
            buf[i] = buf[i] * otf[i]


def _np_psf_gradient(buf, psi, corr, s):
    buf[:] = psi * (corr.real * s)


@kernel(_np_psf_gradient)
def _psf_gradient(buf, psi, corr, s):  # pragma: no cover - compiled
    """buf <- Psi [PSF (x) dL/dIc] (the real part of `corr`) prescaled by s for the unscaled inverse."""
    for i in range(buf.size):
        buf[i] = psi[i] * (corr[i].real * s)


def _np_psf_line_terms(out, psi, buf, s):
    dd = buf * s
    out.real = psi.real * dd.real + psi.imag * dd.imag
    out.imag = dd.real * dd.real + dd.imag * dd.imag


@kernel(_np_psf_line_terms)
def _psf_line_terms(out, psi, buf, s):  # pragma: no cover - compiled
    """out <- Re(Psi* D) + i |D|^2, D = buf * s (buf: the unscaled transform of the direction): the two
    real arrays whose blurs (one FFT pair) give Ic(t) = A + 2t B + t^2 C."""
    for i in range(out.size):
        q = buf[i] * s
        p = psi[i]
        out[i] = complex(p.real * q.real + p.imag * q.imag, q.real * q.real + q.imag * q.imag)


def _np_psf_line_sums(a, bc, amp, kind, t, eps):
    m = kind == 1
    b, c, am = bc.real[m], bc.imag[m], a[m]
    tf = np.float32(t)
    m_t = np.maximum(am + np.float32(2) * tf * b + tf * tf * c, eps)
    dm = np.float32(2) * b + np.float32(2) * tf * c
    r = amp[m] * amp[m] / m_t
    return (float(np.sum(dm * (1 - r), dtype=np.float64)),
            float(np.sum(np.float32(2) * c * (1 - r) + r * dm * dm / m_t, dtype=np.float64)))


@kernel(_np_psf_line_sums)
def _psf_line_sums(a, bc, amp, kind, t, eps):  # pragma: no cover - compiled
    """First and second derivatives in t of L(t) = sum_measured Ic(t) - I ln Ic(t), Ic(t) = A + 2t B +
    t^2 C floored at eps (B, C: the real and imaginary parts of `bc`)."""
    d1 = 0.0
    d2 = 0.0
    tf = np.float32(t)
    for i in range(a.size):
        m = np.float32(kind[i] == 1)
        b = bc[i].real
        c = bc[i].imag
        m_t = max(a[i] + np.float32(2.0) * tf * b + tf * tf * c, eps)
        dm = np.float32(2.0) * b + np.float32(2.0) * tf * c
        r = amp[i] * amp[i] / m_t
        d1 += m * (dm * (np.float32(1.0) - r))
        d2 += m * (np.float32(2.0) * c * (np.float32(1.0) - r) + r * dm * dm / m_t)
    return d1, d2


def _psf_delta(a: np.ndarray, bc: np.ndarray, amp: np.ndarray, kind: np.ndarray, t: float, eps: np.float32) -> float:
    """L(t) - L(0) over the measured pixels, L(t) = sum Ic(t) - I ln Ic(t) (the terms of the former
    whole-array numpy expression: float32, summed in float64), chunk by chunk with numpy's vectorised
    log of Ic(t) / Ic(0) on a cache-sized scratch."""
    acc = np.zeros(1)
    tf = np.float32(t)
    log_pass(a.size, np.float32, lambda y, start: _psf_step_ratio_chunk(a, bc, tf, eps, y, start),
             lambda y, start: _psf_delta_chunk(a, bc, amp, kind, tf, eps, y, start, acc))
    return float(acc[0])


def _np_psf_step_ratio_chunk(a, bc, t, eps, y, start):
    sl = slice(start, start + y.size)
    a0 = np.maximum(a[sl], eps)
    y[:] = np.maximum(a[sl] + np.float32(2) * t * bc[sl].real + t * t * bc[sl].imag, eps) / a0


@kernel(_np_psf_step_ratio_chunk)
def _psf_step_ratio_chunk(a, bc, t, eps, y, start):  # pragma: no cover - compiled
    """y <- Ic(t) / Ic(0) over a[start : start + y.size], both floored at eps."""
    a = a[start:start + y.size]
    bc = bc[start:start + y.size]
    for j in range(y.size):
        a0 = max(a[j], eps)
        y[j] = max(a[j] + np.float32(2.0) * t * bc[j].real + t * t * bc[j].imag, eps) / a0


def _np_psf_delta_chunk(a, bc, amp, kind, t, eps, logy, start, acc):
    sl = slice(start, start + logy.size)
    m = kind[sl] == 1
    a0 = np.maximum(a[sl], eps)
    m_t = np.maximum(a[sl] + np.float32(2) * t * bc[sl].real + t * t * bc[sl].imag, eps)
    acc[0] += float(np.sum((m_t - a0 - amp[sl] * amp[sl] * logy)[m], dtype=np.float64))


@kernel(_np_psf_delta_chunk)
def _psf_delta_chunk(a, bc, amp, kind, t, eps, logy, start, acc):  # pragma: no cover - compiled
    """Adds sum_measured Ic(t) - Ic(0) - I ln(Ic(t) / Ic(0)) over a[start : start + logy.size] to acc[0]."""
    a = a[start:start + logy.size]
    bc = bc[start:start + logy.size]
    amp = amp[start:start + logy.size]
    kind = kind[start:start + logy.size]
    out = 0.0
    for j in range(logy.size):
        m = np.float32(kind[j] == 1)
        a0 = max(a[j], eps)
        m_t = max(a[j] + np.float32(2.0) * t * bc[j].real + t * t * bc[j].imag, eps)
        out += m * (m_t - a0 - amp[j] * amp[j] * logy[j])
    acc[0] += out


def _np_psf_apply(rho, d, psi, buf, a, bc, t, s):
    psi += t * (buf * s)
    a += np.float32(2) * t * bc.real + t * t * bc.imag
    rho += t * d
    buf[:] = rho


@kernel(_np_psf_apply)
def _psf_apply(rho, d, psi, buf, a, bc, t, s):  # pragma: no cover - compiled
    """The step t: rho += t d; Psi += t D (D = buf * s); Ic += 2t B + t^2 C; buf <- rho."""
    for i in range(rho.size):
        psi[i] = psi[i] + t * (buf[i] * s)
        a[i] = a[i] + (np.float32(2.0) * t * bc[i].real + t * t * bc[i].imag)
        v = rho[i] + t * d[i]
        rho[i] = v
        buf[i] = v


class Psf:
    """One run's PSF: the kernel, its transfer function, work arrays, and the Richardson-Lucy refinement
    (each update projected onto the pseudo-Voigt of the start's shape: only the width is refined).

    `update_every`: a Richardson-Lucy step every k modulus projections (0: the PSF stays fixed)."""

    def __init__(self, shape: tuple[int, ...], spec: PsfSpec, update_every: int = 25, method: str = "ml",
                 rl_steps: int = 4, off_below: float | None = None) -> None:
        if method not in REFINE:
            raise UsageError(f"PSF refinement {method!r}: expected one of {', '.join(REFINE)}")
        self.shape = tuple(shape)
        self.method = method
        self.rl_steps = int(rl_steps)
        self.off_below = off_below
        self.coherent = False       # set when `off_below` is given and the fitted FWHM falls below it
        self.spec = spec
        self.update_every = int(update_every)
        self.pair = fft.FFTPair(self.shape)
        self.n = int(np.prod(self.shape))
        self.ic = np.empty(self.shape, np.float32)     # |Psi|^2 (unitary Psi)
        self.model = np.empty(self.shape, np.float32)  # PSF (*) |Psi|^2
        self.projections = 0
        self.updates = 0
        self.set_kernel(make_kernel(self.shape, spec))

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (a checkpoint travels to other processes): everything but the FFT pair."""
        d = self.__dict__.copy()
        del d["pair"]
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self.pair = fft.FFTPair(self.shape)

    def set_kernel(self, kernel: np.ndarray) -> None:
        """Adopt a kernel (FFT order; normalised to unit sum here) and its transfer function."""
        k = np.maximum(np.asarray(kernel, np.float32), 0)
        self.kernel = (k / k.sum()).astype(np.float32)
        self._fwhm = None                                  # `fwhm()` fits it once per kernel
        buf = self.pair.buffer
        buf[...] = self.kernel
        self.pair.forward(scale=False)
        self.otf = (buf * np.float32(1.0 / self.n)).astype(np.complex64)  # conv = inv_unscaled(fwd(x) * otf)

    def blur(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """PSF (*) x for a real array (two FFTs of the PSF's own buffer); written into `out` if given."""
        buf = self.pair.buffer
        buf[...] = x
        self.pair.forward(scale=False)
        buf *= self.otf
        self.pair.inverse(scale=False)
        if out is None:
            return buf.real.copy()
        out[...] = buf.real
        return out

    def blur_model(self) -> np.ndarray:
        """self.model <- PSF (*) self.ic, raised to its exact lower bound k0 self.ic (k0: the kernel's
        centre weight): float32 FFT roundoff (~1e-7 of a peak 1e9 times the faintest pixel) must not
        leave a near-zero Ic under a non-zero |Psi|^2."""
        self.blur(self.ic, self.model)
        np.maximum(self.model, np.float32(self.kernel.flat[0]) * self.ic, out=self.model)
        return self.model

    def correlate(self, x: np.ndarray) -> np.ndarray:
        """PSF correlated with a real array, sum_y PSF(y - r) x(y): the adjoint of `blur`."""
        buf = self.pair.buffer
        buf[...] = x
        self.pair.forward(scale=False)
        buf *= np.conj(self.otf)
        self.pair.inverse(scale=False)
        return buf.real.copy()

    def evaluate(self, buf: np.ndarray, amp: np.ndarray, kind: np.ndarray) -> dict[str, float]:
        """Metrics of the blurred model of `buf` (the unscaled forward transform), leaving the buffer and
        the refinement schedule alone (a checkpoint's metrics must not shift the next update)."""
        np.multiply(buf.real, buf.real, out=self.ic)
        self.ic += buf.imag * buf.imag
        self.ic *= np.float32(1.0 / buf.size)
        self.blur_model()
        return metrics_of(self.model, amp, kind)

    def project(self, buf: np.ndarray, amp: np.ndarray, kind: np.ndarray,
                record: bool = False) -> dict[str, float] | None:
        """The PSF-aware modulus projection on the pair's buffer `buf` (unscaled forward transform in,
        prescaled P_M for the unscaled inverse out); a Richardson-Lucy update every `update_every`
        calls; metrics of the blurred model (before the projection) when `record`."""
        n = buf.size
        s2 = np.float32(1.0 / n)
        np.multiply(buf.real, buf.real, out=self.ic)
        self.ic += buf.imag * buf.imag
        self.ic *= s2
        self.blur_model()
        out = metrics_of(self.model, amp, kind) if record else None
        self.projections += 1
        if self.update_every > 0 and self.projections % self.update_every == 0:
            self.refine(amp, kind)
            self.blur_model()
        _project(buf.reshape(-1), self.model.reshape(-1), self.ic.reshape(-1), amp.reshape(-1),
                 kind.reshape(-1), s2, np.float32(self.kernel.flat[0]), np.float32(1e-12))
        return out

    def refine(self, amp: np.ndarray, kind: np.ndarray) -> None:
        """Refine the PSF from `self.ic` and `self.model` by the chosen method ("ml": Poisson ML width;
        "rl": Richardson-Lucy); with `off_below`, flag a fitted width below it as coherent."""
        if self.method == "ml":
            self.ml_width(amp, kind)
        else:
            self.richardson_lucy(amp, kind)
        if self.off_below is not None and self.fwhm() < self.off_below:
            self.coherent = True

    def richardson_lucy(self, amp: np.ndarray, kind: np.ndarray, steps: int | None = None) -> None:
        """`steps` (default `self.rl_steps`) Richardson-Lucy steps of the PSF from `self.ic` (|Psi|^2)
        and `self.model` (its blur, recomputed between steps): measured pixels give the ratio I / Ic,
        unmeasured and free ones the neutral 1."""
        for k in range(self.rl_steps if steps is None else steps):
            if k:
                self.blur_model()
            self._rl_step(amp, kind)

    def ml_width(self, amp: np.ndarray, kind: np.ndarray) -> None:
        """The width (start's shape) that minimises the Poisson llk of PSF (*) `self.ic` against the
        measured pixels: a golden-section search on log FWHM. The transform of `self.ic` is taken once;
        each trial multiplies it by the trial's transfer function (`_trial_otf`) and transforms back
        (one FFT a trial, from three)."""
        eta = self.spec.eta
        buf = self.pair.buffer
        buf[...] = self.ic
        self.pair.forward(scale=False)
        spectrum = buf.copy()
        r2 = None if eta == 0 else _radius2(self.shape)

        def cost(logw: float) -> float:
            k0 = self._trial_otf(math.exp(logw), eta, spectrum, r2)
            self.pair.inverse(scale=False)
            np.maximum(buf.real, k0 * self.ic, out=self.model)   # as `blur_model`
            return metrics_of(self.model, amp, kind)["llk"]

        lo, hi = math.log(0.2), math.log(max(2.0, 3.0 * self.fwhm()))
        g = (math.sqrt(5) - 1) / 2
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        fa, fb = cost(a), cost(b)
        for _ in range(12):
            if fa < fb:
                hi, b, fb = b, a, fa
                a = hi - g * (hi - lo)
                fa = cost(a)
            else:
                lo, a, fa = a, b, fb
                b = lo + g * (hi - lo)
                fb = cost(b)
        del spectrum
        self.set_kernel(profile(_radius2(self.shape), math.exp((lo + hi) / 2), eta))
        self.updates += 1

    def _trial_otf(self, fwhm: float, eta: float, spectrum: np.ndarray, r2: np.ndarray | None) -> np.float32:
        """The pair's buffer <- `spectrum` times the transfer function of the unit-sum profile of `fwhm`
        (`make_kernel`'s, in `set_kernel`'s scaling); returns the kernel's centre weight. A Gaussian
        (eta = 0) is separable: its transfer function is the outer product of 1D transforms (float64),
        no FFT of the array; other shapes transform their profile (`r2`: `_radius2`)."""
        buf = self.pair.buffer
        if eta == 0:
            c = -4.0 * math.log(2.0) / float(fwhm) ** 2
            k0 = 1.0
            for ax, m in enumerate(self.shape):
                f = np.fft.fftfreq(m, 1.0 / m)
                g1 = np.exp(c * f * f)                     # the 1D profile, centre 1
                k0 /= g1.sum()
                h = np.fft.fft(g1).real / g1.sum()         # real: the profile is symmetric
                if ax == 0:
                    h /= self.n                            # set_kernel's 1/N
                sh = [1] * len(self.shape)
                sh[ax] = m
                if ax == 0:
                    np.multiply(spectrum, h.astype(np.float32).reshape(sh), out=buf)
                else:
                    buf *= h.astype(np.float32).reshape(sh)
            return np.float32(k0)
        k = profile(r2, fwhm, eta)
        k /= k.sum()
        buf[...] = k
        self.pair.forward(scale=False)
        buf *= np.float32(1.0 / self.n)
        buf *= spectrum
        return np.float32(k.flat[0])

    def _rl_step(self, amp: np.ndarray, kind: np.ndarray) -> None:
        measured = kind == 1
        ratio = np.ones(self.shape, np.float32)
        ic_m = np.maximum(self.model[measured], np.float32(1e-6))
        ratio[measured] = amp[measured] ** 2 / ic_m
        total = float(self.ic.sum(dtype=np.float64))
        if not total > 0:
            return
        buf = self.pair.buffer
        buf[...] = ratio
        self.pair.forward(scale=False)
        spec_r = buf.copy()
        buf[...] = self.ic
        self.pair.forward(scale=False)
        buf[...] = spec_r * np.conj(buf)
        self.pair.inverse(scale=False)
        corr = buf.real * np.float32(1.0 / (self.n * total))   # sum_y ratio(y) ic(y - r) / sum ic
        k = self.kernel * np.maximum(corr, 0)
        if not (np.isfinite(k).all() and k.sum() > 0):
            return
        # the data fix the blur's transfer function only where the coherent intensity's transform
        # (the object's autocorrelation) is non-zero: a free-form kernel drifts, so each update is
        # projected onto the pseudo-Voigt family (centred, symmetric, smooth)
        fwhm, _ = fit_fwhm(k, eta=self.spec.eta)
        self.set_kernel(profile(_radius2(self.shape), fwhm, self.spec.eta))
        self.updates += 1

    def fwhm(self) -> float:
        """FWHM (pixels) of the kernel (a pseudo-Voigt of the start's shape), fitted once per kernel."""
        if getattr(self, "_fwhm", None) is None:
            self._fwhm = fit_fwhm(self.kernel, eta=self.spec.eta)[0]
        return self._fwhm

    def centred_crop(self, radius: int = 8) -> np.ndarray:
        """The kernel's central (2 radius + 1)^N pixels, centred, for the output file."""
        r = min(radius, min(self.shape) // 2 - 1)
        k = np.fft.fftshift(self.kernel)
        c = [n // 2 for n in self.shape]
        return k[tuple(slice(ci - r, ci + r + 1) for ci in c)].copy()

    def describe(self) -> dict[str, Any]:
        """Start, fitted width and update count, for the run's parameters."""
        return {"start": str(self.spec), "fwhm_px": round(self.fwhm(), 4), "eta": self.spec.eta,
                "refine": self.method, "updates": self.updates, "coherent": self.coherent}


def pixel_area_transfer(shape: tuple[int, ...]) -> np.ndarray:
    """The transfer function (FFT order) of a detector's integration over each pixel's area, for the
    intensity sampled on the pixel grid: prod sinc(f) over the axes, f in cycles per pixel. It acts on
    the autocorrelation (the transform of the intensity), which spans twice the object."""
    out = np.ones(shape, np.float32)
    for ax, n in enumerate(shape):
        sh = [1] * len(shape)
        sh[ax] = n
        out = out * np.sinc(np.fft.fftfreq(n)).astype(np.float32).reshape(sh)
    return out


#: Richardson-Lucy iterations of `deconvolve` (a 2-px-blurred 256^2 pattern: 20 gave searches at
#: 0.17-0.18, 100 at 0.13, from 0.93 on the blurred data)
DECONVOLVE_ITERATIONS = 100


def detector_psf(shape: tuple[int, ...], spec: PsfSpec) -> Psf:
    """A fixed Psf of `spec` convolved with the pixels' own area (`pixel_area_transfer`): the blur a
    partially coherent beam and an integrating detector give a point-sampled |F rho|^2 together."""
    psf = Psf(tuple(shape), spec, update_every=0)               # its FFT pair, blur and correlation
    buf = psf.pair.buffer
    buf[...] = psf.kernel
    psf.pair.forward(scale=False)
    buf *= pixel_area_transfer(buf.shape)
    psf.pair.inverse(scale=False)
    psf.set_kernel(buf.real)                                     # clipped at 0, unit sum
    return psf


def _richardson_lucy(psf: Psf, intensity: np.ndarray, measured: np.ndarray, iterations: int) -> np.ndarray:
    """Mask-aware Richardson-Lucy: the non-negative J whose blur by `psf` best explains the measured pixels."""
    m = np.asarray(measured, bool)
    data = np.where(m, np.maximum(np.asarray(intensity, np.float32), 0), 0).astype(np.float32)
    norm = np.maximum(psf.correlate(m.astype(np.float32)), np.float32(1e-6))
    floor = np.float32(1e-6 * max(float(data.max()), 1.0))
    j = np.maximum(psf.blur(data), floor)
    j[m] = np.maximum(data[m], floor)
    for _ in range(int(iterations)):
        ratio = np.where(m, data / np.maximum(psf.blur(j), floor), np.float32(0))
        j *= psf.correlate(ratio) / norm
        np.maximum(j, floor, out=j)
    return j.astype(np.float32)


def deconvolve(intensity: np.ndarray, measured: np.ndarray, spec: PsfSpec,
               iterations: int = DECONVOLVE_ITERATIONS) -> np.ndarray:
    """The coherent intensity J whose blur by the PSF `spec`, and by the pixels' own area
    (`detector_psf`), best explains the measured pixels:
    Richardson-Lucy with a mask, J <- J [PSF (x) (M I / PSF (*) J)] / [PSF (x) M] ((*) convolution,
    (x) correlation, M the measured pixels). Arrays in FFT order; unmeasured pixels of the result
    hold the deconvolution's own estimate. Blurred data constrain the object so little that the
    search from the autocorrelation fails on them; on J it converges like on coherent data."""
    return _richardson_lucy(detector_psf(np.shape(intensity), spec), intensity, measured, iterations)


#: `estimate_blur` judges the fit on pixels holding at least this many photons: there the Poisson
#: deviance of a model that explains the data is noise-limited, and a PSF too wide for the speckles
#: shows. (Leaving out pixels above 2000 photons biased the estimates up, 2.4-2.6 px for 2.0, and
#: read a strong phase object's coherent 512^2 pattern as 1.7 px.) At tens of thousands of photons
#: per pixel Richardson-Lucy's unconverged residual (a fraction of a percent) dominates the deviance
#: and the estimate errs towards "coherent": 64^2 discs at 24000 photons per pixel left 0.66 at 1.5 px
#: of a 2.5-px blur.
BRIGHT_PHOTONS = 20.0
#: Mean Poisson deviance (the half deviance, mu - I + I ln(I / mu)) per bright pixel that a model
#: explaining the data leaves: its expectation, 1/2 (1/4 for a pattern made centro-symmetric, whose
#: values average two mates).
FIT_DEVIANCE = 0.5
#: The widths (FWHM, pixels) `estimate_blur` tries first, in order, before bisecting. The first is the
#: least blur it reports: a strong phase object's coherent 512^2 pattern leaves 0.77 at 1 px (threshold
#: 0.5), and a blur under 1.5 px is what the final refinement's own PSF (`--psf auto`) handles.
BLUR_LADDER = (1.5, 2.0, 3.0, 4.0, 6.0)


def blur_deviance(intensity: np.ndarray, measured: np.ndarray, fwhm: float,
                  iterations: int = DECONVOLVE_ITERATIONS) -> float:
    """Mean Poisson deviance per bright measured pixel (>= BRIGHT_PHOTONS) of the best non-negative
    coherent pattern blurred by a Gaussian PSF of `fwhm` and the pixels' area (`deconvolve`'s fit)."""
    psf = detector_psf(np.shape(intensity), PsfSpec("gaussian", float(fwhm), 0.0))
    m = np.asarray(measured, bool)
    model = psf.blur(_richardson_lucy(psf, intensity, m, iterations))
    d = np.asarray(intensity, np.float64)[m]
    mu = np.maximum(model[m].astype(np.float64), 1e-12)
    bright = d >= BRIGHT_PHOTONS
    d, mu = d[bright], mu[bright]
    return float(np.mean(mu - d + d * np.log(d / mu)))


def _centro_symmetrised(intensity: np.ndarray, measured: np.ndarray) -> bool:
    """Whether >= 90 % of the bright measured pixels equal their centro-symmetric mate exactly (FFT
    order: the mate of q is -q), as in a pattern an earlier program symmetrised."""
    mate = np.roll(np.flip(intensity), 1, axis=tuple(range(intensity.ndim)))
    mmate = np.roll(np.flip(measured), 1, axis=tuple(range(intensity.ndim)))
    pair = measured & mmate & (intensity >= BRIGHT_PHOTONS)
    if pair.sum() < 100:
        return False
    same = np.abs(intensity[pair] - mate[pair]) <= 1e-6 * np.abs(intensity[pair])
    return bool(same.mean() >= 0.9)


def estimate_blur(intensity: np.ndarray, measured: np.ndarray, min_bright: int = 1000,
                  iterations: int = DECONVOLVE_ITERATIONS) -> dict[str, Any]:
    """The detector-plane blur of a pattern from its data alone (FFT order): the widest Gaussian PSF
    (FWHM, pixels, beyond the pixels' own area) under which a non-negative coherent pattern still
    explains the bright pixels within Poisson noise (the discrepancy principle). A wider PSF cannot
    produce the speckles' contrast, and the deviance climbs steeply: a 2-px-blurred 512^2 pattern
    leaves 0.38 per bright pixel at 2.0 px, 1.07 at 2.4, 4.5 at 2.8. Coherent patterns (pixel-integrated)
    leave 1.6-17 already at 1 px: `fwhm` 0 then means "less than the ladder's first width".
    Returns {"fwhm", "deviance": {width: value}, "threshold", "bright_pixels"}; fwhm None when fewer
    than `min_bright` pixels are bright enough to tell (photon-limited data)."""
    data = np.asarray(intensity, np.float32)
    m = np.asarray(measured, bool) & np.isfinite(data)
    bright = int(np.count_nonzero(m & (data >= BRIGHT_PHOTONS)))
    threshold = FIT_DEVIANCE * (0.5 if _centro_symmetrised(data, m) else 1.0)
    out: dict[str, Any] = {"fwhm": None, "deviance": {}, "threshold": threshold, "bright_pixels": bright}
    if bright < min_bright:
        return out
    dev = out["deviance"]

    def at(w: float) -> float:
        dev[round(w, 3)] = blur_deviance(data, m, w, iterations)
        return dev[round(w, 3)]

    lo = None
    hi = None
    for w in BLUR_LADDER:
        if at(w) > threshold:
            hi = w
            break
        lo = w
    if lo is None:
        out["fwhm"] = 0.0
        return out
    if hi is None:
        out["fwhm"] = lo
        return out
    mid = 0.5 * (lo + hi)
    if at(mid) > threshold:
        hi = mid
    else:
        lo = mid
    a, b = math.log(max(dev[round(lo, 3)], 1e-9)), math.log(dev[round(hi, 3)])
    t = (math.log(threshold) - a) / (b - a) if b > a else 0.0
    out["fwhm"] = round(lo + min(max(t, 0.0), 1.0) * (hi - lo), 3)
    return out


def make_switch(fwhm: float | None = None, eta: float | None = None,
                update: float | None = None) -> Callable[[Any], None]:
    """Recipe step `psf`: switch the partial-coherence model on now (from the run's `psf_start`, or a
    Gaussian of 1 pixel, unless `fwhm`/`eta` are given; `update`: Richardson-Lucy period, 0 = fixed);
    `psf(fwhm=0)` switches it off."""

    def step(state: Any) -> None:
        if fwhm is not None and fwhm <= 0:
            state.psf = None
            return
        base = state.psf_start if isinstance(state.psf_start, PsfSpec) else PsfSpec("gaussian", 1.0, 0.0)
        e = base.eta if eta is None else min(1.0, max(0.0, float(eta)))
        spec = PsfSpec("gaussian" if e == 0 else "lorentzian" if e == 1 else "pseudo-voigt",
                       base.fwhm if fwhm is None else float(fwhm), e)
        every = state.psf_update if update is None else int(update)
        state.psf = Psf(state.rho.shape, spec, every, getattr(state, "psf_method", "ml"))

    return step


def ml_psf_iteration(state: Any, rec: bool) -> None:
    """One conjugate-gradient iteration on the Poisson likelihood of the blurred model (the `ml` step
    when a PSF is on): L = sum_measured (Ic - I ln Ic), Ic = PSF (*) |Psi|^2, dL/dPsi* = Psi [PSF (x)
    (1 - I/Ic)], an exact Newton line search on Ic(t) = A + 2tB + t^2 C (A, B, C: the blurs of |Psi|^2,
    Re(Psi* D), |D|^2: B and C in one FFT pair, A carried along as A + 2tB + t^2 C). Six FFTs per
    iteration (the coherent `ml` needs two), each pass over the arrays a fused kernel (no temporaries):
    at 512^2 10.0-10.6 -> 5.2 FFT pairs per iteration, width updates included. `rec`: the metrics of this
    iteration are wanted (`algorithms._recording`)."""
    psf: Psf = state.psf
    pair = state.pair
    buf = pair.buffer
    n = buf.size
    s = np.float32(1.0 / math.sqrt(n))
    ml = state.ml
    sup = state.support
    eps = np.float32(1e-2)
    amp, kind = state.amp.reshape(-1), state.kind.reshape(-1)
    first = ml.get("psf_block_start") != state.iteration or "ppsi" not in ml
    if first:
        state.rho *= sup
        buf[...] = state.rho
        pair.forward(scale=False)
        ml["ppsi"] = (buf * s).astype(np.complex64)
        np.multiply(ml["ppsi"].real, ml["ppsi"].real, out=psf.ic)
        psf.ic += ml["ppsi"].imag * ml["ppsi"].imag
        ml["pA"] = psf.blur(psf.ic)
        ml["pd"] = np.zeros(buf.shape, np.complex64)
        ml["pg"] = np.zeros(buf.shape, np.complex64)
    psi, a_ic, d, gprev = ml["ppsi"], ml["pA"], ml["pd"], ml["pg"]
    if rec:
        state.last.update(metrics_of(a_ic, state.amp, state.kind))
    pbuf = psf.pair.buffer.reshape(-1)
    flat_psi, flat_a = psi.reshape(-1), a_ic.reshape(-1)
    _psf_weight(pbuf, flat_a, amp, kind, eps)          # dL/dIc, then correlated with the PSF
    psf.pair.forward(scale=False)
    _psf_times_otf(pbuf, psf.otf.reshape(-1), True)
    psf.pair.inverse(scale=False)
    flat = buf.reshape(-1)
    _psf_gradient(flat, flat_psi, pbuf, s)           # dL/dPsi*, prescaled for the unscaled inverse
    pair.inverse(scale=False)
    ml_direction(flat, sup.reshape(-1), d.reshape(-1), gprev.reshape(-1), first)
    pair.forward(scale=False)                          # buf = sqrt(N) D, D = F d
    _psf_line_terms(pbuf, flat_psi, flat, s)
    psf.pair.forward(scale=False)
    _psf_times_otf(pbuf, psf.otf.reshape(-1), False)
    psf.pair.inverse(scale=False)                      # pbuf = blur(B) + i blur(C)
    t = 0.0
    for _ in range(2):                             # Newton's method from t = 0
        d1, d2 = _psf_line_sums(flat_a, pbuf, amp, kind, t, eps)
        if not (d2 > 0 and math.isfinite(d1)):
            break
        t -= d1 / d2
    for _ in range(5):                             # safeguard: the step must lower L
        if _psf_delta(flat_a, pbuf, amp, kind, t, eps) <= 0:
            break
        t *= 0.5
    else:
        t = 0.0
    _psf_apply(state.rho.reshape(-1), d.reshape(-1), flat_psi, flat, flat_a, pbuf, np.float32(t), s)
    psf.projections += 1
    if psf.update_every > 0 and psf.projections % psf.update_every == 0:
        np.multiply(psi.real, psi.real, out=psf.ic)
        psf.ic += psi.imag * psi.imag
        psf.model[...] = a_ic
        psf.refine(state.amp, state.kind)
        psf.blur(psf.ic, a_ic)
    ml["psf_block_start"] = state.iteration + 1
    state.iteration += 1
    if rec:
        state.last["outside_fraction"] = 0.0
        state.last["support_size"] = int(np.count_nonzero(sup))
        state.on_record(state, "ml")
