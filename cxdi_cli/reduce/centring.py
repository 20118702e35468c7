"""The beam centre and the detector mask of a summed image: one chain for `preprocess` (frames of one
pattern) and `assemble_files` (a tilt series), so that both centre and mask the same way.

- `find_centre(image, mask)`: beam centre from the centro-symmetry of the far-field intensity,
  sub-pixel.
- `centre_and_mask(total, mask, empty=...)`: module gaps, the centre (found or given), then the
  beamstop and rod and the hot and dead pixels around it, and the centre refined on that mask.
- `mask_pattern(pattern)`: the same automatic bits added to an already reduced pattern (2D or 3D).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from cxdi_cli import fft
from cxdi_cli.model import DataError, Pattern, mask_bit, measured_from_mask
from cxdi_cli.reduce import masking

# --------------------------------------------------------------------------- beam centre


def _symmetry_map(f: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative centro-symmetry misfit for every integer p = 2c (per axis), via FFT correlations.

    M(p) = sum w(x) w(p-x) (f(x) - f(p-x))^2 / sum w(x) w(p-x) (f(x)^2 + f(p-x)^2), and the overlap
    sum w(x) w(p-x). Arrays indexed by p = 0 .. 2n-2 along each axis.
    """
    ny, nx = f.shape
    shape = (fft.good_size(2 * ny, smaller=False), fft.good_size(2 * nx, smaller=False))

    def ft(a: np.ndarray) -> np.ndarray:
        pad = np.zeros(shape, np.complex64)
        pad[:ny, :nx] = a
        return fft.fftn(pad)

    # convolution (a * b)(p) = sum_x a(x) b(p - x): the mate of x about centre c is p - x, p = 2c
    wf2, wf, w0 = ft(w * f * f), ft(w * f), ft(w)
    a_plus_b = 2.0 * fft.ifftn(wf2 * w0).real
    cross = fft.ifftn(wf * wf).real
    overlap = fft.ifftn(w0 * w0).real
    num = a_plus_b - 2.0 * cross
    out = np.full(shape, np.inf)
    ok = (overlap > 0.5) & (a_plus_b > 0)
    out[ok] = num[ok] / a_plus_b[ok]
    return out[: 2 * ny - 1, : 2 * nx - 1], overlap[: 2 * ny - 1, : 2 * nx - 1]


def _local_metric(f: np.ndarray, w: np.ndarray, p: tuple[int, int], centre: tuple[float, float],
                  radius: float) -> float:
    """The relative misfit for p = 2c over the pixels within `radius` of `centre` (direct sum)."""
    ny, nx = f.shape
    r0 = max(0, int(centre[0] - radius)), min(ny, int(centre[0] + radius) + 1)
    c0 = max(0, int(centre[1] - radius)), min(nx, int(centre[1] + radius) + 1)
    ii = np.arange(*r0)
    jj = np.arange(*c0)
    mi, mj = p[0] - ii, p[1] - jj
    vi = (mi >= 0) & (mi < ny)
    vj = (mj >= 0) & (mj < nx)
    ii, mi, jj, mj = ii[vi], mi[vi], jj[vj], mj[vj]
    if ii.size == 0 or jj.size == 0:
        return np.inf
    a = f[np.ix_(ii, jj)]
    b = f[np.ix_(mi, mj)]
    ww = w[np.ix_(ii, jj)] * w[np.ix_(mi, mj)]
    disc = ((ii[:, None] - centre[0]) ** 2 + (jj[None, :] - centre[1]) ** 2) <= radius * radius
    ww = ww * disc
    den = float(np.sum(ww * (a * a + b * b)))
    if den <= 0 or ww.sum() < 16:
        return np.inf
    return float(np.sum(ww * (a - b) ** 2)) / den


