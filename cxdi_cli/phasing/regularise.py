"""Regularised steps for noisy and missing data: GPS, total variation, constrained power, OSS, cut.

Each step is one iteration over the shared `algorithms.State` (FFT order, the pair's buffer holds
rho at the start and the end of every iteration), built from the same pieces as ER/HIO: the
forward transform, the modulus projection P_M, the inverse transform and an update rule. What a
step must keep between its iterations (GPS's dual variable, the TV dual field, the power bound)
lives in `state.ml` under the step's own keys, so a checkpointed run continues exactly.

- ``gps(t, s, sigma, eps)`` -- generalized proximal smoothing (Pham, Yin, Rana, Osher & Miao 2019,
  Opt. Express 27, 2792): a primal-dual (Chambolle-Pock) iteration on  min_z g(z) + f_G(F^-1 z),
  g the least-squares Fourier fidelity, f the support indicator relaxed by a Moreau-Yosida envelope
  with a Gaussian (heat-kernel) metric G. With rho = F^-1 z and y the real-space dual variable:
      z+   = prox_tg(F(rho - t y)):  measured q: (t b + eps |x|)/(t + eps) x/|x|,  others: x
      y+   = (I + s G)^-1 P_out(y + s (2 rho+ - rho))    (G: convolution with a Gaussian of sigma px)
  P_out keeps what lies off the support (and, with positivity, negative real parts on it): the
  Moreau identity for the support's indicator; (I + s G)^-1, the Fourier multiplier
  1/(1 + s exp(-2 pi^2 sigma^2 f^2)), is the proximal map of the quadratic 1/2 <y, G y> that the
  Moreau-Yosida envelope with metric G adds to the dual: it damps the smooth part of y (the
  object's large-scale misfit off the support) most. eps = 0 is the exact modulus projection;
  with s = t = 1, sigma = 0 the iteration is HIO (beta = 1) on u = rho - y.
- ``tv(weight, beta, n)`` -- total-variation regularised projection for incomplete data (Chang, Lou,
  Ng & Zeng 2016, SIAM J. Sci. Comput. 38, A3672): p = P_M rho, then on the support
  p <- argmin_u 1/2 |u - p|^2 + lambda TV(u), lambda = weight * rms|p| on S (real and imaginary
  parts apart; `n` iterations of Chambolle's 2004 dual projection, warm-started from the last
  iteration's dual field); off the support the HIO rule with `beta` (0: error reduction).
- ``cpower(kappa, beta, shells)`` -- constrained power in the unmeasured pixels (after Thibault, Elser,
  Jacobsen, Shapiro & Sayre 2006, Acta Cryst. A 62, 248): an HIO iteration whose modulus step also
  clips |Psi(q)|^2 <= kappa B(q) behind the beamstop (the shells with no measured pixel), B the
  Porod envelope I_e (r_e/r)^(d+1) of a compact object from the beamstop's edge, flat inside the
  central speckle (`power_bound`). It keeps the unconstrained low frequencies from drifting to
  powers the data exclude; elsewhere it is HIO.
- ``oss(beta, n)`` -- oversampling smoothness (Rodriguez, Xu, Yang, van den Broek & Miao 2013,
  J. Appl. Cryst. 46, 312): HIO, then the off-support part smoothed by the Fourier filter
  W(k) = exp(-k^2 / (2 alpha^2)), k in pixels of the largest axis N; alpha goes down from N to
  1/N in 10 stages over `n` iterations (0: the rest of the recipe from the block's start).
- ``cut(photons)`` -- a resolution cut-off of the unmeasured pixels (not an iteration): the object's
  transform is set to 0 in the masked pixels of every shell from the first one whose measured pixels
  hold fewer than `photons` photons on average outward (`low_signal_shells`). Nothing constrains
  those pixels (a missing wedge, the corners beyond the detector) and the data around them are below
  the noise, so what ER and ML leave there is noise; the 3D default recipe ends with it
  (`problem.CUT_3D`).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cxdi_cli.phasing import algorithms as alg
from cxdi_cli.phasing.support import gaussian_transfer

# --------------------------------------------------------------------------- shared pieces


def _first(state: alg.State, key: str) -> bool:
    """True at the first iteration of a block of steps `key` (the ML step's convention: a block
    continues while the previous iteration of this kind was the one just before)."""
    return state.ml.get(key + "_next") != state.iteration


def _inside(state: alg.State, p: np.ndarray) -> np.ndarray:
    """The pixels the object constraint keeps: the support, less negative real parts with positivity."""
    if state.positivity:
        return state.support & (p.real >= 0)
    return state.support


def _finish(state: alg.State, name: str, rec: bool, p_outside: tuple[float, float] | None = None) -> None:
    """End of an iteration: count it, shrink-wrap on the state's period, record."""
    state.ml[name + "_next"] = state.iteration + 1
    if rec and p_outside is not None:
        out, tot = p_outside
        state.last["outside_fraction"] = out / tot if tot > 0 else float("nan")
    alg.end_iteration(state, name, rec)


