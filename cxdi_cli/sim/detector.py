"""Detector effects for simulated experiments: module gaps, beamstop shadow, broken pixels, counting noise.

Two detector families:
- photon counting (Maxipix, Eiger, Pilatus): frames are Poisson photon counts; gaps read 0; hot pixels
  count absurdly high in every frame; dead pixels read 0.
- integrating (CCD, sCMOS, charge-integrating hybrid): ADU = gain * photons + per-pixel dark offset +
  Gaussian read noise, clipped to the 16-bit range (pixels that hit 65535 are saturated); dead pixels
  give the dark level only; hot pixels read very high.

Everything here works on detector-sized arrays with numpy; nothing does I/O.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Iterator

import numpy as np

from cxdi_cli.model import MASK_BITS, UsageError

#: Maxipix geometry: one module edge is 2 chips of 256 pixels; a 2x2 detector is 516 pixels across,
#: i.e. a 4-pixel-wide insensitive cross between the chips.
MAXIPIX_CHIP = 256
MAXIPIX_GAP = 4
UINT16_MAX = 65535


@dataclasses.dataclass
class Defects:
    """Where a simulated detector is broken (row/col index lists and boolean maps, detector shape)."""

    shape: tuple[int, int]
    gap_rows: list[int]
    gap_cols: list[int]
    shadow: np.ndarray                       # bool: beamstop disc + holder rod (no photons arrive)
    hot: list[tuple[int, int]]
    dead: list[tuple[int, int]]
    hot_level: np.ndarray                    # per hot pixel: its mean reading per frame (counts or ADU)

    @functools.cached_property
    def gaps(self) -> np.ndarray:
        """Boolean map of the insensitive module gaps (built once, on first use)."""
        g = np.zeros(self.shape, bool)
        g[self.gap_rows, :] = True
        g[:, self.gap_cols] = True
        return g

    def mask(self, saturated: list[tuple[int, int]] | None = None) -> np.ndarray:
        """The CXI mask (uint32 bits of model.MASK_BITS) of every broken pixel."""
        m = np.zeros(self.shape, np.uint32)
        m[self.shadow] |= np.uint32(MASK_BITS["beamstop"])
        m[self.gaps] |= np.uint32(MASK_BITS["gap"])
        for name, pixels in (("hot", self.hot), ("dead", self.dead), ("saturated", saturated or [])):
            if pixels:
                r, c = np.asarray(pixels, int).T
                m[r, c] |= np.uint32(MASK_BITS[name])
        return m


def module_gaps(n: int, chip: int | None = None, gap: int | None = None) -> tuple[int, int]:
    """(first gap index, gap width) along one axis of an n-pixel 2x2-module detector.

    At the real size (516 = 2 * 256 + 4) this is the Maxipix cross; a smaller test detector keeps two
    chips per edge and scales the gap (at least 2 pixels so it stays visible).
    """
    if gap is None:
        gap = max(2, int(round(MAXIPIX_GAP * n / (2 * MAXIPIX_CHIP + MAXIPIX_GAP))))
    if chip is None:
        chip = (n - gap) // 2
    if chip < 4 or chip + gap >= n:
        raise UsageError(f"detector of {n} pixels is too small for two modules and a gap")
    return chip, gap


def beamstop_shadow(shape: tuple[int, int], centre: tuple[float, float], radius: float,
                    rod_width: float, rod_direction: tuple[float, float]) -> np.ndarray:
    """Pixels shadowed by a round beamstop on the beam centre and its holder rod.

    A pixel is shadowed when its centre lies within `radius` of the (sub-pixel) beam centre, or within
    `rod_width / 2` of the rod's axis, a half-line from the beam centre along the unit vector
    `rod_direction` = (d_row, d_col) to the detector edge.
    """
    ii, jj = np.indices(shape, dtype=float)
    dy, dx = ii - centre[0], jj - centre[1]
    disc = dy * dy + dx * dx <= radius * radius
    ur, uc = rod_direction
    norm = float(np.hypot(ur, uc))
    ur, uc = ur / norm, uc / norm
    along = dy * ur + dx * uc
    across = np.abs(dy * uc - dx * ur)
    rod = (along >= 0) & (across <= rod_width / 2.0)
    return disc | rod


def choose_broken(rng: np.random.Generator, shape: tuple[int, int], excluded: np.ndarray,
                  n_hot: int, n_dead: int, lit: np.ndarray | None = None, dim: np.ndarray | None = None,
                  ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Pick hot and dead pixels at random, apart from each other and from `excluded` pixels.

    Dead pixels are drawn among `lit` pixels (where light arrives, so their silence is a defect one can
    see); hot pixels among `dim` pixels (where the signal stays well below a hot pixel's reading), or
    anywhere that is not excluded when `dim` is None. Neighbouring broken pixels are avoided so each one
    is an isolated outlier.
    """
    free = ~excluded.copy()
    # keep a one-pixel frame free: detectors' edge pixels are usually masked separately
    free[0, :] = free[-1, :] = free[:, 0] = free[:, -1] = False

    def draw(pool: np.ndarray, k: int) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        cand = np.flatnonzero(pool & free)
        rng.shuffle(cand)
        for idx in cand:
            if len(out) == k:
                break
            r, c = divmod(int(idx), shape[1])
            if not free[r, c]:
                continue
            out.append((r, c))
            free[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3] = False  # no two defects side by side
        return out

    dead = draw(lit if lit is not None else np.ones(shape, bool), n_dead)
    hot = draw(dim if dim is not None else np.ones(shape, bool), n_hot)
    return hot, dead


