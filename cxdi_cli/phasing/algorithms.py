"""Phase-retrieval steps over one shared state: projections, ER/HIO/RAAR as update rules, Poisson ML.

Every array of a run lives in FFT order (q = 0 at index 0) from the start of the run to its end; the
centred data on disk are `ifftshift`-ed once by `phasing`, never per iteration. The FFTs are the
in-place unitary pair `fft.FFTPair` bound to the run's own buffer. At the start of each iteration the
pair's buffer holds rho; an ER/HIO/RAAR iteration is

    forward FFT  ->  modulus projection P_M (one fused pass)  ->  inverse FFT  ->  update (one pass)

P_M replaces the amplitude of measured pixels by the measured one, Psi <- sqrt(I) Psi/|Psi|, and leaves
masked and free (withheld) pixels untouched. The update keeps P_M rho on the support S and applies
the algorithm's rule off it; ER, HIO and RAAR differ only in that rule, linear in (rho, P_M rho):

    off S:  ER   0
            HIO  rho - beta P_M rho                    (Fienup 1982, doi:10.1364/AO.21.002758)
            RAAR beta rho + (1 - 2 beta) P_M rho       (Luke 2005, doi:10.1088/0266-5611/21/1/004)

so one fused kernel `x <- where(in S, p, a x + b p)` runs all three, and adding an algorithm of this
family is one line of `STEPS`. With positivity, a support pixel whose P_M rho has a negative real
part counts as outside (Fienup's HIO with positivity). The element-wise passes are numba kernels
(serial: FFTW owns the threads), written branch-free with float32 constants so they vectorise.

`ml` is a Poisson maximum-likelihood refinement: conjugate-gradient descent (Polak-Ribiere) on the
negative Poisson log-likelihood  L = sum_measured (|Psi|^2 - I ln |Psi|^2)  with rho restricted to
the support and an exact Newton line search along each direction (Thibault & Guizar-Sicairos 2012,
doi:10.1088/1367-2630/14/6/063004, and PyNX's ML operator use the same principle).

One module on purpose (it is long): the state every step shares, the step registry and the fused passes
belong together; the element-wise kernels themselves live in `kernels.py`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from cxdi_cli import fft
from cxdi_cli.phasing.kernels import EXACT, kernel, log_pass, metrics_from_sums, ml_direction
from cxdi_cli.phasing.detwin import half_support
from cxdi_cli.phasing.psf import make_switch as make_psf_switch, ml_psf_iteration
from cxdi_cli.phasing.support import shrink_wrap

# pixel kinds of the `kind` array (int8)
MASKED, MEASURED, FREE = 0, 1, 2

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_TINY = np.float32(1e-30)
_NO_BOUND = np.float32(1e30)  # amplitude bound^2 that clips nothing (not float32 max: fastmath takes its
# reciprocal, a denormal flushed to 0, and the compiled _update_sums then wrote rho = 0)


# --------------------------------------------------------------------------- kernels (flat arrays)
# Each numba loop has a numpy twin of the same arguments (kernels.py): cxdi runs without numba.


def _np_modulus(buf, amp, kind, s, s2):
    m = kind == MEASURED
    r2 = buf.real * buf.real + buf.imag * buf.imag
    buf *= np.where(m, amp * s / np.sqrt(r2 + _TINY), s2).astype(np.float32)


@kernel(_np_modulus)
def _modulus(buf, amp, kind, s, s2):  # pragma: no cover - compiled
    """buf (unscaled forward transform z) <- P_M prescaled for the unscaled inverse.

    measured: amp * z/|z| * s; other pixels: z * s^2 (both transforms' 1/sqrt(N) folded in)."""
    for i in range(buf.size):
        z = buf[i]
        r2 = z.real * z.real + z.imag * z.imag
        m = np.float32(kind[i] == 1)
        f = m * (amp[i] * s / np.sqrt(r2 + np.float32(1e-30))) + (np.float32(1.0) - m) * s2
        buf[i] = z * f


def _fourier_sums(buf, amp, kind, s2):
    """Sums over the unscaled forward transform z (Ic = |z|^2 s2, I = amp^2), in float64.

    Returns (llk_measured, n_measured, llk_free, n_free, chi2_measured, sum_Ic, sum_I). Chunk by chunk:
    the ratios I/Ic into a cache-sized scratch, numpy's vectorised float64 log of them, then the sums
    (the running sums go through the chunks in pixel order, as one loop would add them). numba's scalar
    log made one call cost as much as an FFT pair at 128^3 (a call per stage and per run, and every
    history period of an ml block)."""
    acc = np.zeros(7)
    s2 = float(s2)
    log_pass(buf.size, np.float64, lambda y, start: _fourier_ratio_chunk(buf, amp, s2, y, start),
             lambda y, start: _fourier_sums_chunk(buf, amp, kind, s2, y, start, acc))
    llk, nm, llkf, nf, chi2, sic, si = acc
    return float(llk), int(nm), float(llkf), int(nf), float(chi2), float(sic), float(si)


def _np_fourier_ratio_chunk(buf, amp, s2, y, start):
    z = buf[start:start + y.size]
    ic = (z.real.astype(np.float64) ** 2 + z.imag.astype(np.float64) ** 2) * s2
    obs = amp[start:start + y.size].astype(np.float64) ** 2
    y[:] = np.where(obs > 0, obs / np.maximum(ic, 1e-12), 1.0)


@kernel(_np_fourier_ratio_chunk, EXACT)
def _fourier_ratio_chunk(buf, amp, s2, y, start):  # pragma: no cover - compiled
    """y <- I / max(Ic, 1e-12) over buf[start : start + y.size] (1 where I = 0), float64."""
    buf = buf[start:start + y.size]
    amp = amp[start:start + y.size]
    for j in range(y.size):
        z = buf[j]
        ic = (float(z.real) ** 2 + float(z.imag) ** 2) * s2
        obs = float(amp[j]) ** 2
        y[j] = obs / max(ic, 1e-12) if obs > 0.0 else 1.0


def _np_fourier_sums_chunk(buf, amp, kind, s2, logy, start, acc):
    sl = slice(start, start + logy.size)
    z = buf[sl]
    ic = (z.real.astype(np.float64) ** 2 + z.imag.astype(np.float64) ** 2) * s2
    obs = amp[sl].astype(np.float64) ** 2
    term = ic - obs + np.where(obs > 0, obs * logy, 0.0)
    k = kind[sl]
    m, f = k == MEASURED, k == FREE
    acc += (term[m].sum(), m.sum(), term[f].sum(), f.sum(), np.sum((obs[m] - ic[m]) ** 2 / np.maximum(ic[m], 1.0)),
            ic[m].sum(), obs[m].sum())


@kernel(_np_fourier_sums_chunk, EXACT)
def _fourier_sums_chunk(buf, amp, kind, s2, logy, start, acc):  # pragma: no cover - compiled
    """Adds the sums of `_fourier_sums` over buf[start : start + logy.size] to `acc`; logy = ln(I/Ic)."""
    buf = buf[start:start + logy.size]
    amp = amp[start:start + logy.size]
    kind = kind[start:start + logy.size]
    llk, nm, llkf, nf, chi2, sic, si = acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6]
    for j in range(logy.size):
        k = kind[j]
        if k == 0:
            continue
        z = buf[j]
        ic = (float(z.real) ** 2 + float(z.imag) ** 2) * s2
        obs = float(amp[j]) ** 2
        term = ic - obs
        if obs > 0.0:
            term += obs * logy[j]
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