def _outside(state: alg.State) -> tuple[float, float]:
    return alg._outside_sums(state.buf.reshape(-1), state.support.reshape(-1))


def _hio_update(state: alg.State, beta: float) -> None:
    """rho <- where(inside, p, rho - beta p) with p = buf; buf <- rho (the ER/HIO update kernel)."""
    pos = np.float32(1.0 if state.positivity else 0.0)
    alg._update(state.rho.reshape(-1), state.buf.reshape(-1), state.support.reshape(-1),
                np.float32(1.0 if beta else 0.0), np.float32(-beta), pos)


def _smooth(state: alg.State, array: np.ndarray, transfer: np.ndarray) -> None:
    """array <- inverse(transfer * forward(array)) through the pair's buffer (array may be the buffer)."""
    buf = state.buf
    if array is not buf:
        buf[...] = array
    state.pair.forward(scale=False)
    buf *= transfer
    state.pair.inverse(scale=False)
    buf *= np.float32(1.0 / buf.size)
    if array is not buf:
        array[...] = buf


# --------------------------------------------------------------------------- GPS


def make_gps(t: float = 1.0, s: float = 0.9, sigma: float = 1.0, eps: float = 0.0) -> Callable[[alg.State], None]:
    """Generalized proximal smoothing (Pham et al. 2019): one primal-dual iteration (module docstring).

    t, s: primal and dual step sizes (t s <= 1 for the convex theory); sigma: the Gaussian smoothing
    of the dual variable in pixels (0: none); eps: relaxation of the Fourier fidelity (0: exact
    projection; > 0 trusts the measured amplitudes less, for noisy data, in units of t)."""
    if t <= 0 or s <= 0 or sigma < 0 or eps < 0:
        raise ValueError("gps: t and s must be positive, sigma and eps not negative")
    ft, fs = np.float32(t), np.float32(s)
    w = np.float32(t / (t + eps))

    def step(state: alg.State) -> None:
        rec = alg._recording(state)
        buf, rho = state.buf, state.rho
        if _first(state, "gps") or "gps_y" not in state.ml:
            state.ml["gps_y"] = np.zeros_like(rho)
        y = state.ml["gps_y"]
        if sigma > 0 and state.ml.get("gps_sigma") != (sigma, buf.shape):
            state.ml["gps_transfer"] = (np.float32(1) / (np.float32(1) + fs * gaussian_transfer(buf.shape, sigma))).astype(np.float32)
            state.ml["gps_sigma"] = (sigma, buf.shape)
        np.subtract(rho, ft * y, out=buf)              # x = F(rho - t y) after the forward FFT
        if w == 1:
            alg.fourier_projection(state, rec)                       # buf = rho+ = F^-1 P_M x
        else:
            x0 = buf.copy()                            # (t b + eps |x|)/(t + eps) x/|x| = x + w (P_M x - x)
            alg.fourier_projection(state, rec)
            buf *= w
            buf += (np.float32(1) - w) * x0
        out = _outside(state) if rec else None
        y += fs * (np.float32(2) * buf - rho)          # y + s (2 rho+ - rho)
        rho[...] = buf
        keep = _inside(state, y)                       # Moreau: y - P_S(y) (a cone: the scale drops out)
        y[keep] = 0
        if sigma > 0:
            _smooth(state, y, state.ml["gps_transfer"])
        buf[...] = rho
        _finish(state, "gps", rec, out)

    return step


# --------------------------------------------------------------------------- total variation


