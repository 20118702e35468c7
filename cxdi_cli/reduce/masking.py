"""The pixel mask: automatic detection of beamstop and holder rod, module gaps, hot and dead pixels;
user masks and shapes; growing; removing bits; how much of the central speckle is missing.

Every function works on arrays (2D patterns, some on 3D volumes) and returns boolean maps or CXI bit
masks (model.MASK_BITS); nothing here reads files or prints. One module on purpose (it is long): the
defect classes share the local statistics (neighbourhood medians, centro-symmetric mates, radial profiles).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cxdi_cli.model import MASK_BITS, DataError, UsageError, mask_bit, measured_from_mask

#: Known detector layouts: (rows, cols) of the full image -> module size and gap widths,
#: (module_rows, module_cols, gap_rows, gap_cols). Gaps lie between modules.
DETECTOR_MODELS: dict[str, dict[str, Any]] = {
    "maxipix": {"shape": (516, 516), "module": (256, 256), "gap": (4, 4)},
    "maxipix5x1": {"shape": (256, 1296), "module": (256, 256), "gap": (0, 4)},
    "eiger500k": {"shape": (514, 1030), "module": (514, 1030), "gap": (0, 0)},
    "eiger1m": {"shape": (1065, 1030), "module": (514, 1030), "gap": (37, 10)},
    "eiger4m": {"shape": (2167, 2070), "module": (514, 1030), "gap": (37, 10)},
    "eiger9m": {"shape": (3269, 3110), "module": (514, 1030), "gap": (37, 10)},
    "eiger16m": {"shape": (4371, 4150), "module": (514, 1030), "gap": (37, 10)},
    "pilatus300k": {"shape": (619, 487), "module": (195, 487), "gap": (17, 7)},
    "pilatus1m": {"shape": (1043, 981), "module": (195, 487), "gap": (17, 7)},
    "pilatus2m": {"shape": (1679, 1475), "module": (195, 487), "gap": (17, 7)},
    "pilatus6m": {"shape": (2527, 2463), "module": (195, 487), "gap": (17, 7)},
}


def bit(name: str) -> np.uint32:
    """A mask bit as a numpy uint32."""
    return np.uint32(mask_bit(name))


# --------------------------------------------------------------------------- helpers


def local_median(image: np.ndarray, size: int = 5) -> np.ndarray:
    """Median of each pixel's size x size (size^3 in 3D) neighbourhood, the pixel itself excluded."""
    from scipy.ndimage import median_filter  # noqa: PLC0415

    img = np.asarray(image, np.float64)
    fp = np.ones((size,) * img.ndim, bool)
    fp[(size // 2,) * img.ndim] = False
    return median_filter(img, footprint=fp, mode="mirror")


def fill_bad(image: np.ndarray, bad: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """`image` with its bad pixels replaced by a Gaussian-weighted mean of the good ones around them
    (normalised convolution), so neighbourhood statistics are not biased by gaps or shadows."""
    from scipy.ndimage import gaussian_filter  # noqa: PLC0415

    img = np.asarray(image, np.float64)
    if not bad.any():
        return img
    good = (~bad).astype(np.float64)
    num = gaussian_filter(np.where(bad, 0.0, img), sigma, mode="mirror")
    den = gaussian_filter(good, sigma, mode="mirror")
    est = np.divide(num, den, out=np.zeros_like(num), where=den > 1e-3)
    return np.where(bad, est, img)


def radial_index(shape: tuple[int, ...], centre: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distance of every pixel from `centre` (float) and its integer radius bin."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) - c for n, c in zip(shape, centre)], indexing="ij")
    r = np.sqrt(sum(g * g for g in grids))
    return r, np.floor(r + 0.5).astype(np.int64)


def radial_median(image: np.ndarray, good: np.ndarray, rbin: np.ndarray, min_pixels: int = 6) -> np.ndarray:
    """Median of the good pixels in each integer radius bin (NaN where fewer than `min_pixels`)."""
    nb = int(rbin.max()) + 1
    rb = rbin[good].ravel()
    v = np.asarray(image, np.float64)[good].ravel()
    out = np.full(nb, np.nan)
    if v.size == 0:
        return out
    order = np.lexsort((v, rb))
    rb, v = rb[order], v[order]
    counts = np.bincount(rb, minlength=nb)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ok = counts >= min_pixels
    out[ok] = v[starts[ok] + counts[ok] // 2]
    return out


# --------------------------------------------------------------------------- automatic detection


def detect_gaps(image: np.ndarray, bad: np.ndarray | None = None, empty: np.ndarray | None = None,
                detector: str | None = None) -> np.ndarray:
    """Module gaps: whole rows / columns that hold no signal while their neighbours do, or the gaps of
    a named detector model (`DETECTOR_MODELS`).

    `empty` marks pixels that never saw a count (default: image <= 0); `bad` pixels (hot, ...) are
    ignored when deciding whether a row is empty. A run of empty rows is a gap only when it does not
    touch the image edge and the rows on both sides are lit (>= 25 % non-empty pixels).
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise DataError("gap detection needs a 2D image")
    gaps = np.zeros(img.shape, bool)
    if detector is not None:
        gaps |= model_gaps(detector, img.shape)
    emp = (img <= 0) if empty is None else np.asarray(empty, bool)
    consider = np.ones(img.shape, bool) if bad is None else ~np.asarray(bad, bool)
    for axis in (0, 1):
        e = np.moveaxis(emp, axis, 0)
        c = np.moveaxis(consider, axis, 0)
        n_c = c.sum(axis=1)
        frac_empty = np.where(n_c > 0, (e & c).sum(axis=1) / np.maximum(n_c, 1), 1.0)
        lit_frac = 1.0 - frac_empty
        is_empty = frac_empty >= 0.98
        k = 0
        n = is_empty.size
        while k < n:
            if not is_empty[k]:
                k += 1
                continue
            j = k
            while j < n and is_empty[j]:
                j += 1
            if k > 0 and j < n and lit_frac[k - 1] >= 0.25 and lit_frac[j] >= 0.25 and (j - k) <= max(3, n // 8):
                sl = [slice(None), slice(None)]
                sl[axis] = slice(k, j)
                gaps[tuple(sl)] = True
            k = j
    return gaps


def model_gaps(detector: str, shape: tuple[int, int]) -> np.ndarray:
    """Gap pixels of a named detector model; the image must have the model's shape."""
    key = detector.lower().replace(" ", "").replace("-", "").replace("_", "")
    if key not in DETECTOR_MODELS:
        raise UsageError(f"unknown detector model {detector!r}; known: {', '.join(DETECTOR_MODELS)}")
    m = DETECTOR_MODELS[key]
    if tuple(shape) != tuple(m["shape"]):
        raise DataError(f"detector {detector} images are {m['shape'][0]}x{m['shape'][1]}, "
                        f"this one is {shape[0]}x{shape[1]}")
    g = np.zeros(shape, bool)
    for axis in (0, 1):
        mod, gap = m["module"][axis], m["gap"][axis]
        if gap == 0:
            continue
        pos = mod
        while pos < shape[axis]:
            sl = [slice(None), slice(None)]
            sl[axis] = slice(pos, pos + gap)
            g[tuple(sl)] = True
            pos += gap + mod
    return g


def mate_values(image: np.ndarray, good: np.ndarray, centre: Sequence[float]) -> np.ndarray:
    """The value of each pixel's centro-symmetric mate (the pixel nearest to 2c - x), NaN where the
    mate lies outside the array or is not good. Far-field intensities obey I(c + x) = I(c - x)."""
    img = np.asarray(image, np.float64)
    out = np.full(img.shape, np.nan)
    idx = np.indices(img.shape)
    mate = [np.floor(2.0 * c - i + 0.5).astype(np.int64) for c, i in zip(centre, idx)]
    inside = np.ones(img.shape, bool)
    for m, n in zip(mate, img.shape):
        inside &= (m >= 0) & (m < n)
    sel = tuple(m[inside] for m in mate)
    vals = np.where(good[sel], img[sel], np.nan)
    out[inside] = vals
    return out


def detect_outliers(image: np.ndarray, bad: np.ndarray | None = None, noise_var: np.ndarray | float = 0.0,
                    *, centre: Sequence[float] | None = None, hot_ratio: float = 6.0, hot_sigma: float = 12.0,
                    dead_ratio: float = 0.05, dead_sigma: float = 10.0, lit_sigma: float = 6.0, size: int = 5
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Isolated hot and dead pixels against the median of their neighbourhood and, when `centre` is
    given, against their centro-symmetric mate (2D or 3D).

    Counts are photons; the noise of a pixel whose reference holds m photons is taken as
    sqrt(m + noise_var + 1) (Poisson plus any read noise, variance `noise_var` in photons^2).
    Hot: value > hot_ratio * m + hot_sigma * noise. Dead: value < dead_ratio * m,
    m - value > dead_sigma * noise and the value consistent with zero (< 3 sqrt(noise_var + 1)): dark
    where the reference is clearly lit. A pixel must fail against
    both references (neighbourhood median and mate); where its mate is unknown (masked, off the
    detector) the neighbourhood test alone decides, with 3x stricter ratios (as it also does for a
    zero reading amid a very bright neighbourhood, 2 dead_sigma). Sharp fringes and speckle minima
    pass, since the mate shows the same feature. In 2D a dead pixel's second-dimmest neighbour must
    also lie lit_sigma noise above its reading (a speckle minimum has dim neighbours).
    """
    img = np.asarray(image, np.float64)
    bad_ = np.zeros(img.shape, bool) if bad is None else np.asarray(bad, bool)
    filled = fill_bad(img, bad_)
    med = np.maximum(local_median(filled, size), 0.0)

    def tests(ref: np.ndarray, hr: float, dr: float) -> tuple[np.ndarray, np.ndarray]:
        noise = np.sqrt(ref + noise_var + 1.0)
        hot = img > hr * ref + hot_sigma * noise
        dead = (img < dr * ref) & (ref - img > dead_sigma * noise) & (img <= zero_level)
        return hot, dead

    zero_level = 3.0 * np.sqrt(np.asarray(noise_var, np.float64) + 1.0)  # a reading consistent with 0

    if centre is None:
        hot, dead = tests(med, hot_ratio, dead_ratio)
    else:
        mate = mate_values(img, ~bad_, centre)
        known = np.isfinite(mate)
        mate0 = np.where(known, np.maximum(mate, 0.0), 0.0)
        h1, d1 = tests(med, hot_ratio, dead_ratio)
        h2, d2 = tests(mate0, hot_ratio, dead_ratio)
        h3, d3 = tests(med, 3 * hot_ratio, dead_ratio / 3)
        _, d4 = tests(med, hot_ratio, dead_ratio / 3)
        hot = np.where(known, h1 & h2, h3)
        # a zero reading where the neighbourhood is very bright is dead whatever the mate says (the
        # mate is the nearest pixel to 2c - x, so at sharp fringes it can be dim itself)
        strong = d4 & (med - img > 2.0 * dead_sigma * np.sqrt(med + noise_var + 1.0))
        dead = np.where(known, (d1 & d2) | strong, d3)
    if img.ndim == 2:
        # dead only where even the dimmer neighbours are clearly lit: the second-dimmest of the 8 good
        # neighbours lies lit_sigma noise above the reading. A speckle minimum (a few photons where the
        # 5x5 median holds a hundred) has dim neighbours on one side; a dead pixel amid light has not.
        # On the simulated detectors (256 px, 10 cases) the false dead flags sat at 3.6-6.5 noise, the
        # planted dead pixels at 12-375 but one (5.7, beside a speckle minimum): 6 separates them best.
        lo2 = second_lowest_neighbour(img, bad_)
        with np.errstate(invalid="ignore"):
            dead &= lo2 - img > lit_sigma * np.sqrt(lo2 + noise_var + 1.0)
    return hot & ~bad_, dead & ~bad_


def second_lowest_neighbour(image: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """The second-smallest value among each pixel's 8 neighbours that are not `bad` (inf where fewer
    than two are; 2D). Two running minima over the 8 shifts: memory of three images."""
    img = np.asarray(image, np.float64)
    vals = np.where(np.asarray(bad, bool), np.inf, img)
    pad = np.pad(vals, 1, constant_values=np.inf)
    m1 = np.full(img.shape, np.inf)
    m2 = np.full(img.shape, np.inf)
    ny, nx = img.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            v = pad[1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx]
            np.minimum(m2, np.maximum(m1, v), out=m2)
            np.minimum(m1, v, out=m1)
    return m2


def detect_beamstop(image: np.ndarray, centre: Sequence[float], bad: np.ndarray | None = None,
                    *, noise: float = 1.0, margin: int = 1, low_fraction: float = 0.05
                    ) -> tuple[np.ndarray, dict[str, Any]]:
    """The beamstop and its holder rod: the connected shadow around q = 0, with a `margin` in pixels.

    A pixel is *low* when it holds less than `low_fraction` of the intensity expected at its radius
    (the azimuthal median, or inside the shadow the brightest median further out) and that
    expectation is well above the noise. The beamstop is the low region around `centre`; the rod is
    the band of low pixels leaving it in one direction, fitted by a straight line and extended to the
    edge of the image (at high q, where the pattern is too faint to show a shadow, the line decides).
    Returns (mask, info) with info = {radius_px, rod_angle_deg, rod_width_px} (None when absent).
    """
    from scipy import ndimage  # noqa: PLC0415

    img = np.asarray(image, np.float64)
    bad_ = np.zeros(img.shape, bool) if bad is None else np.asarray(bad, bool)
    good = ~bad_ & np.isfinite(img)
    r, rbin = radial_index(img.shape, centre)
    med = radial_median(img, good, rbin)
    # envelope: brightest median at this radius or beyond (the shadow's own median is ~0)
    env = np.where(np.isnan(med), -np.inf, med)
    env = np.maximum.accumulate(env[::-1])[::-1]
    env[~np.isfinite(env)] = 0.0
    ref = env[rbin]
    judged = good & (low_fraction * ref >= 3.0 * noise + 1.0)
    low = judged & (img < low_fraction * ref)
    info: dict[str, Any] = {"radius_px": None, "rod_angle_deg": None, "rod_width_px": None}
    out = np.zeros(img.shape, bool)
    # disc: annuli (from the centre outward) whose judged pixels are mostly low
    nb = int(rbin.max()) + 1
    n_j = np.bincount(rbin[judged], minlength=nb)
    n_l = np.bincount(rbin[low], minlength=nb)
    frac = np.where(n_j > 0, n_l / np.maximum(n_j, 1), np.nan)
    n_g = np.bincount(rbin[good], minlength=nb)
    radius = -1
    shadow_seen = False
    for k in range(nb):
        if np.isnan(frac[k]):
            if k <= 1 or n_g[k] == 0:  # the first rings, or rings masked already: part of the shadow
                radius = k
                shadow_seen |= n_g[k] == 0 and k > 0
                continue
            break
        if frac[k] < 0.5:
            break
        radius = k
        shadow_seen = True
    if radius < 0 or not shadow_seen:
        return out, info
    # the disc: low pixels connected to the centre within a pixel of the annulus estimate, opened so
    # that stray dark speckle pixels at its edge do not stick to it
    near = r <= radius + 1.5
    lab, _ = ndimage.label((low | bad_) & near, structure=np.ones((3, 3)))
    ci, cj = int(np.clip(round(centre[0]), 0, img.shape[0] - 1)), int(np.clip(round(centre[1]), 0, img.shape[1] - 1))
    region = r <= radius + 0.5
    if lab[ci, cj]:
        comp = (lab == lab[ci, cj]) & ~bad_
        region |= ndimage.binary_opening(comp, structure=np.ones((3, 3)))
    region = ndimage.binary_fill_holes(region)
    info["radius_px"] = float(radius)
    out |= region
    # rod: low pixels beyond the disc, in the angular sector where most judged pixels are low
    outer = (r > radius + 1.5)
    ang = np.degrees(np.arctan2(np.arange(img.shape[0])[:, None] - centre[0],
                                np.arange(img.shape[1])[None, :] - centre[1]))
    abin = (np.floor((ang + 180.0) / 3.0).astype(int)) % 120
    zone = outer & judged & (r <= radius + 40)
    n_a = np.bincount(abin[zone], minlength=120)
    n_al = np.bincount(abin[zone & low], minlength=120)
    fa = np.where(n_a >= 3, n_al / np.maximum(n_a, 1), 0.0)
    sector_bins = np.flatnonzero(fa >= 0.6)
    if sector_bins.size:
        # the rod sector is the run of bins around the most-low bin (circularly)
        best = int(np.argmax(fa))
        sel = {best}
        for step in (1, -1):
            k = best
            while True:
                k = (k + step) % 120
                if fa[k] >= 0.3 and k not in sel and len(sel) < 60:
                    sel.add(k)
                else:
                    break
        insector = np.isin(abin, sorted(sel))
        rodpix = low & outer & insector
        # bad pixels (gaps) in the sector bridge the rod across a module gap
        # (near the disc a narrow rod spans a wide angle: any low pixel there may link it)
        link = insector | (r <= radius + 4.5)
        lab2, n2 = ndimage.label(((low | bad_) & link) | region, structure=np.ones((3, 3)))
        keep = np.unique(lab2[region & (lab2 > 0)])
        rodpix &= np.isin(lab2, keep[keep > 0]) if keep.size else rodpix
        if rodpix.sum() >= 6:
            yy, xx = np.nonzero(rodpix)
            u = np.array([yy.mean() - centre[0], xx.mean() - centre[1]])
            u /= np.hypot(*u)
            # refine the axis direction by a least-squares line through the rod pixels
            s = (yy - centre[0]) * u[0] + (xx - centre[1]) * u[1]
            d = (yy - centre[0]) * u[1] - (xx - centre[1]) * u[0]
            slope, icpt = 0.0, float(np.median(d))
            keep_fit = np.ones(s.size, bool)
            for _ in range(3):  # robust line fit: drop stray low pixels beside the rod, refit
                if np.ptp(s[keep_fit]) > 3 and keep_fit.sum() >= 4:
                    slope, icpt = np.polyfit(s[keep_fit], d[keep_fit], 1)
                res = d - (icpt + slope * s)
                keep_fit = np.abs(res) <= max(1.5, 2.0 * float(np.median(np.abs(res))))
            ii, jj = np.indices(img.shape, dtype=np.float64)
            S = (ii - centre[0]) * u[0] + (jj - centre[1]) * u[1]
            D = (ii - centre[0]) * u[1] - (jj - centre[1]) * u[0] - (icpt + slope * S)
            # width: across the fitted axis, the contiguous run of 1-px strips that are mostly low
            strip = judged & outer & (S >= s.min()) & (S <= s.max()) & (np.abs(D) <= 8.5)
            bins = np.floor(D[strip] + 0.5).astype(int) + 8
            n_s = np.bincount(bins, minlength=17)
            n_sl = np.bincount(bins[low[strip]], minlength=17)
            fr = np.where(n_s > 0, n_sl / np.maximum(n_s, 1), 0.0)
            k0 = 8 if fr[8] >= 0.5 else int(np.argmax(fr))
            k_lo = k_hi = k0
            while k_lo > 0 and fr[k_lo - 1] >= 0.5:
                k_lo -= 1
            while k_hi < 16 and fr[k_hi + 1] >= 0.5:
                k_hi += 1
            lo_d, hi_d = k_lo - 8 - 0.5, k_hi - 8 + 0.5
            band = (S >= min(0.0, float(s.min()))) & (D >= lo_d) & (D <= hi_d)
            out |= band
            info["rod_angle_deg"] = float(np.degrees(np.arctan2(u[0] + slope * u[1], u[1] - slope * u[0])))
            info["rod_width_px"] = float(hi_d - lo_d)
    if margin > 0:
        out = ndimage.binary_dilation(out, iterations=int(margin))
    return out, info


#: How `detect_zeros` treats exact zeros: every one masked, none (they are measurements), or only
#: those photon noise cannot make (`auto`).
ZERO_MODES = ("auto", "masked", "measured")

#: Photons a zero's surroundings must hold for the zero to be impossible as photon noise.
ZERO_LEVEL = 20.0

#: Zero blocks (groups of two or more impossible zeros) that show an earlier program wrote zeros, so
#: that lone impossible zeros are its work too (and not dead pixels).
SINGLES_AFTER = 10


def _group_quantile(values: np.ndarray, groups: np.ndarray, n_groups: int, q: float) -> np.ndarray:
    """The q-quantile (lower order statistic) of `values` in each group 1..n_groups (NaN when empty)."""
    out = np.full(n_groups + 1, np.nan)
    if values.size == 0:
        return out[1:]
    order = np.lexsort((values, groups))
    g, v = groups[order], values[order]
    counts = np.bincount(g, minlength=n_groups + 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ok = counts > 0
    out[ok] = v[starts[ok] + np.floor(q * (counts[ok] - 1)).astype(np.int64)]
    return out[1:]


def detect_zeros(image: np.ndarray, bad: np.ndarray | None = None, *, mode: str = "auto",
                 level: float = ZERO_LEVEL, singles: bool | None = None) -> np.ndarray:
    """Exact zeros that are not measurements: pixels an earlier program wrote as 0 (its mask, its
    zeroed blocks) in a 2D pattern. `bad` pixels are never looked at.

    mode 'masked': every exact zero; 'measured': none; 'auto': a connected group of zeros (8-neighbour)
    whose surroundings (the good, non-zero pixels touching it) hold at least `level` photons -- for a
    group of two or more pixels in its lower quartile, for a single pixel in every neighbour at 1.5
    `level` (a lone zero beside a speckle minimum can be photon noise), and single pixels only when
    `singles` -- by default (None) when at least SINGLES_AFTER groups of two or more were found, the
    footprint of an earlier program (in raw counts a lone zero amid bright pixels is the dead-pixel
    detector's business). With 20 photons expected, a Poisson zero has probability e^-20."""
    if mode not in ZERO_MODES:
        raise UsageError(f"--zeros {mode!r}: choose one of {', '.join(ZERO_MODES)}")
    img = np.asarray(image, np.float64)
    bad_ = np.zeros(img.shape, bool) if bad is None else np.asarray(bad, bool)
    zero = (img == 0) & ~bad_
    if mode == "measured" or not zero.any():
        return np.zeros(img.shape, bool)
    if mode == "masked":
        return zero
    from scipy import ndimage  # noqa: PLC0415

    valid = ~bad_ & ~zero & np.isfinite(img)
    lab, n = ndimage.label(zero, structure=np.ones((3,) * img.ndim))
    ring = np.where(valid, ndimage.grey_dilation(lab, size=(3,) * img.ndim), 0)
    sel = ring > 0
    q25 = _group_quantile(img[sel], ring[sel], n, 0.25)
    low = _group_quantile(img[sel], ring[sel], n, 0.0)
    size = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    with np.errstate(invalid="ignore"):
        multi = (size >= 2) & (q25 * np.minimum(size, 4) >= 3.0 * level)
        if singles is None:
            singles = int(multi.sum()) >= SINGLES_AFTER
        ok = multi | ((size == 1) & singles & (low >= 1.5 * level))
    ok &= np.isfinite(q25)
    keep = np.concatenate([[False], ok])
    return keep[lab]


def data_character(image: np.ndarray, good: np.ndarray, centre: Sequence[float] | None) -> dict[str, Any]:
    """What an earlier program may have done to a pattern: the share of non-integer values among the
    good non-zero pixels (background subtraction, calibration, scaling: Poisson metrics are then
    approximate) and whether the pattern was made centro-symmetric (I(c + x) = I(c - x) exactly, to
    float32 rounding, for >= 90 % of the good pairs above 5 photons; raw counts agree by chance
    far less often)."""
    img = np.asarray(image, np.float64)
    g = np.asarray(good, bool) & np.isfinite(img)
    vals = img[g & (img != 0)]
    frac = float(np.mean(vals != np.round(vals))) if vals.size else 0.0
    out: dict[str, Any] = {"non_integer_fraction": frac, "non_integer": frac > 0.05,
                           "symmetric_pairs_fraction": None, "centro_symmetric": False}
    if centre is not None and img.ndim == 2:
        mate = mate_values(img, g, centre)
        pair = g & np.isfinite(mate) & (img >= 5.0) & (mate >= 5.0)
        if pair.sum() >= 100:
            same = np.abs(img[pair] - mate[pair]) <= 1e-6 * np.maximum(img[pair], mate[pair])
            out["symmetric_pairs_fraction"] = float(same.mean())
            out["centro_symmetric"] = bool(same.mean() >= 0.9)
    return out


def marker_bits(saturated: np.ndarray, marker: np.ndarray, raw_max: np.ndarray, level: float | None) -> np.ndarray:
    """CXI bits of the pixels a detector marks by value: `saturated` (raw maximum at or above the
    saturation `level` in some frame) and `marker` (negative integer markers, Pilatus/Eiger -1 gap and
    -2 bad). A marked pixel that belongs to a gap line (a row or column whose marked pixels span
    at least half of the detector) is a gap; a negative marker elsewhere is invalid; a pixel reading
    exactly the largest value of a 16- or 32-bit counter (Eiger's gap and bad-pixel marker 2^N - 1) is
    a gap on a gap line and invalid elsewhere when `level` (the saturation the file states) lies below
    it, else saturated (an integrating detector at its ceiling)."""
    sat = np.asarray(saturated, bool)
    neg = np.asarray(marker, bool)
    rmax = np.asarray(raw_max, np.float64)
    at_max = sat & np.isin(rmax, (2.0 ** 16 - 1, 2.0 ** 32 - 1))
    marked = neg | at_max
    line = np.zeros(sat.shape, bool)
    if sat.ndim == 2 and marked.any():
        rows = marked.sum(axis=1) >= 0.5 * sat.shape[1]
        cols = marked.sum(axis=0) >= 0.5 * sat.shape[0]
        line = marked & (rows[:, None] | cols[None, :])
    stated_below = level is not None and np.any(at_max) and float(level) < float(rmax[at_max].min())
    m = np.zeros(sat.shape, np.uint32)
    m[line] |= bit("gap")
    m[neg & ~line] |= bit("invalid")
    if stated_below:
        m[at_max & ~line] |= bit("invalid")
        m[sat & ~at_max] |= bit("saturated")
    else:
        m[sat & ~line] |= bit("saturated")
    return m


def auto_mask(image: np.ndarray, mask: np.ndarray, centre: Sequence[float] | None = None, *,
              noise_var: float = 0.0, detector: str | None = None, margin: int = 1,
              beamstop: bool = True, gaps: bool = True, outliers: bool = True,
              empty: np.ndarray | None = None, zeros: str = "measured",
              zero_singles: bool | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Add automatically detected bits to `mask` (a copy is returned): gaps, hot/dead outliers, the
    beamstop and rod around `centre` (2D; for 3D volumes only hot outliers among measured voxels,
    never touching the unmeasured bits: a dead detector pixel is the assembly's business, and a
    zero voxel in a volume is a true zero of |F|^2). `zeros` (2D): exact zeros an earlier program
    wrote get the 'zero' bit (`detect_zeros` with `zero_singles`), replacing a 'dead' bit an earlier
    detection gave them. Returns (mask, info)."""
    img = np.asarray(image, np.float64)
    m = np.asarray(mask, np.uint32).copy()
    info: dict[str, Any] = {}
    bad = ~measured_from_mask(m)
    if img.ndim == 2 and gaps:
        g = detect_gaps(img, bad, empty=empty, detector=detector)
        m[g] |= bit("gap")
        bad |= g
    if img.ndim == 2 and beamstop and centre is not None:
        bs, binfo = detect_beamstop(img, centre, bad, noise=float(np.sqrt(noise_var + 1.0)), margin=margin)
        m[bs] |= bit("beamstop")
        bad |= bs
        info["beamstop"] = binfo
    if img.ndim == 2 and zeros != "measured":
        z = detect_zeros(img, ~measured_from_mask(m & ~bit("dead")), mode=zeros, singles=zero_singles)
        m[z] = (m[z] | bit("zero")) & ~bit("dead")
        bad |= z
        info["zeros"] = int(z.sum())
    if outliers:
        hot, dead = detect_outliers(img, bad, noise_var, centre=centre)
        m[hot] |= bit("hot")
        if img.ndim == 2:  # an assembled volume has no dead voxels, only true zeros of |F|^2
            m[dead] |= bit("dead")
    return m, info


# --------------------------------------------------------------------------- user masks and shapes


def parse_numbers(text: str, n: int | None, what: str) -> list[float]:
    """'a,b,c' as floats (exactly n of them when n is given); UsageError otherwise."""
    try:
        vals = [float(x) for x in text.replace(";", ",").split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{what} {text!r}: expected comma-separated numbers") from None
    if n is not None and len(vals) != n:
        raise UsageError(f"{what} {text!r}: expected {n} numbers")
    return vals


def user_mask(values: np.ndarray, shape: tuple[int, ...], source: str, target: str = "the pattern") -> np.ndarray:
    """A user mask array (as read from `source`) -> bool map of bad pixels: non-zero, NaN or infinite =
    bad. Leading length-1 axes are dropped; any other shape than `shape` is refused (DataError naming
    `source` and `target`, what the mask is for)."""
    m = np.asarray(values)
    while m.ndim > len(shape) and m.shape[0] == 1:
        m = m[0]
    if m.shape != tuple(shape):
        raise DataError(f"{source}: mask shape {m.shape} does not match {target} {tuple(shape)}")
    if m.dtype.kind in "fc":
        return ~np.isfinite(m) | (m != 0)
    return m != 0


def shapes_mask(shape: tuple[int, int], circles: Sequence[str] = (), rects: Sequence[str] = (),
                polygons: Sequence[str] = ()) -> np.ndarray:
    """Pixels inside user shapes: circles 'ROW,COL,R', rectangles 'R0,C0,R1,C1' (inclusive corners),
    polygons 'R0,C0,R1,C1,R2,C2,...' (pixel centres inside or on the edge)."""
    if len(shape) != 2:
        raise UsageError("--circle, --rect and --polygon draw on 2D patterns only")
    ii, jj = np.indices(shape, dtype=np.float64)
    out = np.zeros(shape, bool)
    for c in circles:
        r0, c0, rad = parse_numbers(c, 3, "--circle")
        out |= (ii - r0) ** 2 + (jj - c0) ** 2 <= rad * rad
    for rc in rects:
        a, b, c_, d = parse_numbers(rc, 4, "--rect")
        r0, r1 = sorted((a, c_))
        c0, c1 = sorted((b, d))
        out |= (ii >= r0) & (ii <= r1) & (jj >= c0) & (jj <= c1)
    for p in polygons:
        v = parse_numbers(p, None, "--polygon")
        if len(v) < 6 or len(v) % 2:
            raise UsageError(f"--polygon {p!r}: expected at least 3 ROW,COL vertices")
        from matplotlib.path import Path  # noqa: PLC0415

        verts = np.asarray(v).reshape(-1, 2)[:, ::-1]  # (x=col, y=row)
        pts = np.column_stack([jj.ravel(), ii.ravel()])
        out |= Path(verts).contains_points(pts, radius=1e-9).reshape(shape)
        out |= Path(verts).contains_points(pts, radius=-1e-9).reshape(shape)
    return out


def grow(mask: np.ndarray, k: int, keep: int = MASK_BITS["unmeasured"] | MASK_BITS["friedel"]) -> np.ndarray:
    """Dilate every bit by k pixels (each bit spreads to the neighbours of its pixels); bits in `keep`
    (unmeasured, friedel) are not grown."""
    from scipy.ndimage import binary_dilation  # noqa: PLC0415

    m = np.asarray(mask, np.uint32).copy()
    if k <= 0:
        return m
    struct = np.ones((3,) * m.ndim, bool)
    for name, b in MASK_BITS.items():
        if b & keep:
            continue
        sel = (m & np.uint32(b)) != 0
        if sel.any():
            m[binary_dilation(sel, structure=struct, iterations=int(k))] |= np.uint32(b)
    return m


def remove_bits(mask: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Clear the named bits ('all' clears every bit except unmeasured)."""
    m = np.asarray(mask, np.uint32).copy()
    clear = 0
    for n in names:
        for part in n.split(","):
            part = part.strip()
            if not part:
                continue
            if part == "all":
                clear |= sum(v for k, v in MASK_BITS.items() if k != "unmeasured")
            else:
                clear |= mask_bit(part)
    return m & ~np.uint32(clear)


# --------------------------------------------------------------------------- reports


def masked_radius(mask: np.ndarray, centre: Sequence[float]) -> float:
    """Radius (pixels) of the masked disc around `centre`: the first radius whose ring is mostly good."""
    bad = ~measured_from_mask(mask)
    r, rbin = radial_index(mask.shape, centre)
    nb = int(rbin.max()) + 1
    tot = np.bincount(rbin.ravel(), minlength=nb)
    nbad = np.bincount(rbin[bad], minlength=nb)
    for k in range(nb):
        if tot[k] and nbad[k] / tot[k] < 0.5:
            return float(max(k - 0.5, 0.0))
    return float(nb)


def central_speckle(mask: np.ndarray, centre: Sequence[float], oversampling: float | None) -> dict[str, Any]:
    """How much of the central speckle the mask removes. The central speckle has a radius of about
    sigma pixels (sigma = linear oversampling, the speckle size in pixels; Airy: 1.22 sigma)."""
    rb = masked_radius(mask, centre)
    out: dict[str, Any] = {"beamstop_radius_px": rb, "speckle_px": oversampling,
                           "central_speckle_missing_fraction": None, "beamstop_radius_speckles": None,
                           "warning": None}
    if oversampling:
        r, _ = radial_index(mask.shape, centre)
        disc = r <= oversampling
        if disc.any():
            out["central_speckle_missing_fraction"] = float((~measured_from_mask(mask))[disc].mean())
        out["beamstop_radius_speckles"] = rb / oversampling
        if rb > oversampling:
            out["warning"] = (f"the masked centre (radius {rb:.1f} px) is larger than the central speckle "
                              f"(~{oversampling:.1f} px): low-q information is lost; phase retrieval may fail "
                              "or leave a low-frequency artefact")
    return out