def _modulus_sums(buf, amp, kind, s, s2):
    """`_fourier_sums(buf, amp, kind, s^2)` and `_modulus`, chunk by chunk (the recording iterations):
    the metrics cost no extra pass over the array.

    The logarithms are numpy's vectorised float32 log on a cache-sized scratch (numba's scalar log
    cost as much as an FFT pair per call); the Poisson term Ic - I - I ln(Ic/I) = I (x - ln(1 + x)),
    x = Ic/I - 1, is taken from its series when |x| is small (no float32 cancellation near a fit)
    and summed in float64."""
    tot = np.zeros(7)

    def accumulate(y: np.ndarray, start: int) -> None:
        nonlocal tot
        stop = start + y.size
        tot += np.asarray(_sums_chunk(buf, amp, kind, s2, y, start))
        _modulus(buf[start:stop], amp[start:stop], kind[start:stop], s, s2)  # the chunk is still in cache

    log_pass(buf.size, np.float32, lambda y, start: _ratio_chunk(buf, amp, s2, y, start), accumulate)
    llk, nm, llkf, nf, chi2, sic, si = tot
    return llk, int(nm), llkf, int(nf), chi2, sic, si


def _np_ratio_chunk(buf, amp, s2, y, start):
    z = buf[start:start + y.size]
    ic = np.maximum((z.real * z.real + z.imag * z.imag) * s2, np.float32(1e-12))
    a = amp[start:start + y.size]
    y[:] = ic / np.maximum(a * a, np.float32(1e-30))