def _grad(u: np.ndarray) -> list[np.ndarray]:
    """Forward differences along every axis (zero at the far edge: Neumann)."""
    out = []
    for ax in range(u.ndim):
        g = np.zeros_like(u)
        sl_a = [slice(None)] * u.ndim
        sl_b = [slice(None)] * u.ndim
        sl_a[ax] = slice(0, -1)
        sl_b[ax] = slice(1, None)
        g[tuple(sl_a)] = u[tuple(sl_b)] - u[tuple(sl_a)]
        out.append(g)
    return out


def _div(p: list[np.ndarray]) -> np.ndarray:
    """The negative adjoint of `_grad` (backward differences)."""
    d = np.zeros_like(p[0])
    for ax, g in enumerate(p):
        n = g.shape[ax]
        sl = [slice(None)] * g.ndim
        prev = [slice(None)] * g.ndim
        sl[ax] = slice(1, n)
        prev[ax] = slice(0, n - 1)
        d[tuple(sl)] += g[tuple(sl)] - g[tuple(prev)]
        first = [slice(None)] * g.ndim
        first[ax] = slice(0, 1)
        d[tuple(first)] += g[tuple(first)]
        last = [slice(None)] * g.ndim
        last[ax] = slice(n - 1, n)
        d[tuple(last)] -= g[tuple(last)]
    return d