def make_defects(rng: np.random.Generator, shape: tuple[int, int], centre: tuple[float, float], *,
                 gap_rows: list[int], gap_cols: list[int], beamstop_radius: float, rod_width: float,
                 rod_direction: tuple[float, float], n_hot: int, n_dead: int,
                 lit: np.ndarray | None, hot_range: tuple[float, float],
                 dim: np.ndarray | None = None, shadow: np.ndarray | None = None) -> Defects:
    """Assemble a detector's defects: gaps, beamstop shadow, and randomly placed hot/dead pixels (dead
    ones among `lit` pixels, hot ones among `dim` pixels; see choose_broken). `shadow`: the beamstop
    shadow of these arguments when the caller already has it (computed here otherwise)."""
    if shadow is None:
        shadow = beamstop_shadow(shape, centre, beamstop_radius, rod_width, rod_direction)
    defects = Defects(shape=shape, gap_rows=list(gap_rows), gap_cols=list(gap_cols), shadow=shadow,
                      hot=[], dead=[], hot_level=np.zeros(0))
    gaps = defects.gaps
    # defects keep 2 pixels away from the shadow and gaps so each bit is unambiguous
    from scipy.ndimage import binary_dilation  # noqa: PLC0415

    excluded = binary_dilation(shadow | gaps, iterations=2)
    hot, dead = choose_broken(rng, shape, excluded, n_hot, n_dead, lit, dim)
    lo, hi = hot_range
    defects.hot, defects.dead = hot, dead
    defects.hot_level = np.exp(rng.uniform(np.log(lo), np.log(hi), len(hot)))
    return defects


def counting_frames(rng: np.random.Generator, expected_per_frame: np.ndarray, n_frames: int,
                    defects: Defects) -> np.ndarray:
    """Photon-counting frames (uint32, n_frames x ny x nx): Poisson counts, 0 in gaps, behind the
    beamstop and on dead pixels; hot pixels read their (Poisson-fluctuating) high level every frame."""
    lam = np.where(defects.shadow | defects.gaps, 0.0, np.asarray(expected_per_frame, float))
    frames = np.empty((n_frames,) + lam.shape, np.uint32)
    hr, hc = (np.asarray(defects.hot, int).T if defects.hot else (np.zeros(0, int), np.zeros(0, int)))
    dr, dc = (np.asarray(defects.dead, int).T if defects.dead else (np.zeros(0, int), np.zeros(0, int)))
    for k in range(n_frames):
        f = rng.poisson(lam)
        f[hr, hc] = rng.poisson(defects.hot_level)
        f[dr, dc] = 0
        frames[k] = np.minimum(f, np.iinfo(np.uint32).max)  # a 32-bit counter cannot count further
    return frames


@dataclasses.dataclass
class IntegratingDetector:
    """An integrating detector's response: ADU = gain * photons + offset(pixel) + read noise, uint16."""

    gain: float                  # ADU per photon
    dark_adu: float              # mean dark offset
    offset_spread: float         # fixed-pattern spread of the per-pixel offset (ADU rms)
    read_noise: float            # Gaussian read noise per read (ADU rms)
    offset: np.ndarray | None = None

    def draw_offset(self, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        """Fix the per-pixel dark offset map (the detector's fixed pattern)."""
        self.offset = self.dark_adu + self.offset_spread * rng.standard_normal(shape)
        return self.offset

    def read(self, rng: np.random.Generator, photons: np.ndarray, defects: Defects) -> np.ndarray:
        """One read-out of `photons` (integer photon numbers per pixel) as uint16 ADU.

        Gap pixels read 0 (no pixel there: the assembled image is zero-filled); dead pixels and shadowed
        pixels see no photons, so they read the dark level; hot pixels read their high level.
        """
        if self.offset is None:
            raise ValueError("draw_offset() first")
        adu = self.gain * np.asarray(photons, float) + self.offset
        adu += self.read_noise * rng.standard_normal(adu.shape)
        if defects.hot:
            hr, hc = np.asarray(defects.hot, int).T
            adu[hr, hc] = defects.hot_level * (1.0 + 0.05 * rng.standard_normal(len(defects.hot)))
        adu[defects.gaps] = 0.0
        return np.clip(np.rint(adu), 0, UINT16_MAX).astype(np.uint16)

    def frames(self, rng: np.random.Generator, expected_per_frame: np.ndarray, n_frames: int,
               defects: Defects) -> Iterator[np.ndarray]:
        """Exposures: Poisson photons on the sensitive, unshadowed pixels, read out one by one."""
        lam = np.where(defects.shadow | defects.gaps, 0.0, np.asarray(expected_per_frame, float))
        if defects.dead:
            dr, dc = np.asarray(defects.dead, int).T
            lam[dr, dc] = 0.0
        for _ in range(n_frames):
            yield self.read(rng, rng.poisson(lam), defects)

    def darks(self, rng: np.random.Generator, n_darks: int, defects: Defects) -> Iterator[np.ndarray]:
        """Dark frames (shutter closed): offset + read noise; hot pixels are hot only under exposure."""
        zero = np.zeros(defects.shape)
        quiet = dataclasses.replace(defects, hot=[], hot_level=np.zeros(0))
        for _ in range(n_darks):
            yield self.read(rng, zero, quiet)