@kernel(_np_ratio_chunk)
def _ratio_chunk(buf, amp, s2, y, start):  # pragma: no cover - compiled
    """y <- Ic / I over buf[start : start + y.size] (Ic floored at 1e-12, I at 1e-30)."""
    buf = buf[start:start + y.size]
    amp = amp[start:start + y.size]
    for j in range(y.size):
        z = buf[j]
        ic = max((z.real * z.real + z.imag * z.imag) * s2, np.float32(1e-12))
        a = amp[j]
        y[j] = ic / max(a * a, np.float32(1e-30))


def _np_sums_chunk(buf, amp, kind, s2, logy, start):
    sl = slice(start, start + logy.size)
    z = buf[sl].copy()
    a = amp[sl]
    k = kind[sl]
    r2 = z.real * z.real + z.imag * z.imag
    ic = r2 * s2
    obs = a * a
    x = np.maximum(ic, np.float32(1e-12)) / np.maximum(obs, np.float32(1e-30)) - np.float32(1.0)
    with np.errstate(over="ignore", invalid="ignore"):  # the series is evaluated everywhere, used for |x| < 0.03
        series = x * x * (np.float32(0.5) - x * (np.float32(1.0 / 3.0) - x * (np.float32(0.25) - x * np.float32(0.2))))
    g = np.where(np.abs(x) < np.float32(0.03), obs * series, np.maximum(ic, np.float32(1e-12)) - obs - obs * logy)
    term = np.where(obs > 0, g, ic).astype(np.float64)
    mm = k == MEASURED
    mf = k == FREE
    d = (obs - ic).astype(np.float64)
    return (float(term[mm].sum()), float(mm.sum()), float(term[mf].sum()), float(mf.sum()),
            float(np.sum(d[mm] ** 2 / np.maximum(ic[mm], 1.0))), float(ic[mm].sum(dtype=np.float64)),
            float(obs[mm].sum(dtype=np.float64)))


@kernel(_np_sums_chunk)
def _sums_chunk(buf, amp, kind, s2, logy, start):  # pragma: no cover - compiled
    """The metric sums of `_fourier_sums` over buf[start : start + logy.size]; logy = ln(Ic/I) there.

    Read-only and branch-free, so that it vectorises (with the modulus written in the same loop, or
    with if-selects, it ran 20-30 times slower)."""
    buf = buf[start:start + logy.size]
    amp = amp[start:start + logy.size]
    kind = kind[start:start + logy.size]
    llk = 0.0
    llkf = 0.0
    chi2 = 0.0
    nm = 0.0
    nf = 0.0
    sic = 0.0
    si = 0.0
    one = np.float32(1.0)
    for j in range(logy.size):
        k = kind[j]
        z = buf[j]
        a = amp[j]
        r2 = z.real * z.real + z.imag * z.imag
        mm = np.float32(k == 1)
        mf = np.float32(k == 2)
        ic = r2 * s2
        icf = max(ic, np.float32(1e-12))
        obs = a * a
        x = icf / max(obs, np.float32(1e-30)) - one
        small = np.float32(abs(x) < np.float32(0.03))  # branch-free selects: the loop vectorises
        xs = min(max(x, np.float32(-0.03)), np.float32(0.03))
        series = xs * xs * (np.float32(0.5) - xs * (np.float32(1.0 / 3.0) - xs * (np.float32(0.25) - xs * np.float32(0.2))))
        g = small * (obs * series) + (one - small) * (icf - obs - obs * logy[j])
        p = np.float32(obs > np.float32(0.0))
        term = p * g + (one - p) * ic
        llk += mm * term
        llkf += mf * term
        nm += mm
        nf += mf
        d = obs - ic
        chi2 += mm * (d * d / max(ic, one))
        sic += mm * ic
        si += mm * obs
    return llk, nm, llkf, nf, chi2, sic, si


def _np_update_bounded(rho, buf, support, a, b, pos, bound2):
    p = buf.copy()
    r2 = p.real * p.real + p.imag * p.imag
    pc = p * np.sqrt(bound2 / np.maximum(r2, bound2)).astype(np.float32)
    inside = support.astype(bool) & ~((p.real < 0) & bool(pos))
    v = np.where(inside, pc, a * rho + b * p)
    rho[:] = v
    buf[:] = v


def _np_update(rho, buf, support, a, b, pos):
    _np_update_bounded(rho, buf, support, a, b, pos, np.float32(np.finfo(np.float32).max))


@kernel(_np_update)
def _update(rho, buf, support, a, b, pos):  # pragma: no cover - compiled
    """rho <- where(inside, p, a rho + b p) with p = buf; inside = support and (not pos or Re p >= 0).

    Writes the result to rho and to buf (the next iteration's FFT input)."""
    for i in range(rho.size):
        p = buf[i]
        x = rho[i]
        neg = np.float32(p.real < np.float32(0.0)) * pos
        inside = np.float32(support[i]) * (np.float32(1.0) - neg)
        v = inside * p + (np.float32(1.0) - inside) * (a * x + b * p)
        rho[i] = v
        buf[i] = v