def tv_denoise(f: np.ndarray, lam: float, n: int = 10, dual: list[np.ndarray] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """argmin_u 1/2 |u - f|^2 + lam TV(u) for a real array (isotropic TV), by `n` iterations of
    Chambolle's dual projection (2004, J. Math. Imaging Vis. 20, 89). Returns (u, dual field);
    `dual` warm-starts the iteration."""
    f = np.asarray(f, np.float32)
    if lam <= 0:
        return f.copy(), dual or [np.zeros_like(f) for _ in range(f.ndim)]
    p = dual if dual is not None else [np.zeros_like(f) for _ in range(f.ndim)]
    tau = np.float32(1.0 / (4.0 * f.ndim))
    inv = np.float32(1.0 / lam)
    for _ in range(max(1, int(n))):
        g = _grad(_div(p) - f * inv)
        norm = np.sqrt(sum(gi * gi for gi in g))
        den = np.float32(1) + tau * norm
        for k in range(f.ndim):
            p[k] = (p[k] + tau * g[k]) / den
    return f - np.float32(lam) * _div(p), p


def make_tv(weight: float = 0.02, beta: float = 0.0, n: float = 10) -> Callable[[alg.State], None]:
    """A modulus projection, a TV proximal step on the support, then ER (beta = 0) or HIO off it."""
    if weight < 0 or n < 1:
        raise ValueError("tv: weight must not be negative and n at least 1")

    def step(state: alg.State) -> None:
        rec = alg._recording(state)
        alg.fourier_projection(state, rec)
        buf = state.buf
        out = _outside(state) if rec else None
        sup = state.support
        vals = buf[sup]
        rms = float(np.sqrt(np.mean(np.abs(vals) ** 2))) if vals.size else 0.0
        if weight > 0 and rms > 0:
            if _first(state, "tv") or "tv_dual_re" not in state.ml:
                state.ml["tv_dual_re"] = [np.zeros(buf.shape, np.float32) for _ in range(buf.ndim)]
                state.ml["tv_dual_im"] = [np.zeros(buf.shape, np.float32) for _ in range(buf.ndim)]
            lam = weight * rms
            inside = np.where(sup, buf, 0)
            re, state.ml["tv_dual_re"] = tv_denoise(inside.real, lam, int(n), state.ml["tv_dual_re"])
            im, state.ml["tv_dual_im"] = tv_denoise(inside.imag, lam, int(n), state.ml["tv_dual_im"])
            buf[sup] = (re + 1j * im).astype(np.complex64)[sup]
        _hio_update(state, beta)
        _finish(state, "tv", rec, out)

    return step


# --------------------------------------------------------------------------- constrained power


def _radius(shape: tuple[int, ...]) -> np.ndarray:
    """Distance from q = 0 in pixels, FFT order."""
    r2 = np.zeros(shape, np.float32)
    for ax, n in enumerate(shape):
        f = (np.fft.fftfreq(n) * n).astype(np.float32)
        sh = [1] * len(shape)
        sh[ax] = n
        r2 = r2 + (f * f).reshape(sh)
    return np.sqrt(r2)


def power_bound(amp: np.ndarray, kind: np.ndarray, extent: float, shells: bool = False) -> np.ndarray:
    """Upper bound B(q) of the intensity (photons) behind the beamstop, FFT order; inf elsewhere.

    The shells r = |q| (integer pixels) inside the first shell with a measured pixel, r_e, follow the
    Porod envelope of a compact object of `extent` pixels, I(r) <= I_e (r_e / max(r, r_c))^(d+1),
    from the largest intensity I_e of shell r_e, flat inside the central speckle r_c = N / (2 extent)
    (N the largest axis). Masked pixels of partly measured shells (a missing wedge, gaps) get no
    bound: a faceted object streaks brighter in the unmeasured directions than anything its shell
    measured, so a shell rule there clips true signal (a +-60 deg wedge: 0.23 -> 0.61). With
    `shells`, they do get one: the largest measured intensity of their shell (outer shells with no
    measured pixel: the bound of the shell inside); it helped 2D tungsten with its gaps and rod.
    In 3D the envelope from the beamstop's edge can lie below the true central intensity (a +-60 deg
    tilt series: 0.23 with HIO, 0.51 with kappa 4, 0.31 with 30, HIO again with 1000)."""
    intensity = amp.astype(np.float64) ** 2
    r = np.rint(_radius(amp.shape)).astype(np.int64)
    measured = kind != alg.MASKED
    nshell = int(r.max()) + 1
    peak = np.zeros(nshell)
    np.maximum.at(peak, r[measured], intensity[measured])
    if not np.any(peak > 0):
        return np.full(amp.shape, np.inf, np.float32)
    first = int(np.argmax(peak > 0))
    bound = np.full(nshell, np.inf)
    rc = max(0.5, max(amp.shape) / (2.0 * max(extent, 1.0)))
    inner = np.arange(first, dtype=float)
    bound[:first] = peak[first] * (first / np.maximum(inner, rc)) ** (amp.ndim + 1)
    if shells:
        for k in range(first, nshell):
            bound[k] = peak[k] if peak[k] > 0 else bound[k - 1]
    return bound[r].astype(np.float32)


def make_cpower(kappa: float = 4.0, beta: float = 0.9, shells: float = 0) -> Callable[[alg.State], None]:
    """HIO (beta; 0: ER) with the power of masked pixels clipped to kappa times `power_bound`
    (behind the beamstop; with shells=1 also masked pixels of partly measured shells)."""
    if kappa <= 0:
        raise ValueError("cpower: kappa must be positive")

    def step(state: alg.State) -> None:
        rec = alg._recording(state)
        if "cpower_index" not in state.ml or state.ml.get("cpower_kappa") != (kappa, shells):
            extent = float(np.count_nonzero(state.support)) ** (1.0 / state.support.ndim)
            full = power_bound(state.amp, state.kind, extent, shells=bool(shells)).reshape(-1)
            masked = np.flatnonzero((state.kind.reshape(-1) == alg.MASKED) & np.isfinite(full))
            bound = full[masked]
            # the unscaled transform z = sqrt(N) Psi: |z|^2 <= N kappa B
            state.ml["cpower_index"] = masked
            state.ml["cpower_bound2"] = (bound * np.float32(kappa * state.buf.size)).astype(np.float32)
            state.ml["cpower_kappa"] = (kappa, shells)
        idx = state.ml["cpower_index"]
        b2 = state.ml["cpower_bound2"]

        def clip(flat: np.ndarray) -> None:
            z = flat[idx]
            r2 = z.real * z.real + z.imag * z.imag
            flat[idx] = z * np.sqrt(b2 / np.maximum(r2, b2))

        alg.fourier_projection(state, rec, clip if idx.size else None)
        out = _outside(state) if rec else None
        _hio_update(state, beta)
        _finish(state, "cpower", rec, out)

    return step


# --------------------------------------------------------------------------- OSS


def oss_transfer(shape: tuple[int, ...], alpha: float) -> np.ndarray:
    """The OSS filter W(k) = exp(-k^2 / (2 alpha^2)), k in pixels from q = 0 (FFT order), times 1/N
    for the unscaled transform pair."""
    r = _radius(shape)
    return (np.exp(-0.5 * (r / np.float32(alpha)) ** 2) / np.float32(r.size)).astype(np.float32)


def make_oss(beta: float = 0.9, n: float = 0) -> Callable[[alg.State], None]:
    """HIO then the off-support part smoothed by W; alpha from N to 1/N in 10 stages over `n`
    iterations (0: from the block's start to the end of the recipe)."""

    def step(state: alg.State) -> None:
        rec = alg._recording(state)
        if _first(state, "oss") or "oss_start" not in state.ml:
            state.ml["oss_start"] = state.iteration
            state.ml["oss_length"] = int(n) if n >= 1 else max(1, state.total - state.iteration)
        frac = (state.iteration - state.ml["oss_start"]) / state.ml["oss_length"]
        stage = min(9, int(frac * 10))
        big = float(max(state.buf.shape))
        alpha = big + (1.0 / big - big) * stage / 9.0
        if state.ml.get("oss_alpha") != (alpha, state.buf.shape):
            state.ml["oss_transfer"] = oss_transfer(state.buf.shape, alpha)
            state.ml["oss_alpha"] = (alpha, state.buf.shape)
        alg.fourier_projection(state, rec)
        out = _outside(state) if rec else None
        inside = _inside(state, state.buf)
        _hio_update(state, beta)
        buf, rho = state.buf, state.rho
        buf[inside] = 0                          # the off-support part, smoothed
        state.pair.forward(scale=False)
        buf *= state.ml["oss_transfer"]
        state.pair.inverse(scale=False)
        buf[inside] = rho[inside]
        rho[...] = buf
        _finish(state, "oss", rec, out)

    return step


# --------------------------------------------------------------------------- low-signal cut-off


def low_signal_shells(amp: np.ndarray, kind: np.ndarray, photons: float) -> np.ndarray:
    """Flat indices (FFT order) of the masked pixels beyond the data's signal: in every shell r = |q|
    (integer pixels) from the first one whose measured pixels hold on average fewer than `photons`
    photons outward (shells with no measured pixel count as empty, except those inside the first
    measured shell: behind a beamstop the signal is strongest).

    There the Poisson count's signal-to-noise ratio sqrt(photons) is below 1, and an unmeasured pixel
    (a missing wedge, the corners beyond the detector) has nothing to be extrapolated from: what the
    iterations leave there is noise."""
    r = np.rint(_radius(amp.shape)).astype(np.int64).reshape(-1)
    k = kind.reshape(-1)
    measured = k != alg.MASKED
    nshell = int(r.max()) + 1
    count = np.bincount(r[measured], minlength=nshell)
    total = np.bincount(r[measured], weights=amp.reshape(-1)[measured].astype(np.float64) ** 2, minlength=nshell)
    mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    if not np.any(count > 0):
        return np.zeros(0, np.int64)
    first = int(np.argmax(count > 0))            # the shells behind a beamstop are not "low signal"
    low = np.flatnonzero((mean < photons) & (np.arange(nshell) > first))
    if low.size == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(~measured & (r >= int(low[0])))


def make_cut(photons: float = 1.0) -> Callable[[alg.State], None]:
    """Zero the object's transform in the masked pixels of the low-signal shells (`low_signal_shells`):
    the resolution cut-off of the unmeasured pixels where the data hold less than `photons` per pixel.
    Not an iteration (like `sup`): one transform pair, rho replaced by its cut version."""
    if photons < 0:
        raise ValueError("cut: photons must not be negative")

    def step(state: alg.State) -> None:
        idx = low_signal_shells(state.amp, state.kind, photons)   # once per run: the step closes the recipe
        if idx.size == 0:
            return
        buf = state.buf
        state.pair.forward(scale=False)
        buf.reshape(-1)[idx] = 0
        state.pair.inverse(scale=False)
        buf *= np.float32(1.0 / buf.size)
        state.rho[...] = buf

    return step


# --------------------------------------------------------------------------- registration
# algorithms.py cannot import this module (it imports algorithms): the steps register themselves;
# runs.py imports this module, so every recipe parsed there knows them.
alg.STEPS.update({
    "gps": (make_gps, ("t", "s", "sigma", "eps"), "generalized proximal smoothing, Pham et al. 2019"),
    "tv": (make_tv, ("weight", "beta", "n"), "total-variation regularised projection, Chang et al. 2016"),
    "cpower": (make_cpower, ("kappa", "beta", "shells"), "HIO with constrained power in masked pixels, Thibault et al. 2006"),
    "oss": (make_oss, ("beta", "n"), "oversampling smoothness, Rodriguez et al. 2013"),
    "cut": (make_cut, ("photons",), "zero the unmeasured pixels of the shells below the noise"),
})
alg.ITERATIVE.update({"gps", "tv", "cpower", "oss"})
