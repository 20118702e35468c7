"""What makes a 2D pattern hard to phase, applied to a simulated experiment: partial coherence, a
processed (background-subtracted, zero-filled, centro-symmetrised) pattern, and the named family of
hard cases the robustness harness runs.

The hard conditions are properties of the experiment (where the detector's gap cross lies, the size of
the beamstop, the oversampling, the beam's coherence, what an earlier program did to the data), not of
the specimen; so they are options of the existing 2D kinds (`tungsten`, `cells`) that combine freely,
and `HARD_CASES` names the combinations worth measuring. Everything here works on arrays; no I/O.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from cxdi_cli.model import UsageError

#: FWHM of a Gaussian in units of its standard deviation.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

#: Values of the `processed` option: off (raw frames only), a background-subtracted pattern with the
#: earlier program's zeros, and the same made centro-symmetric.
PROCESSED_MODES = ("off", "subtracted", "symmetrised")

#: Photons a neighbourhood must expect for a planted zero to be one that photon noise cannot make.
ZERO_LEVEL = 20.0

#: The family of hard 2D (and one 3D) cases: name -> (kind, `cxdi simulate` options, what it tests).
#: Sizes are left to the caller (--size); options are those of `cxdi simulate`.
HARD_CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "gap": ("tungsten", {"gap_through_beam": True},
            "module-gap cross through the direct beam"),
    "beamstop": ("tungsten", {"beamstop": 2.0},
                 "beamstop 2 speckles across on a holder rod"),
    "sigma3": ("tungsten", {"oversampling": 3.0},
               "oversampling 3"),
    "hard": ("tungsten", {"gap_through_beam": True, "beamstop": 1.5, "oversampling": 3.0},
             "gap cross through the beam, beamstop 1.5 speckles, oversampling 3 (coherent)"),
    "psf": ("tungsten", {"gap_through_beam": True, "beamstop": 1.5, "oversampling": 3.0, "psf": 2.0},
            "the hard case, partially coherent: Gaussian PSF of FWHM 2 px"),
    "phase": ("cells", {"phase_max": 1.8, "photons": 1e9},
              "strong phase object (cells, phase range 1.8 rad)"),
    "processed": ("tungsten", {"processed": "symmetrised", "oversampling": 3.0},
                  "background subtracted, 4 % zeros in bright regions, centro-symmetrised"),
    "photons": ("cells", {"photons": 2e6},
                "few photons (cells, 2e6 photons on the detector)"),
    "tilt3d": ("particle3d", {},
               "3D tilt series, -70..70 deg: a 40 deg missing wedge"),
}


def check_psf(fwhm: float) -> float:
    """The PSF FWHM in pixels as a float; UsageError unless 0 (coherent) or 0.1 to 20 pixels."""
    f = float(fwhm)
    if not (np.isfinite(f) and (f == 0.0 or 0.1 <= f <= 20.0)):
        raise UsageError(f"--psf {fwhm}: must be 0 (coherent beam) or a FWHM of 0.1 to 20 pixels")
    return f


def check_processed(mode: str) -> str:
    """The processed mode, checked against PROCESSED_MODES."""
    if mode not in PROCESSED_MODES:
        raise UsageError(f"--processed {mode!r}: choose one of {', '.join(PROCESSED_MODES)}")
    return mode


def partial_coherence(intensity: np.ndarray, fwhm_px: float) -> np.ndarray:
    """The coherent intensity |F|^2 convolved in the detector plane with a normalised Gaussian PSF of
    FWHM `fwhm_px` (Clark et al. 2012): what a partially coherent beam records. Photons are conserved
    (the detector's edges reflect, standing in for the light that falls just beyond them)."""
    if fwhm_px <= 0:
        return np.asarray(intensity, np.float64)
    from scipy.ndimage import gaussian_filter  # noqa: PLC0415

    return gaussian_filter(np.asarray(intensity, np.float64), fwhm_px / FWHM_PER_SIGMA, mode="reflect")


def background(shape: tuple[int, int], centre: tuple[float, float], mean_photons: float) -> np.ndarray:
    """A smooth scattering background (air, window, slits): a broad halo around the beam on a flat
    floor, scaled to `mean_photons` per pixel on average."""
    ii, jj = np.indices(shape, dtype=np.float64)
    r = np.hypot(ii - centre[0], jj - centre[1])
    b = 0.3 + np.exp(-r / (0.25 * max(shape)))
    return b * (mean_photons / b.mean())


def mate_index(shape: tuple[int, int], centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of each pixel's centro-symmetric mate about `centre` (nearest pixel to 2c - x) and
    whether it lies on the detector."""
    ii, jj = np.indices(shape)
    mi = np.floor(2.0 * centre[0] - ii + 0.5).astype(np.int64)
    mj = np.floor(2.0 * centre[1] - jj + 0.5).astype(np.int64)
    inside = (mi >= 0) & (mi < shape[0]) & (mj >= 0) & (mj < shape[1])
    return np.clip(mi, 0, shape[0] - 1), np.clip(mj, 0, shape[1] - 1), inside


def plant_zero_blocks(rng: np.random.Generator, bright: np.ndarray, fraction: float,
                      mirror: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                      reference: np.ndarray | None = None) -> np.ndarray:
    """Blocks of 1 to 3 pixels across (an earlier program's masked pixels, written as 0) placed on
    `bright` pixels until about `fraction` of the `reference` pixels (default: the bright ones) are
    covered; with `mirror` (mate indices) each block also at its centro-symmetric mate, as a
    symmetrising program leaves a zero where both mates were bad."""
    shape = bright.shape
    zeros = np.zeros(shape, bool)
    target = int(round(fraction * np.count_nonzero(bright if reference is None else reference)))
    cand = np.flatnonzero(bright)
    if target == 0 or cand.size == 0:
        return zeros
    rng.shuffle(cand)
    sizes = rng.choice([1, 1, 2, 2, 3], size=cand.size)
    covered = 0                              # bright pixels zeroed so far: count_nonzero(zeros & bright)
    for idx, s in zip(cand, sizes):
        if covered >= target:
            break
        r, c = divmod(int(idx), shape[1])
        flat = (np.arange(r, min(r + s, shape[0]))[:, None] * shape[1]
                + np.arange(c, min(c + s, shape[1]))[None, :]).ravel()
        if mirror is not None:
            mi, mj, inside = mirror
            blk = (slice(r, r + s), slice(c, c + s))
            sel = inside[blk]
            flat = np.unique(np.concatenate([flat, mi[blk][sel] * shape[1] + mj[blk][sel]]))
        covered += int(np.count_nonzero(~zeros.flat[flat] & bright.flat[flat]))
        zeros.flat[flat] = True
    return zeros & bright


def process_pattern(rng: np.random.Generator, measured: np.ndarray, bg: np.ndarray, invalid: np.ndarray,
                    expected: np.ndarray, centre: tuple[float, float], mode: str,
                    zero_fraction: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """What an earlier program makes of the measured photons (`measured`, background `bg` included):
    subtracts its background estimate (the true one within 3 %: non-integer values, negatives clipped
    to 0), writes 0 where it judged pixels bad (`invalid`: gaps, shadow, broken pixels) and in small
    blocks over about `zero_fraction` of the pixels that expect >= ZERO_LEVEL photons, and with
    mode 'symmetrised' averages each pixel with its mate (filling a bad one from a good mate).
    Returns (processed float32 pattern, map of the planted zero blocks)."""
    est = bg * (1.0 + 0.03 * (2.0 * rng.random() - 1.0))
    out = np.maximum(np.asarray(measured, np.float64) - est, 0.0)
    mirror = mate_index(out.shape, centre) if mode == "symmetrised" else None
    bright = (expected >= ZERO_LEVEL) & ~invalid
    lit = bright.copy()
    if mirror is not None:
        mi, mj, inside = mirror
        lit &= inside & bright[mi, mj]
    zeros = plant_zero_blocks(rng, lit, zero_fraction, mirror, reference=bright)
    bad = invalid | zeros
    out[bad] = 0.0
    if mirror is not None:
        mi, mj, inside = mirror
        good = ~bad
        mate_good = inside & good[mi, mj]
        mate_val = out[mi, mj]
        both = good & mate_good
        sym = np.where(both, 0.5 * (out + mate_val), out)
        sym = np.where(~good & mate_good, mate_val, sym)
        out = np.where(good | mate_good, sym, 0.0)
        zeros &= ~mate_good  # a planted zero whose mate was good got filled
    return out.astype(np.float32), zeros