@kernel(_np_update_bounded)
def _update_bounded(rho, buf, support, a, b, pos, bound2):  # pragma: no cover - compiled
    """As `_update`, and inside the support |p| is clipped to sqrt(bound2) (amplitude bound)."""
    for i in range(rho.size):
        p = buf[i]
        x = rho[i]
        r2 = p.real * p.real + p.imag * p.imag
        pc = p * np.sqrt(bound2 / max(r2, bound2))  # the bound acts on the support only
        neg = np.float32(p.real < np.float32(0.0)) * pos
        inside = np.float32(support[i]) * (np.float32(1.0) - neg)
        v = inside * pc + (np.float32(1.0) - inside) * (a * x + b * p)
        rho[i] = v
        buf[i] = v


def _np_outside_sums(buf, support):
    e = buf.real.astype(np.float64) ** 2 + buf.imag.astype(np.float64) ** 2
    return float(e[~support.astype(bool)].sum()), float(e.sum())


def _np_update_sums(rho, buf, support, a, b, pos, bound2):
    out, tot = _np_outside_sums(buf, support)
    _np_update_bounded(rho, buf, support, a, b, pos, bound2)
    return out, tot


@kernel(_np_update_sums)
def _update_sums(rho, buf, support, a, b, pos, bound2):  # pragma: no cover - compiled
    """`_update_bounded` (bound2 = float32 max: no bound, bitwise `_update`) and, in the same pass,
    `_outside_sums` of p = P_M rho (the recording iterations)."""
    out = 0.0
    tot = 0.0
    for i in range(rho.size):
        p = buf[i]
        x = rho[i]
        r2 = p.real * p.real + p.imag * p.imag
        e = float(p.real) ** 2 + float(p.imag) ** 2
        tot += e
        out += e * float(np.float32(1.0) - np.float32(support[i]))
        pc = p * np.sqrt(bound2 / max(r2, bound2))
        neg = np.float32(p.real < np.float32(0.0)) * pos
        inside = np.float32(support[i]) * (np.float32(1.0) - neg)
        v = inside * pc + (np.float32(1.0) - inside) * (a * x + b * p)
        rho[i] = v
        buf[i] = v
    return out, tot


@kernel(_np_outside_sums, EXACT)
def _outside_sums(buf, support):  # pragma: no cover - compiled
    """(sum of |p|^2 off the support, total sum of |p|^2) in float64."""
    out = 0.0
    tot = 0.0
    for i in range(buf.size):
        z = buf[i]
        e = float(z.real) ** 2 + float(z.imag) ** 2
        tot += e
        if not support[i]:
            out += e
    return out, tot


def _np_scaled_copy(dst, src, s):
    np.multiply(src, s, out=dst)


@kernel(_np_scaled_copy)
def _scaled_copy(dst, src, s):  # pragma: no cover - compiled
    """dst <- src * s."""
    for i in range(dst.size):
        dst[i] = src[i] * s


def _np_ml_gradient(buf, psi, amp, kind, s, eps):
    r2 = np.maximum(psi.real * psi.real + psi.imag * psi.imag, eps)
    m = (kind == MEASURED).astype(np.float32)
    buf[:] = psi * (m * (np.float32(1.0) - amp * amp / r2) * s)


@kernel(_np_ml_gradient)
def _ml_gradient(buf, psi, amp, kind, s, eps):  # pragma: no cover - compiled
    """buf <- dL/dPsi* prescaled by s for the unscaled inverse.

    dL/dPsi* = Psi (1 - I/|Psi|^2) on measured pixels (|Psi|^2 floored at eps), 0 elsewhere."""
    for i in range(buf.size):
        z = psi[i]
        r2 = max(z.real * z.real + z.imag * z.imag, eps)
        m = np.float32(kind[i] == 1)
        buf[i] = z * (m * (np.float32(1.0) - amp[i] * amp[i] / r2) * s)


def _np_ml_line_sums(psi, dd, amp, kind, t, s, eps):
    m = (kind == MEASURED)
    q = dd[m] * s
    p = psi[m] + np.float32(t) * q
    f = np.maximum(p.real * p.real + p.imag * p.imag, eps)
    fp = np.float32(2.0) * (p.real * q.real + p.imag * q.imag)
    fpp = np.float32(2.0) * (q.real * q.real + q.imag * q.imag)
    r = amp[m] * amp[m] / f
    return (float(np.sum(fp * (1 - r), dtype=np.float64)),
            float(np.sum(fpp * (1 - r) + r * fp * fp / f, dtype=np.float64)))