def find_centre(image: np.ndarray, mask: np.ndarray | None = None, guess: Sequence[float] | None = None,
                *, search: float | None = None, radius: float | None = None) -> tuple[float, float]:
    """Beam centre (row, col), sub-pixel, from the centro-symmetry of a far-field pattern.

    The far-field intensity obeys I(c + x) = I(c - x). The misfit between sqrt(I) (noise-stabilised)
    and its point reflection about c is computed for every half-pixel c at once with FFT
    correlations, masked pixels (mask bits set, or `mask` True) excluded on both sides; then
    refined near q = 0 (within `radius` pixels, default a quarter of the image) by a quadratic fit of
    the misfit on the 5x5 half-pixel grid around its minimum. With `guess` and `search` (pixels) the
    FFT map is skipped: the local misfit is walked downhill from the guess, at most `search` away.
    """
    img = np.asarray(image, np.float64)
    if img.ndim != 2:
        raise DataError("centre finding needs a 2D image")
    if mask is None:
        good = np.ones(img.shape, bool)
    else:
        m = np.asarray(mask)
        good = measured_from_mask(m) if m.dtype != bool else ~m
    good &= np.isfinite(img)
    f = np.sqrt(np.clip(np.where(good, img, 0.0), 0, None))
    w = good.astype(np.float64)
    if not np.any(f > 0):
        raise DataError("cannot find the beam centre: no signal in the unmasked pixels")
    if radius is None:
        radius = max(12.0, min(img.shape) / 4.0)
    local = guess is not None and search is not None
    if local:
        # a refinement near a known centre: the full symmetry map is not needed, the downhill walk
        # of the local misfit starts from the guess and stays within `search` of it
        p0 = (int(np.floor(2.0 * guess[0] + 0.5)), int(np.floor(2.0 * guess[1] + 0.5)))
        steps = max(6, int(np.ceil(search)) + 2)
    else:
        metric, overlap = _symmetry_map(f, w)
        metric = np.where(overlap >= 0.2 * w.sum(), metric, np.inf)
        if not np.isfinite(metric).any():
            raise DataError("cannot find the beam centre: too few unmasked pixels overlap their mirror image")
        p0 = np.unravel_index(int(np.argmin(metric)), metric.shape)
        steps = 6
    c0 = (p0[0] / 2.0, p0[1] / 2.0)
    # local refinement on the half-pixel grid (walk downhill until the minimum is central), then a
    # quadratic fit of the 5x5 misfit grid
    p = (int(p0[0]), int(p0[1]))
    grid = np.full((5, 5), np.inf)
    for step in range(steps):
        grid = np.array([[_local_metric(f, w, (p[0] + di, p[1] + dj), c0, radius)
                          for dj in range(-2, 3)] for di in range(-2, 3)])
        if not np.isfinite(grid).any():
            if local and step == 0:
                raise DataError("cannot find the beam centre: too few unmasked pixels overlap their mirror image")
            break
        k = np.unravel_index(int(np.argmin(grid)), grid.shape)
        if k == (2, 2):
            break
        nxt = (p[0] + int(k[0]) - 2, p[1] + int(k[1]) - 2)
        if local and (nxt[0] / 2.0 - guess[0]) ** 2 + (nxt[1] / 2.0 - guess[1]) ** 2 > search * search:
            break
        p = nxt
    pf = np.array(p, float) + (_quadratic_minimum(grid) if np.isfinite(grid[2, 2]) else 0.0)
    return float(pf[0] / 2.0), float(pf[1] / 2.0)


def _quadratic_minimum(grid: np.ndarray) -> np.ndarray:
    """Offset (from the grid centre) of the minimum of a 2D quadratic fitted to a 5x5 grid; clipped to
    +-1.5 grid steps; zero when the fit is not a bowl."""
    di, dj = np.mgrid[-2:3, -2:3].astype(float)
    ok = np.isfinite(grid)
    if ok.sum() < 8:
        return np.zeros(2)
    A = np.column_stack([np.ones(ok.sum()), di[ok], dj[ok], di[ok] ** 2, di[ok] * dj[ok], dj[ok] ** 2])
    coef, *_ = np.linalg.lstsq(A, grid[ok], rcond=None)
    _, bi, bj, aii, aij, ajj = coef
    H = np.array([[2 * aii, aij], [aij, 2 * ajj]])
    if np.linalg.det(H) <= 0 or H[0, 0] <= 0:
        return np.zeros(2)
    off = -np.linalg.solve(H, np.array([bi, bj]))
    return np.clip(off, -1.5, 1.5)


# --------------------------------------------------------------------------- the chain


@dataclasses.dataclass
class Centred:
    """What `centre_and_mask` finds: the mask (a copy, with the new bits), the centre (row, col), whether
    it was found here (else given), and the beamstop report (`info["beamstop"]`) when one was looked for."""

    mask: np.ndarray
    centre: tuple[float, float]
    found: bool
    info: dict[str, Any]