@kernel(_np_ml_line_sums)
def _ml_line_sums(psi, dd, amp, kind, t, s, eps):  # pragma: no cover - compiled
    """First and second derivatives in t of L(Psi + t D), D = dd * s, summed over measured pixels."""
    d1 = 0.0
    d2 = 0.0
    tf = np.float32(t)
    for i in range(psi.size):
        m = np.float32(kind[i] == 1)
        q = dd[i] * s
        p = psi[i] + tf * q
        f = max(p.real * p.real + p.imag * p.imag, eps)
        fp = np.float32(2.0) * (p.real * q.real + p.imag * q.imag)
        fpp = np.float32(2.0) * (q.real * q.real + q.imag * q.imag)
        r = amp[i] * amp[i] / f
        d1 += m * (fp * (np.float32(1.0) - r))
        d2 += m * (fpp * (np.float32(1.0) - r) + r * fp * fp / f)
    return d1, d2


def _ml_delta(psi, dd, amp, kind, t, s, eps):
    """L(Psi + t D) - L(Psi), D = dd * s, over measured pixels (float32 terms, float64 sum).

    Written as f0 x - I log(1 + x) with x = (f1 - f0) / f0, and log(1 + x) by its series when |x| is
    small: the naive (f1 - f0) - I log(f1 / f0) in float32 loses everything to cancellation for the
    small steps of a converging run (an error floor of ~1e-7 I per pixel), so the sign the line-search
    safeguard needs would be noise. Chunk by chunk, the logarithms by numpy's vectorised float32 log
    on a cache-sized scratch: numba's scalar log made this pass cost 0.4 FFT pairs at 128^3."""
    acc = np.zeros(1)
    tf, s, eps = np.float32(t), np.float32(s), np.float32(eps)
    log_pass(psi.size, np.float32, lambda y, start: _ml_ratio_chunk(psi, dd, tf, s, eps, y, start),
             lambda y, start: _ml_delta_chunk(psi, dd, amp, kind, tf, s, eps, y, start, acc))
    return float(acc[0])


def _np_ml_ratio_chunk(psi, dd, t, s, eps, y, start):
    sl = slice(start, start + y.size)
    p = psi[sl]
    p1 = p + t * (dd[sl] * s)
    f0 = np.maximum(p.real * p.real + p.imag * p.imag, eps)
    f1 = np.maximum(p1.real * p1.real + p1.imag * p1.imag, eps)
    y[:] = f1 / f0


@kernel(_np_ml_ratio_chunk)
def _ml_ratio_chunk(psi, dd, t, s, eps, y, start):  # pragma: no cover - compiled
    """y <- f1 / f0 over psi[start : start + y.size], f0 = max(|Psi|^2, eps), f1 = max(|Psi + t D|^2, eps)."""
    psi = psi[start:start + y.size]
    dd = dd[start:start + y.size]
    for j in range(y.size):
        p = psi[j]
        p1 = p + t * (dd[j] * s)
        f0 = max(p.real * p.real + p.imag * p.imag, eps)
        f1 = max(p1.real * p1.real + p1.imag * p1.imag, eps)
        y[j] = f1 / f0


def _np_ml_delta_chunk(psi, dd, amp, kind, t, s, eps, logy, start, acc):
    sl = slice(start, start + logy.size)
    m = kind[sl] == MEASURED
    p = psi[sl][m]
    p1 = p + t * (dd[sl][m] * s)
    f0 = np.maximum(p.real * p.real + p.imag * p.imag, eps)
    f1 = np.maximum(p1.real * p1.real + p1.imag * p1.imag, eps)
    x = (f1 - f0) / f0
    series = x * (1 - x * (np.float32(0.5) - x * (np.float32(1.0 / 3.0) - x * np.float32(0.25))))
    lg = np.where(np.abs(x) < np.float32(0.03), series, logy[m])
    a = amp[sl][m]
    acc[0] += float(np.sum(f0 * x - a * a * lg, dtype=np.float64))


@kernel(_np_ml_delta_chunk)
def _ml_delta_chunk(psi, dd, amp, kind, t, s, eps, logy, start, acc):  # pragma: no cover - compiled
    """Adds the terms of `_ml_delta` over psi[start : start + logy.size] to acc[0]; logy = ln(f1 / f0).

    Read-only and branch-free, so that it vectorises."""
    psi = psi[start:start + logy.size]
    dd = dd[start:start + logy.size]
    amp = amp[start:start + logy.size]
    kind = kind[start:start + logy.size]
    out = 0.0
    for j in range(logy.size):
        m = np.float32(kind[j] == 1)
        p = psi[j]
        p1 = p + t * (dd[j] * s)
        f0 = max(p.real * p.real + p.imag * p.imag, eps)
        f1 = max(p1.real * p1.real + p1.imag * p1.imag, eps)
        x = (f1 - f0) / f0
        small = np.float32(abs(x) < np.float32(0.03))  # branch-free select
        xs = min(max(x, np.float32(-0.03)), np.float32(0.03))
        series = xs * (np.float32(1.0) - xs * (np.float32(0.5) - xs * (np.float32(1.0 / 3.0) - xs * np.float32(0.25))))
        lg = small * series + (np.float32(1.0) - small) * logy[j]
        out += m * (f0 * x - amp[j] * amp[j] * lg)
    acc[0] += out


def _np_ml_apply(rho, d, psi, buf, t, s):
    psi += t * (buf * s)
    rho += t * d
    buf[:] = rho


@kernel(_np_ml_apply)
def _ml_apply(rho, d, psi, buf, t, s):  # pragma: no cover - compiled
    """rho += t d; psi += t D with D = buf * s (buf: unscaled transform of d); buf <- rho."""
    for i in range(rho.size):
        psi[i] = psi[i] + t * (buf[i] * s)
        v = rho[i] + t * d[i]
        rho[i] = v
        buf[i] = v


# --------------------------------------------------------------------------- the shared state


@dataclasses.dataclass
class State:
    """Everything one run's steps share, all arrays in FFT order (flat views go to the kernels).

    `pair.buffer` holds rho at the start of every step (invariant kept by every step).
    """

    pair: fft.FFTPair
    rho: np.ndarray                 # complex64, the current object
    amp: np.ndarray                 # float32, sqrt(measured photons), 0 where not measured
    kind: np.ndarray                # int8, MASKED / MEASURED / FREE
    support: np.ndarray             # bool
    positivity: bool = False
    amplitude_bound: float | None = None
    support_update: int = 20        # shrink-wrap every k iterations of er/hio/raar (0: never)
    support_threshold: tuple[float, float] = (0.12, 0.1)  # relative to the maximum of blurred |rho|, start -> end
    support_smooth: tuple[float, float] = (1.0, 0.5)  # Gaussian sigma (pixels) at start and end
    support_min_fraction: float = 0.0  # shrink-wrap never goes below this fraction of the initial size
    iteration: int = 0              # iterations done so far in the whole recipe
    total: int = 1                  # iterations of the whole recipe (for the smoothing schedule)
    record_every: int = 10          # history every k iterations (0: none)
    report_every: int = 0           # progress every k iterations (0: none); on_record fires on both periods
    on_record: Callable[["State", str], None] | None = None
    ml: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # ML work arrays
    last: dict[str, float] = dataclasses.field(default_factory=dict)     # latest metrics
    initial_support_size: int = 0
    psf: Any = None                 # psf.Psf when the partial-coherence model is on (see psf.py)
    psf_start: Any = None           # psf.PsfSpec: the start of a `psf` step without parameters
    psf_update: int = 25            # PSF refinement every k projections
    psf_method: str = "ml"          # PSF refinement: "ml" (Poisson ML width) or "rl" (Richardson-Lucy)
    detwin_saved: Any = None        # the full support while a `detwin` block runs on one half

    @property
    def buf(self) -> np.ndarray:
        return self.pair.buffer