def centre_and_mask(total: np.ndarray, mask: np.ndarray, *, empty: np.ndarray,
                    centre: Sequence[float] | None = None, noise_var: float = 0.0, auto_mask: bool = True,
                    detector: str | None = None, margin: int = 1) -> Centred:
    """Beam centre and detector mask of a summed image (photons), starting from the caller's `mask`
    bits (what the frames told: markers, saturation, flat-field holes, user mask).

    `empty` marks the pixels that never counted in any frame; `noise_var` is the noise variance of
    `total` beyond counting statistics (photons^2: the caller knows it; a tilt series says nothing
    about it, its frames differ by more than noise: 0). With `auto_mask`: module gaps (rows and
    columns that never counted, or the `detector` model's), and after the centre the beamstop and rod
    (`margin` pixels added) and the hot and dead pixels against both their neighbourhood and their
    centro-symmetric mate; without it only the `detector` model's gaps. A centre not given is found
    on the pixels that are neither masked, nor hot against their neighbourhood, nor empty (those
    three are kept out of the fit only, not written to the mask: sharp fringes would be mistaken
    for hot pixels before the mate is known), then refined near that first guess on the full mask.

    Why this chain for both tilt series and single patterns (they had drifted apart):
    - empty pixels are kept out of the first centring: on a photon-counting detector the beamstop
      shadow never counts, and before the beamstop is detected its zeros would pull the fit wherever
      the shadow is not centro-symmetric (its holder rod); the tilt-series chain kept out only
      isolated dark pixels (on a simulated series with a round, centred beamstop and no rod its centre
      was 0.01 px off, now 0.05 px: both far inside what the assembly needs);
    - a dead pixel is one dark where both its neighbourhood and its mate are lit. It need not be
      empty: on an integrating detector a dead pixel reads its dark level, so "never counted" misses
      it. On the sum of a tilt series the pixels along the tilt axis keep zeros of the transform
      (their q hardly moves), but those zeros are centro-symmetric like every zero of the far field:
      their mate is dark too, and the mate test leaves them alone (only a reading of at most a few
      photons amid a neighbourhood of hundreds is dead whatever its mate says, as before).
    """
    bits = np.asarray(mask, np.uint32).copy()
    total = np.asarray(total, np.float64)
    empty = np.asarray(empty, bool)
    if auto_mask:
        bits[masking.detect_gaps(total, ~measured_from_mask(bits), empty=empty, detector=detector)] |= \
            np.uint32(mask_bit("gap"))
    elif detector:
        bits[masking.model_gaps(detector, total.shape)] |= np.uint32(mask_bit("gap"))
    found = centre is None
    if found:
        bad = ~measured_from_mask(bits)
        suspect, _ = masking.detect_outliers(total, bad, noise_var)
        c = find_centre(total, bad | suspect | empty)
    else:
        c = (float(centre[0]), float(centre[1]))  # type: ignore[index]
    info: dict[str, Any] = {}
    if auto_mask:
        bits, info = masking.auto_mask(total, bits, c, noise_var=noise_var, margin=margin, gaps=False,
                                       empty=empty)
        if found:
            c = find_centre(total, bits, guess=c, search=4.0)
    return Centred(mask=bits, centre=(float(c[0]), float(c[1])), found=found, info=info)


def pattern_centre(pattern: Pattern, centre: Sequence[float] | None = None) -> tuple[float, ...]:
    """The centre to mask around: `centre` when given, else the pattern's own, else n // 2 on each axis."""
    shape = pattern.intensity.shape
    if centre is not None:
        return tuple(float(v) for v in centre)
    own = pattern.geometry.centre
    if own is not None and len(own) == len(shape):
        return tuple(float(v) for v in own)
    return tuple(float(n // 2) for n in shape)


def mask_pattern(pattern: Pattern, *, centre: Sequence[float] | None = None, detector: str | None = None,
                 margin: int = 1, zeros: str = "auto") -> Pattern:
    """A copy of a reduced pattern (2D or 3D) with the automatic bits of `masking.auto_mask` added around
    `pattern_centre(pattern, centre)`: gaps, beamstop and rod (2D), hot and dead pixels (hot voxels only
    in 3D, where a zero is a true zero of |F|^2), and, as `cxdi mask --zeros` does, the zeros photon
    noise cannot make (`zeros`: auto, masked or measured)."""
    img = np.asarray(pattern.intensity, np.float64)
    m, _ = masking.auto_mask(img, pattern.mask, pattern_centre(pattern, centre), detector=detector,
                             margin=margin, beamstop=img.ndim == 2, gaps=img.ndim == 2, zeros=zeros)
    if not measured_from_mask(m).any():
        raise DataError(f"{pattern.source or 'pattern'}: every pixel would be masked")
    return dataclasses.replace(pattern, mask=m)