def fourier_metrics(state: State, psi: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of rho against the data from its transform: `psi` (unitary) or, if None, the
    unscaled forward transform now in the pair's buffer.

    Formulas (Ic = |F rho|^2 with the unitary F, I the measured photons; sums over measured pixels
    that are not withheld, `llk_free` over the withheld free pixels):
      llk      = (1/n) sum [Ic - I + I ln(I/Ic)]   Poisson negative log-likelihood ratio per pixel
                 (0 for a perfect fit; about 0.5 per pixel for Poisson noise on a correct model)
      llk_free = the same over the free pixels (never used by the modulus projection)
      chi2     = (1/n) sum (I - Ic)^2 / max(Ic, 1)  (about 1 for a correct model)
      scale    = sum Ic / sum I.
    """
    buf = state.buf.reshape(-1) if psi is None else psi.reshape(-1)
    s2 = 1.0 / buf.size if psi is None else 1.0
    return metrics_from_sums(_fourier_sums(buf, state.amp.reshape(-1), state.kind.reshape(-1), s2))


def outside_fraction(state: State, array: np.ndarray) -> float:
    """sum over pixels off the support of |x|^2 / sum of |x|^2 (x: P_M rho, or rho)."""
    out, tot = _outside_sums(array.reshape(-1), state.support.reshape(-1))
    return out / tot if tot > 0 else float("nan")


def _recording(state: State) -> bool:
    """Whether the metrics of this iteration are wanted: it ends a history or a progress period (each
    on its own period; `on_record` tells which from `state.iteration`)."""
    if state.on_record is None:
        return False
    it = state.iteration + 1
    return any(k > 0 and it % k == 0 for k in (state.record_every, state.report_every))


def fourier_projection(state: State, rec: bool, clip: Callable[[np.ndarray], None] | None = None) -> None:
    """buf (rho) <- P_M rho: forward transform, modulus projection (the PSF-blurred model when one is on;
    on recording iterations the metric sums come from the modulus pass itself), unitary inverse.
    `clip` acts on the unscaled transform before the projection (masked pixels only, by its contract)."""
    buf = state.buf.reshape(-1)
    n = buf.size
    s = np.float32(1.0 / np.sqrt(n))
    state.pair.forward(scale=False)
    if clip is not None:
        clip(buf)
    if state.psf is not None:  # partial coherence: the blurred model (psf.py)
        m = state.psf.project(state.buf, state.amp, state.kind, record=rec)
        if rec:
            state.last.update(m)
    elif rec:
        state.last.update(metrics_from_sums(
            _modulus_sums(buf, state.amp.reshape(-1), state.kind.reshape(-1), s, np.float32(1.0 / n))))
    else:
        _modulus(buf, state.amp.reshape(-1), state.kind.reshape(-1), s, np.float32(1.0 / n))
    state.pair.inverse(scale=False)


def end_iteration(state: State, name: str, rec: bool) -> None:
    """Count the iteration, shrink-wrap on the state's period, and record (support size, `on_record`)."""
    state.iteration += 1
    if state.support_update and state.iteration % state.support_update == 0:
        shrink_wrap(state)
    if rec:
        state.last["support_size"] = int(np.count_nonzero(state.support))
        state.on_record(state, name)  # type: ignore[misc]


def _projection_step(a: float, b: float, name: str) -> Callable[[State], None]:
    """One iteration of an algorithm whose off-support rule is a rho + b P_M rho."""
    fa, fb = np.float32(a), np.float32(b)

    def step(state: State) -> None:
        buf = state.buf.reshape(-1)
        rho = state.rho.reshape(-1)
        rec = _recording(state)
        fourier_projection(state, rec)
        pos = np.float32(1.0 if state.positivity else 0.0)
        sup = state.support.reshape(-1)
        if rec:  # the outside fraction of P_M rho from the update pass itself
            bound2 = np.float32(state.amplitude_bound ** 2) if state.amplitude_bound else _NO_BOUND
            out, tot = _update_sums(rho, buf, sup, fa, fb, pos, bound2)
            state.last["outside_fraction"] = out / tot if tot > 0 else float("nan")
        elif state.amplitude_bound:
            _update_bounded(rho, buf, sup, fa, fb, pos, np.float32(state.amplitude_bound ** 2))
        else:
            _update(rho, buf, sup, fa, fb, pos)
        end_iteration(state, name, rec)

    return step


def make_er() -> Callable[[State], None]:
    """Error reduction: rho <- P_S P_M rho (zero off the support)."""
    return _projection_step(0.0, 0.0, "er")


def make_hio(beta: float = 0.9) -> Callable[[State], None]:
    """Hybrid input-output: off the support rho <- rho - beta P_M rho."""
    return _projection_step(1.0, -beta, "hio")


def make_raar(beta: float = 0.9) -> Callable[[State], None]:
    """Relaxed averaged alternating reflections: off the support rho <- beta rho + (1 - 2 beta) P_M rho."""
    return _projection_step(beta, 1.0 - 2.0 * beta, "raar")


def make_ml() -> Callable[[State], None]:
    """One conjugate-gradient iteration on the Poisson log-likelihood (rho restricted to the support).

    Two FFTs per iteration (the gradient back to real space, the direction forward). Work arrays
    (Psi = F rho, direction, previous gradient: three complex arrays) are kept on the state; Psi is
    computed from rho at the first iteration of each block of ml steps and updated with the step."""

    def step(state: State) -> None:
        if state.psf is not None:            # partial coherence: the blurred model's likelihood
            ml_psf_iteration(state, _recording(state))
            return
        buf = state.buf.reshape(-1)
        rho = state.rho.reshape(-1)
        n = buf.size
        s = np.float32(1.0 / np.sqrt(n))
        amp = state.amp.reshape(-1)
        kind = state.kind.reshape(-1)
        sup = state.support.reshape(-1)
        if "psi" not in state.ml:
            for key in ("psi", "d", "gprev"):
                state.ml[key] = np.zeros(n, np.complex64)
        psi, d, gprev = state.ml["psi"], state.ml["d"], state.ml["gprev"]
        first = state.ml.get("block_start") != state.iteration
        rec = _recording(state)
        eps = 1e-2                           # floor of |Psi|^2 (photons) in the gradient
        if first:                            # Psi = F rho; later kept up to date as Psi += t D
            rho *= sup                       # the likelihood is minimised over objects inside S
            buf[:] = rho
            state.pair.forward(scale=False)
            _scaled_copy(psi, buf, s)
        if rec:
            state.last.update(fourier_metrics(state, psi))
        _ml_gradient(buf, psi, amp, kind, s, np.float32(eps))
        state.pair.inverse(scale=False)      # buf = F^H dL/dPsi*
        ml_direction(buf, sup, d, gprev, first)
        state.pair.forward(scale=False)      # buf = sqrt(N) D, D = F d
        t = 0.0
        for _ in range(2):                   # Newton's method on L(Psi + t D), from t = 0
            d1, d2 = _ml_line_sums(psi, buf, amp, kind, t, s, np.float32(eps))
            if not (d2 > 0.0 and np.isfinite(d1)):
                break
            t -= d1 / d2
        for _ in range(5):                   # safeguard: the step must lower L (halve it if not)
            if _ml_delta(psi, buf, amp, kind, t, s, np.float32(eps)) <= 0.0:
                break
            t *= 0.5
        else:
            t = 0.0
        _ml_apply(rho, d, psi, buf, np.float32(t), s)
        state.ml["block_start"] = state.iteration + 1
        state.iteration += 1
        if rec:
            state.last["outside_fraction"] = 0.0  # ML keeps rho on the support (rho *= S, d = P_S G)
            state.last["support_size"] = int(np.count_nonzero(state.support))
            state.on_record(state, "ml")  # type: ignore[misc]

    return step


def make_support_update(threshold: float | None = None, sigma: float | None = None) -> Callable[[State], None]:
    """A shrink-wrap update now (threshold relative to the maximum, Gaussian sigma in pixels)."""

    def step(state: State) -> None:
        shrink_wrap(state, threshold=threshold, sigma=sigma)

    return step


def make_detwin(axis: float = 0, beta: float = 0.9) -> Callable[[State], None]:
    """One HIO iteration under the support cut to one half along `axis` (detwin.py); the cut is made
    at the first iteration of a block, without shrink-wrap, and `step.end` restores the full support."""
    hio = _projection_step(1.0, -beta, "detwin")

    def step(state: State) -> None:
        if state.detwin_saved is None:
            state.detwin_saved = state.support.copy()
            state.support[...] = half_support(state.support, int(axis), state.rho)
        period, state.support_update = state.support_update, 0
        try:
            hio(state)
        finally:
            state.support_update = period

    def end(state: State) -> None:
        if state.detwin_saved is not None:
            state.support[...] = state.detwin_saved
            state.detwin_saved = None

    step.end = end  # type: ignore[attr-defined]
    return step


#: name -> (factory, parameter names, one-line description). The only names a recipe may use; step
#: modules that build on this one (regularise.py) add their entries when imported (runs.py imports them).
STEPS: dict[str, tuple[Callable[..., Callable[[State], None]], tuple[str, ...], str]] = {
    "er": (make_er, (), "error reduction, Fienup 1982"),
    "hio": (make_hio, ("beta",), "hybrid input-output (beta = 0.9)"),
    "raar": (make_raar, ("beta",), "relaxed averaged alternating reflections (beta = 0.9)"),
    "ml": (make_ml, (), "Poisson maximum-likelihood refinement (conjugate gradient)"),
    "sup": (make_support_update, ("threshold", "sigma"), "one shrink-wrap support update now"),
    "detwin": (make_detwin, ("axis", "beta"), "HIO on half of the support (twin breaking), then restored"),
    "psf": (make_psf_switch, ("fwhm", "eta", "update"), "partial-coherence PSF on now (fwhm=0: off)"),
}

#: steps that count as iterations (run the FFT pair); `sup` does not.
ITERATIVE = {"er", "hio", "raar", "ml", "detwin"}


def step_parameters() -> dict[str, tuple[str, ...]]:
    """Valid parameter names of each step, for `recipe.parse`."""
    return {name: params for name, (_, params, _) in STEPS.items()}


def build(name: str, params: dict[str, Any]) -> Callable[[State], None]:
    """Make the callable of a step from its name and parameters."""
    return STEPS[name][0](**params)
