"""The 2D simulated experiments with known truth, written the way beamlines write them.

`cxdi_cli.sim.simulate(kind, out_dir, **options)` (the registry, `sim/kinds.py`) runs one kind and
returns the experiment dict that it also writes as `experiment.json` (schema `cxdi.simulate/1`). One
module on purpose (it is long): both kinds share the experiment geometry and the exact far field.

- `tungsten`: a thin tungsten test pattern (the letters C X / D I) at 8 keV on a Maxipix-like 2x2
  photon-counting detector (516 x 516, 75 um): LIMA HDF5 frame stack with Poisson noise, beamstop and
  holder rod, module gaps, hot and dead pixels, beam centre off the pixel centres.
- `cells`: a weak-phase biological specimen (a few cells with dense inclusions) on an integrating
  detector: uint16 TIFF frames in ADU (gain, dark offset, read noise, 16-bit saturation near the
  beamstop) and separate dark frames.
- `particle3d` (3D) lives in `sim/tilt3d.py`.

How the pattern is computed (2D kinds). The specimen is a complex projected density rho = T - 1 (the
exit wave minus the unscattered plane wave) sampled on a fine real-space grid of pitch
a = 1 / (2 n_det dq), dq = p / (lambda D), i.e. twice finer than a full-detector reconstruction would
resolve, with each fine pixel the average of the exit wave over 3 x 3 sub-samples (anti-aliased
edges). Its far field F(q) = sum rho(r) exp(-2 pi i q.r) is evaluated DIRECTLY at PIXEL_SUBSAMPLES^2
points inside each detector pixel, q = ((i - ci + s) dq, (j - cj + t) dq) with the sub-pixel beam centre
(ci, cj) and offsets s, t in (-1/2, 1/2), as a separable matrix DFT E_y rho E_x^T, and |F|^2 is averaged
over them: a pixel integrates the intensity over its area, so a zero of |F|^2 (a speckle vortex) never
gives a pixel that expects no photon amid bright neighbours, as point samples would (and did: dead-pixel
detectors flagged them). This is exact for the sampled specimen at any q (no interpolation, no
wrap-around, no phase ramp needed) and costs ~1e9 multiply-adds for the default detector; an FFT on a
zero-padded grid would give the same numbers only at integer pixel offsets. The q mapping is the paraxial one
(q = x / (lambda D)): for a 2D (thin) specimen the exact mapping x / (lambda r) differs by the factor
D / r, at most 1 - 8e-6 at the corner of the default detector (a 0.002-pixel shift) and the solid
angle factor (D / r)^3 is 1 - 2e-5: both far below the noise, and the paraxial grid is the one the
truth and the reconstructions use.

Intensity units: expected photons per pixel summed over all frames = s <|F(q)|^2>_pixel with s chosen so that
the sum over the whole detector (gaps and beamstop included: what the specimen scatters onto the
detector's area) equals `photons`. The truth is icfftn(sqrt(s) F(k dq), norm="ortho") on the default
crop's N x N grid, q = 0 exactly at N // 2 (the beam centre's sub-pixel offset is NOT in it).
"""
from __future__ import annotations

import math
import os
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from cxdi_cli import fft, geometry
from cxdi_cli.sim import hard2d
from cxdi_cli.sim.output import out_dir as make_out_dir, seed_value, write_json
from cxdi_cli.sim.detector import (
    UINT16_MAX, Defects, IntegratingDetector, beamstop_shadow, counting_frames, make_defects,
    module_gaps,
)
from cxdi_cli.model import (
    MASK_BITS, DataError, Geometry, Pattern, Reconstruction, Run, UsageError, wavelength_from_kev,
)

SCHEMA = "cxdi.simulate/1"

# Classical electron radius (m) and Avogadro's number, for delta/beta from atomic scattering factors.
R_E = 2.8179403262e-15
N_A = 6.02214076e23

# Tungsten at 8 keV. Atomic scattering factors f1 = Z + f' ~ 67.5 and f2 ~ 6.0 (Henke et al., At. Data
# Nucl. Data Tables 54 (1993) 181, as tabulated by CXRO; f2 cross-checked against the NIST XCOM mass
# attenuation coefficient mu/rho ~ 170 cm^2/g at 8 keV), density 19.3 g/cm^3, molar mass 183.84 g/mol.
# This gives delta ~ 4.6e-5 and beta ~ 4.1e-6 at 8 keV. Away from the L edges (L3 at 10.2 keV) delta
# scales as lambda^2 (f1 ~ constant) and beta roughly as lambda^4 (mu ~ E^-3), which is how other
# energies are handled.
W_F1, W_F2, W_DENSITY, W_MOLAR = 67.5, 6.0, 19.3e3, 183.84e-3
W_REF_KEV = 8.0


def tungsten_delta_beta(energy_kev: float) -> tuple[float, float]:
    """Refractive-index decrement delta and absorption index beta of tungsten (n = 1 - delta + i beta)."""
    lam = wavelength_from_kev(energy_kev)
    n_atoms = W_DENSITY / W_MOLAR * N_A  # atoms per m^3
    k = R_E * lam * lam * n_atoms / (2 * math.pi)
    delta = k * W_F1
    beta = k * W_F2 * (W_REF_KEV / energy_kev) ** 2  # f2 ~ E^-2 away from edges: beta ~ lambda^4
    return delta, beta


# --------------------------------------------------------------------------- far field


def far_field(rho: np.ndarray, pitch: float, qy: np.ndarray, qx: np.ndarray) -> np.ndarray:
    """Exact far field F(qy_i, qx_j) = sum_nm rho[n, m] exp(-2 pi i (qy_i y_n + qx_j x_m)).

    `rho` is a centred 2D array (r = 0 at index n // 2), `pitch` its sampling (m), `qy`, `qx` 1D spatial
    frequencies (1/m). Separable matrix DFT in complex128: exact at arbitrary (sub-pixel) q.
    """
    rho = np.asarray(rho, np.complex128)
    ny, nx = rho.shape
    y = (np.arange(ny) - ny // 2) * pitch
    x = (np.arange(nx) - nx // 2) * pitch
    ey = np.exp(-2j * np.pi * np.outer(np.asarray(qy, float), y))
    ex = np.exp(-2j * np.pi * np.outer(np.asarray(qx, float), x))
    return (ey @ rho) @ ex.T


# --------------------------------------------------------------------------- shapes


def _subgrid(n: int, pitch: float, ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-sample coordinates (y, x) of an n x n centred grid, ss x ss samples per pixel."""
    off = (np.arange(n * ss) - (ss - 1) / 2) / ss - n // 2  # pixel k's samples around its centre
    c = off * pitch
    return np.meshgrid(c, c, indexing="ij", sparse=True)


def _bin(a: np.ndarray, ss: int) -> np.ndarray:
    n = a.shape[0] // ss
    return a.reshape(n, ss, n, ss).mean(axis=(1, 3))


def _capsule(y, x, p0, p1, w):
    """Points within w/2 of the segment p0-p1 (points given as (y, x))."""
    (y0, x0), (y1, x1) = p0, p1
    dy, dx = y1 - y0, x1 - x0
    ll = dy * dy + dx * dx
    t = np.clip(((y - y0) * dy + (x - x0) * dx) / ll, 0.0, 1.0)
    return (y - y0 - t * dy) ** 2 + (x - x0 - t * dx) ** 2 <= (w / 2) ** 2


def _arc(y, x, c, radius, w, a0, a1):
    """Annular arc of mean radius `radius`, width w, angles a0..a1 (degrees, counter-clockwise, y up)."""
    dy, dx = y - c[0], x - c[1]
    r = np.sqrt(dy * dy + dx * dx)
    ang = np.degrees(np.arctan2(-dy, dx)) % 360.0
    a0, a1 = a0 % 360.0, a1 % 360.0
    inside = (ang >= a0) & (ang <= a1) if a0 <= a1 else (ang >= a0) | (ang <= a1)
    return (np.abs(r - radius) <= w / 2) & inside


def _letter(ch: str, y, x, cy: float, cx: float, h: float, w: float):
    """Boolean map of a letter of height h and stroke w centred at (cy, cx), drawn from strokes."""
    y, x = y - cy, x - cx
    t, b = -h / 2 + w / 2, h / 2 - w / 2  # stroke centre lines at top and bottom
    r = h / 2 - w / 2
    if ch == "C":
        return _arc(y, x, (0.0, 0.0), r, w, 45.0, 315.0)
    if ch == "X":
        s = 0.4 * h - w / 2
        return _capsule(y, x, (t, -s), (b, s), w) | _capsule(y, x, (t, s), (b, -s), w)
    if ch == "D":
        xl, xc = -0.4 * h + w / 2, -0.1 * h
        return (_capsule(y, x, (t, xl), (b, xl), w) | _capsule(y, x, (t, xl), (t, xc), w)
                | _capsule(y, x, (b, xl), (b, xc), w) | _arc(y, x, (0.0, xc), r, w, -90.0, 90.0))
    if ch == "I":
        s = 0.22 * h
        return (_capsule(y, x, (t, 0.0), (b, 0.0), w) | _capsule(y, x, (t, -s), (t, s), w)
                | _capsule(y, x, (b, -s), (b, s), w))
    raise ValueError(f"no strokes for letter {ch!r}")


def tungsten_object(specimen_size: float, pitch: float, thickness: float, energy_kev: float,
                    ss: int = 3) -> np.ndarray:
    """Projected density rho = T - 1 of the letters C X / D I (2 x 2, overall side `specimen_size`)
    in tungsten of `thickness`, on a centred grid of `pitch`; T = exp(-2 pi i (delta - i beta) t / lambda)
    averaged over ss x ss sub-samples per pixel."""
    n = int(math.ceil(specimen_size / pitch)) + 4
    y, x = _subgrid(n, pitch, ss)
    s = specimen_size
    h = 0.46 * s          # letter height; two letters and a 0.08 S gap span S
    w = 0.075 * s         # stroke width (~190 nm for the default 2.6 um pattern)
    c = s / 2 - h / 2
    inside = np.zeros((n * ss, n * ss), bool)
    for ch, (cy, cx) in zip("CXDI", [(c, -c), (c, c), (-c, -c), (-c, c)]):  # y up: "C X" on top
        inside |= _letter(ch, y, x, cy, cx, h, w)
    delta, beta = tungsten_delta_beta(energy_kev)
    lam = wavelength_from_kev(energy_kev)
    t_wave = np.exp(-2j * np.pi * (delta - 1j * beta) * thickness / lam)
    # the exit wave averaged over each pixel: rho is (T0 - 1) x covered fraction, real up to a constant,
    # so the noise-free pattern keeps Friedel symmetry exactly (a uniform-thickness single material)
    return (t_wave - 1.0) * _bin(inside.astype(float), ss)


#: Cells layout in units of the specimen size S (centre y, centre x, semi-axis a, semi-axis b,
#: orientation deg, peak phase rad), nuclei (relative to their cell) and inclusions (y, x, radius).
_CELLS = [
    (-0.22, -0.16, 0.27, 0.17, 25.0, 0.22),
    (0.20, -0.20, 0.21, 0.15, -40.0, 0.18),
    (0.05, 0.25, 0.24, 0.14, 80.0, 0.25),
]
_NUCLEI = [(0.03, -0.04, 0.45), (-0.02, 0.03, 0.40), (0.05, 0.0, 0.42)]  # dy, dx (in S), size factor
_INCLUSIONS = [(-0.30, -0.05, 0.030), (-0.12, -0.30, 0.022), (0.28, -0.13, 0.026), (0.12, -0.24, 0.018),
               (-0.06, 0.22, 0.028), (0.22, 0.30, 0.020)]
CELL_ABSORPTION = 0.003      # beta / delta of hydrated protein / lipid at 8 keV (weak absorption)
INCLUSION_PHASE = 0.35       # rad: dense granules (e.g. polyphosphate / mineral)
INCLUSION_ABSORPTION = 0.08  # beta / delta of the dense inclusions


def cells_object(specimen_size: float, pitch: float, ss: int = 3, phase_max: float | None = None) -> np.ndarray:
    """Projected density rho = T - 1 of a few weak-phase cells (ellipsoids, phase up to ~0.25 rad, a
    denser nucleus each) with small dense inclusions, on a centred grid of `pitch`. `phase_max` (rad)
    scales the phase shift and absorption together (thicker, denser cells) so that the largest phase
    shift is `phase_max`: above ~1 rad the object is a strong phase object, no longer real-positive."""
    n = int(math.ceil(specimen_size / pitch)) + 4
    y, x = _subgrid(n, pitch, ss)
    s = specimen_size
    phase = np.zeros((n * ss, n * ss))
    absorb = np.zeros_like(phase)
    for (cy, cx, a, b, ang, peak), (ny_, nx_, f) in zip(_CELLS, _NUCLEI):
        th = math.radians(ang)
        for (oy, ox, aa, bb, pk) in ((cy, cx, a, b, peak), (cy + ny_, cx + nx_, a * f, b * f, 0.35 * peak)):
            yy, xx = y - oy * s, x - ox * s
            u = (xx * math.cos(th) - yy * math.sin(th)) / (aa * s)
            v = (xx * math.sin(th) + yy * math.cos(th)) / (bb * s)
            r2 = u * u + v * v
            p = pk * np.sqrt(np.clip(1.0 - r2, 0.0, None))  # projected thickness of an ellipsoid
            phase += p
            absorb += CELL_ABSORPTION * p
    for cy, cx, r in _INCLUSIONS:
        rr = ((y - cy * s) ** 2 + (x - cx * s) ** 2) / (r * s) ** 2
        p = INCLUSION_PHASE * np.sqrt(np.clip(1.0 - rr, 0.0, None))
        phase += p
        absorb += INCLUSION_ABSORPTION * p
    if phase_max is not None:
        k = phase_max / float(phase.max())
        phase, absorb = phase * k, absorb * k
    t_wave = np.exp(-1j * phase - absorb)
    return _bin(t_wave, ss) - 1.0


# --------------------------------------------------------------------------- shared pieces


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise UsageError(message)


def _common_checks(size: int, photons: float, distance: float, energy_kev: float, pixel: float,
                   frames: int, oversampling: float) -> None:
    _check(isinstance(size, (int, np.integer)) and 32 <= size <= 4096, f"--size {size}: must be 32 to 4096 pixels")
    _check(np.isfinite(photons) and 0 < photons <= 1e16, f"--photons {photons}: must be > 0 and at most 1e16")
    _check(np.isfinite(distance) and 0.01 <= distance <= 1000, f"--distance {distance}: must be 0.01 to 1000 m")
    _check(np.isfinite(energy_kev) and 0.1 <= energy_kev <= 100, f"--energy {energy_kev}: must be 0.1 to 100 keV")
    _check(np.isfinite(pixel) and 1e-7 <= pixel <= 1e-2, f"--pixel {pixel}: must be 1e-7 to 1e-2 m")
    _check(isinstance(frames, (int, np.integer)) and 1 <= frames <= 10000, f"--frames {frames}: must be 1 to 10000")
    _check(frames * size * size * 4 <= 2 ** 31,
           f"--frames {frames} of {size}x{size} pixels: the stack would exceed 2 GiB; use fewer frames")
    _check(np.isfinite(oversampling) and 2.0 <= oversampling <= 20.0,
           f"--oversampling {oversampling}: must be 2 to 20 (sigma < 2 cannot be phased)")


def _beam_centre(size: int, chip: int, gap: int, near_cross: bool,
                 fraction: tuple[float, float], through: bool = False) -> tuple[float, float]:
    """The true beam centre (row, col): off the gap cross by default (on the lower-left chip, ~10 % of
    the detector from the cross, as one aligns a 2x2 detector to keep the central speckles on one chip),
    a few pixels from the cross with `near_cross`, or inside the cross (both gaps run through q = 0,
    the centred 2x2 detector) with `through`; the fractional part is `fraction`."""
    _check(all(0.0 <= f < 1.0 for f in fraction), f"beam fraction {fraction}: each part must be in [0, 1)")
    _check(not (near_cross and through), "--gap-cross-near-beam and --gap-through-beam: choose one")
    if through:
        base = (chip + (gap - 1) // 2, chip + (gap - 1) // 2)  # + fraction stays inside the gap
    elif near_cross:
        base = (chip + gap + 2, chip - 4)  # cross 3 pixels above, 4 to the right of the beam
    else:
        base = (int(round(0.59 * size)), int(round(0.43 * size)))
    return base[0] + fraction[0], base[1] + fraction[1]


def _support_on_grid(rho: np.ndarray, pitch: float, n: int, grid_pitch: float) -> np.ndarray:
    """Truth-grid pixels (N x N, r = 0 at N // 2) holding any part of the specimen."""
    idx = np.nonzero(np.abs(rho) > 1e-9)
    m = rho.shape[0]
    sup = np.zeros((n, n), bool)
    r = np.floor((idx[0] - m // 2) * pitch / grid_pitch + 0.5).astype(int) + n // 2
    c = np.floor((idx[1] - m // 2) * pitch / grid_pitch + 0.5).astype(int) + n // 2
    ok = (r >= 0) & (r < n) & (c >= 0) & (c < n)
    sup[r[ok], c[ok]] = True
    return sup


#: Sub-samples per pixel edge (default of --pixel-samples): the expected counts are |F|^2 averaged
#: over the pixel's area, as a detector pixel integrates it (a point sample, --pixel-samples 1, puts
#: exact zeros of |F|^2, speckle vortices, on pixels amid bright neighbours: zeros no real pixel records,
#: which dead-pixel detectors cannot tell from dead pixels).
PIXEL_SUBSAMPLES = 3


class _Experiment:
    """The geometry and the noise-free pattern shared by the 2D kinds."""

    def __init__(self, *, size: int, photons: float, distance: float, energy_kev: float, pixel: float,
                 oversampling: float, near_cross: bool, fraction: tuple[float, float],
                 through_beam: bool = False, pixel_samples: int = PIXEL_SUBSAMPLES) -> None:
        self.shape = (size, size)
        self.wavelength = wavelength_from_kev(energy_kev)
        self.distance, self.pixel, self.energy_kev = distance, pixel, energy_kev
        self.dq = pixel / (self.wavelength * distance)
        self.chip, self.gap = module_gaps(size)
        self.centre = _beam_centre(size, self.chip, self.gap, near_cross, fraction, through_beam)
        try:
            self.crop = geometry.default_crop(self.shape, self.centre)
        except DataError as exc:  # a too-small detector is a usage problem here
            raise UsageError(f"--size {size}: {exc}") from None
        self.specimen_size = self.wavelength * distance / (pixel * oversampling)
        self.oversampling = oversampling
        self.fine_pitch = 1.0 / (2 * size * self.dq)  # twice finer than the full-detector resolution
        self.truth_pitch = 1.0 / (self.crop * self.dq)
        self.photons = photons
        _check(isinstance(pixel_samples, (int, np.integer)) and 1 <= pixel_samples <= 7,
               f"--pixel-samples {pixel_samples}: must be 1 (point samples) to 7")
        self.pixel_samples = int(pixel_samples)
        self._check_paraxial(size)

    def _check_paraxial(self, size: int) -> None:
        """Refuse geometries where the paraxial q mapping (which the 2D truth, preprocess and phase all
        use) is off by more than 0.1 pixel at the farthest detector corner: q_exact = q_paraxial D / r."""
        ci, cj = self.centre
        r_px = math.hypot(max(ci, size - 1 - ci), max(cj, size - 1 - cj))
        x = r_px * self.pixel
        shift = r_px * (1.0 - self.distance / math.hypot(self.distance, x))
        if shift > 0.1:
            d_min = x * math.sqrt(r_px / 0.2)
            raise UsageError(f"--distance {self.distance:g}: the detector corner is {shift:.2f} pixel off the "
                             f"flat-detector (paraxial) q grid a 2D reconstruction assumes; use a distance of "
                             f"at least {d_min:.2g} m or a smaller --size")

    def pattern_and_truth(self, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Expected photons summed over frames (full detector, float64), truth (N x N complex128) and
        its support."""
        ci, cj = self.centre
        ss = self.pixel_samples
        sub = (np.arange(ss) + 0.5) / ss - 0.5  # sub-sample offsets inside a pixel, symmetric about 0
        qy = ((np.arange(self.shape[0]) - ci)[:, None] + sub).ravel() * self.dq
        qx = ((np.arange(self.shape[1]) - cj)[:, None] + sub).ravel() * self.dq
        amp = far_field(rho, self.fine_pitch, qy, qx)
        intensity = (amp * amp.conj()).real.reshape(self.shape[0], ss, self.shape[1], ss).mean(axis=(1, 3))
        scale = self.photons / intensity.sum()
        n = self.crop
        k = (np.arange(n) - n // 2) * self.dq
        f_crop = far_field(rho, self.fine_pitch, k, k) * math.sqrt(scale)
        # complex64 like every stored object (and the FFT plan the reconstructions of this crop share)
        truth = fft.icfftn(f_crop.astype(np.complex64), norm="ortho")
        support = _support_on_grid(rho, self.fine_pitch, n, self.truth_pitch)
        return intensity * scale, truth, support

    def geometry(self) -> Geometry:
        return Geometry(wavelength=self.wavelength, distance=self.distance, pixel=(self.pixel, self.pixel),
                        centre=tuple(float(c) for c in self.centre))

    def beamstop(self, radius_speckles: float | None, rod_angle: float) -> tuple[float, float, tuple[float, float]]:
        """Beamstop radius (pixels), rod width (pixels) and rod direction (unit (d_row, d_col))."""
        rs = 1.0 if radius_speckles is None else radius_speckles
        _check(np.isfinite(rs) and 0.5 <= rs <= 10, f"--beamstop {rs}: must be 0.5 to 10 speckles")
        radius = rs * self.oversampling  # one speckle is ~sigma pixels across
        rod = float(max(2, round(0.6 * radius)))
        ci, cj = self.centre
        corner = math.hypot(max(ci, self.shape[0] - 1 - ci), max(cj, self.shape[1] - 1 - cj))
        _check(radius < 0.5 * corner, f"--beamstop {rs}: a {radius:.0f}-pixel beamstop hides most of a "
                                      f"{self.shape[0]}-pixel detector")
        _check(np.isfinite(rod_angle), f"--rod-angle {rod_angle}: must be a number of degrees")
        th = math.radians(rod_angle)
        return radius, rod, (-math.sin(th), math.cos(th))  # angle counter-clockwise from +col, rows down

    def base_dict(self, kind: str, frames: int, seed: int, defects: Defects, beamstop: tuple) -> dict[str, Any]:
        radius, rod, direction = beamstop
        return {
            "schema": SCHEMA,
            "kind": kind,
            "energy_kev": self.energy_kev,
            "distance_m": self.distance,
            "pixel_m": self.pixel,
            "wavelength_m": self.wavelength,
            "detector_shape": list(self.shape),
            "beam_centre": [float(self.centre[0]), float(self.centre[1])],
            "crop": self.crop,
            "n_frames": frames,
            "photons_total": self.photons,
            "oversampling": self.oversampling,
            "specimen_size_m": self.specimen_size,
            "truth_pixel_m": self.truth_pitch,
            "beamstop": {"radius_px": radius, "rod_width_px": rod,
                         "rod_direction": [round(direction[0], 6), round(direction[1], 6)],
                         "rod_angle_deg": round(math.degrees(math.atan2(-direction[0], direction[1])) % 360.0, 6)},
            "gaps": {"rows": defects.gap_rows, "cols": defects.gap_cols},
            "seed": seed,
        }


def _write_truth_expected(d: Path, exp: _Experiment, expected: np.ndarray, truth: np.ndarray,
                          support: np.ndarray, mask: np.ndarray, step: dict[str, Any]) -> None:
    from cxdi_cli import io  # noqa: PLC0415

    geo = exp.geometry()
    io.write_pattern(str(d / "expected.cxi"), Pattern(intensity=expected.astype(np.float32), mask=mask,
                                                      geometry=geo), step)
    run = Run(obj=truth.astype(np.complex64), support=support,
              metrics={"support_size": int(support.sum())},
              params={"what": "truth: band-limited specimen on the default crop, q = 0 at N//2",
                      "crop": exp.crop})
    io.write_reconstruction(str(d / "truth.cxi"), Reconstruction(
        runs=[run], pixel_size=(exp.truth_pitch, exp.truth_pitch),
        geometry=Geometry(wavelength=exp.wavelength, distance=exp.distance, pixel=(exp.pixel, exp.pixel))), step)


def _broken_counts(n_det: int) -> int:
    return max(2, int(round(6 * n_det / 516.0 ** 2)))


def _lit(expected_pf: np.ndarray, ok: np.ndarray, level: float, n_dead: int) -> np.ndarray:
    """Pixels bright enough for a dead one to stand out: `level` photons per frame or more, or where too
    few pixels are that bright (weak scatterers, small detectors), the brightest 50 n_dead pixels."""
    values = expected_pf[ok]
    if np.count_nonzero(values >= level) >= 50 * n_dead:
        thr = level
    else:
        thr = float(np.sort(values)[-min(values.size, 50 * n_dead)])
    return ok & (expected_pf >= thr)


#: Mean background (photons per pixel, all frames) under a processed pattern, before subtraction.
BACKGROUND_PHOTONS = 2.0


def _hard_options(psf: float, processed: str, fraction: tuple[float, float]) -> tuple[float, str, tuple[float, float]]:
    """Checked PSF FWHM and processed mode, and the beam centre's fractional part: on a pixel for a
    symmetrised pattern (the earlier program centred it on a pixel before symmetrising)."""
    psf = hard2d.check_psf(psf)
    processed = hard2d.check_processed(processed)
    return psf, processed, ((0.0, 0.0) if processed == "symmetrised" else tuple(fraction))


def _processed(d: Path, rng: np.random.Generator, exp: "_Experiment", mode: str, measured: np.ndarray,
               bg: np.ndarray, invalid: np.ndarray, expected: np.ndarray, mask: np.ndarray) -> dict[str, Any] | None:
    """Write processed.tif (what an earlier program made of the measured photons, hard2d.process_pattern)
    and flag its planted zeros in `mask` (bit 'zero', in place); the experiment.json entry (None: off)."""
    if mode == "off":
        return None
    from cxdi_cli import io  # noqa: PLC0415

    data, zeros = hard2d.process_pattern(rng, measured, bg, invalid, expected, exp.centre, mode)
    io.write_tiff(str(d / "processed.tif"), data)
    mask[zeros] |= np.uint32(MASK_BITS["zero"])
    lit = (expected >= hard2d.ZERO_LEVEL) & ~invalid
    return {"mode": mode, "file": "processed.tif", "background_mean_photons": BACKGROUND_PHOTONS,
            "zero_level_photons": hard2d.ZERO_LEVEL, "zeros_planted": int(zeros.sum()),
            "zeros_fraction_of_bright": float(zeros.sum() / max(1, lit.sum())),
            "non_integer_fraction": float(np.mean(data != np.round(data))),
            "symmetrised": mode == "symmetrised"}


def _experiment(out_dir: str | os.PathLike, *, beamstop: float, rod_angle: float,
                **geometry: Any) -> tuple["_Experiment", tuple, Path]:
    """What both 2D kinds set up first: the experiment's geometry, its beamstop and the output folder."""
    exp = _Experiment(**geometry)
    return exp, exp.beamstop(beamstop, rod_angle), make_out_dir(out_dir)


def _hard_info(info: dict[str, Any], d: Path, exp: "_Experiment", psf: float, proc: dict[str, Any] | None,
               gap_through_beam: bool) -> None:
    """The hard-case entries of experiment.json; a processed pattern is what `preprocess` reads next."""
    info["gap_through_beam"] = bool(gap_through_beam)
    info["pixel_samples"] = exp.pixel_samples
    info["psf"] = {"kind": "gaussian", "fwhm_px": psf} if psf > 0 else None
    info["processed"] = proc
    if proc is not None:
        info["files"]["processed"] = proc["file"]
        info["preprocess"] = (f"cxdi preprocess {shlex.quote(str(d / proc['file']))} -o "
                              f"{shlex.quote(str(d / 'pattern.cxi'))} --energy {exp.energy_kev:g} "
                              f"--distance {exp.distance:g} --pixel {exp.pixel:g}")


# --------------------------------------------------------------------------- tungsten


def simulate_tungsten(out_dir: str | os.PathLike, *, seed: int = 0, size: int = 516,
                      photons: float = 1e9, distance: float = 5.0, energy_kev: float = 8.0,
                      pixel: float = 75e-6, frames: int = 10, oversampling: float = 4.0,
                      thickness: float = 150e-9, gap_cross_near_beam: bool = False,
                      beam_fraction: tuple[float, float] = (0.3, 0.6), beamstop: float | None = None,
                      rod_angle: float = 35.0, gap_through_beam: bool = False, psf: float = 0.0,
                      processed: str = "off", pixel_samples: int = PIXEL_SUBSAMPLES,
                      command: str = "cxdi simulate tungsten") -> dict[str, Any]:
    """Tungsten letters on a photon-counting Maxipix-like 2x2 detector; writes frames.h5 (LIMA),
    expected.cxi, truth.cxi and experiment.json into `out_dir` (and processed.tif with `processed`);
    returns the experiment dict. `psf`: FWHM (px) of a partially coherent beam's detector-plane PSF."""
    _common_checks(size, photons, distance, energy_kev, pixel, frames, oversampling)
    _check(np.isfinite(thickness) and 1e-9 <= thickness <= 5e-6, f"--thickness {thickness}: must be 1e-9 to 5e-6 m")
    seed = seed_value(seed)
    psf, processed, fraction = _hard_options(psf, processed, beam_fraction)
    exp, bs, d = _experiment(out_dir, size=size, photons=photons, distance=distance, energy_kev=energy_kev,
                             pixel=pixel, oversampling=oversampling, near_cross=gap_cross_near_beam,
                             fraction=fraction, through_beam=gap_through_beam, pixel_samples=pixel_samples,
                             beamstop=beamstop, rod_angle=rod_angle)
    from cxdi_cli import io  # noqa: PLC0415

    rho = tungsten_object(exp.specimen_size, exp.fine_pitch, thickness, energy_kev)
    expected, truth, support = exp.pattern_and_truth(rho)
    expected = hard2d.partial_coherence(expected, psf)
    per_frame = expected / frames
    rng = np.random.default_rng(seed)
    gap_idx = list(range(exp.chip, exp.chip + exp.gap))
    n_broken = _broken_counts(size * size)
    # hot pixels: 10x to 100x the brightest pixel a frame holds outside the beamstop (counters are 32-bit)
    shadow = beamstop_shadow(exp.shape, exp.centre, bs[0], bs[1], bs[2])
    peak = float(per_frame[~shadow].max())
    hot_lo = min(max(1000.0, 10.0 * peak), 2e8)
    ok = ~shadow
    defects = make_defects(rng, exp.shape, exp.centre, gap_rows=gap_idx, gap_cols=gap_idx,
                           beamstop_radius=bs[0], rod_width=bs[1], rod_direction=bs[2],
                           n_hot=n_broken, n_dead=n_broken, lit=_lit(per_frame, ok, 20.0, n_broken),
                           hot_range=(hot_lo, 10 * hot_lo), shadow=shadow)
    bg = hard2d.background(exp.shape, exp.centre, BACKGROUND_PHOTONS) if processed != "off" else None
    stack = counting_frames(rng, per_frame if bg is None else per_frame + bg / frames, frames, defects)
    full = stack == np.iinfo(np.uint32).max  # a 32-bit counter at its ceiling (absurd --photons only)
    sat_list = [(int(r), int(c)) for r, c in zip(*np.nonzero(full.any(axis=0)))]
    mask = defects.mask(sat_list)
    params = dict(seed=seed, size=size, photons=photons, distance=distance, energy_kev=energy_kev, pixel=pixel,
                  frames=frames, oversampling=oversampling, thickness=thickness,
                  gap_cross_near_beam=gap_cross_near_beam, beam_fraction=list(fraction),
                  beamstop=beamstop, rod_angle=rod_angle, gap_through_beam=gap_through_beam, psf=psf,
                  processed=processed, pixel_samples=pixel_samples)
    step = io.make_step(command, params)
    io.write_lima(str(d / "frames.h5"), stack, detector="maxipix")
    proc = None
    if bg is not None:
        proc = _processed(d, rng, exp, processed, stack.sum(axis=0, dtype=np.float64), bg,
                          mask != 0, expected, mask)
    _write_truth_expected(d, exp, expected, truth, support, mask, step)
    delta, beta = tungsten_delta_beta(energy_kev)
    info = exp.base_dict("tungsten", frames, seed, defects, bs)
    info.update({
        "saturation_adu": None, "adu_per_photon": None, "dark_adu": None,
        "broken_pixels": {"hot": [list(p) for p in defects.hot], "dead": [list(p) for p in defects.dead],
                          "saturated": [list(p) for p in sat_list]},
        "files": {"frames": "frames.h5", "darks": None, "truth": "truth.cxi", "expected": "expected.cxi"},
        "specimen": {"material": "W", "thickness_m": thickness, "delta": delta, "beta": beta,
                     "letters": "C X / D I"},
        "preprocess": (f"cxdi preprocess {shlex.quote(str(d / 'frames.h5'))} -o {shlex.quote(str(d / 'pattern.cxi'))}"
                       f" --energy {energy_kev:g} --distance {distance:g} --pixel {pixel:g}"),
    })
    _hard_info(info, d, exp, psf, proc, gap_through_beam)
    write_json(d / "experiment.json", info)
    return info


# --------------------------------------------------------------------------- cells


def simulate_cells(out_dir: str | os.PathLike, *, seed: int = 0, size: int = 512,
                   photons: float = 1e8, distance: float = 5.0, energy_kev: float = 8.0,
                   pixel: float = 75e-6, frames: int = 10, darks: int = 5, oversampling: float = 4.0,
                   adu_per_photon: float = 2.0, dark_adu: float = 1000.0, read_noise: float = 1.0,
                   gap_cross_near_beam: bool = False, beam_fraction: tuple[float, float] = (0.7, 0.2),
                   beamstop: float | None = None, rod_angle: float = 200.0, gap_through_beam: bool = False,
                   psf: float = 0.0, processed: str = "off", phase_max: float | None = None,
                   pixel_samples: int = PIXEL_SUBSAMPLES, command: str = "cxdi simulate cells") -> dict[str, Any]:
    """Weak-phase cells on an integrating 16-bit detector; writes frames/frame_NNNN.tif,
    darks/dark_NNNN.tif (uint16 ADU), expected.cxi, truth.cxi and experiment.json (and processed.tif
    with `processed`). `phase_max` (rad): the largest phase shift (a strong phase object above ~1)."""
    _common_checks(size, photons, distance, energy_kev, pixel, frames, oversampling)
    _check(isinstance(darks, (int, np.integer)) and 1 <= darks <= 1000, f"--darks {darks}: must be 1 to 1000")
    _check(np.isfinite(adu_per_photon) and 0.01 <= adu_per_photon <= 1000,
           f"--adu-per-photon {adu_per_photon}: must be 0.01 to 1000")
    _check(np.isfinite(dark_adu) and 0 <= dark_adu <= 30000, f"--dark-adu {dark_adu}: must be 0 to 30000")
    _check(np.isfinite(read_noise) and 0 <= read_noise <= 1000, f"--read-noise {read_noise}: must be 0 to 1000")
    _check(phase_max is None or (np.isfinite(phase_max) and 0.01 <= phase_max <= 10),
           f"--phase-max {phase_max}: must be 0.01 to 10 rad")
    seed = seed_value(seed)
    psf, processed, fraction = _hard_options(psf, processed, beam_fraction)
    exp, bs, d = _experiment(out_dir, size=size, photons=photons, distance=distance, energy_kev=energy_kev,
                             pixel=pixel, oversampling=oversampling, near_cross=gap_cross_near_beam,
                             fraction=fraction, through_beam=gap_through_beam, pixel_samples=pixel_samples,
                             beamstop=beamstop, rod_angle=rod_angle)
    from cxdi_cli import io  # noqa: PLC0415

    rho = cells_object(exp.specimen_size, exp.fine_pitch, phase_max=phase_max)
    expected, truth, support = exp.pattern_and_truth(rho)
    expected = hard2d.partial_coherence(expected, psf)
    per_frame = expected / frames
    rng = np.random.default_rng(seed)
    det = IntegratingDetector(gain=adu_per_photon, dark_adu=dark_adu, offset_spread=0.03 * dark_adu,
                              read_noise=read_noise)
    det.draw_offset(rng, exp.shape)
    shadow = beamstop_shadow(exp.shape, exp.centre, bs[0], bs[1], bs[2])
    # hot pixels read 20000..45000 ADU; they sit where the real signal stays below a tenth of that
    hot_range = (20000.0, 45000.0)
    dim = per_frame * adu_per_photon + dark_adu < hot_range[0] / 10
    gap_idx = list(range(exp.chip, exp.chip + exp.gap))
    n_broken = _broken_counts(size * size)
    ok = ~shadow & (per_frame * adu_per_photon + dark_adu < UINT16_MAX / 2)  # dead, not saturated
    defects = make_defects(rng, exp.shape, exp.centre, gap_rows=gap_idx, gap_cols=gap_idx,
                           beamstop_radius=bs[0], rod_width=bs[1], rod_direction=bs[2],
                           n_hot=n_broken, n_dead=n_broken, lit=_lit(per_frame, ok, 20.0, n_broken),
                           hot_range=hot_range, dim=dim, shadow=shadow)
    params = dict(seed=seed, size=size, photons=photons, distance=distance, energy_kev=energy_kev, pixel=pixel,
                  frames=frames, darks=darks, oversampling=oversampling, adu_per_photon=adu_per_photon,
                  dark_adu=dark_adu, read_noise=read_noise, gap_cross_near_beam=gap_cross_near_beam,
                  beam_fraction=list(fraction), beamstop=beamstop, rod_angle=rod_angle,
                  gap_through_beam=gap_through_beam, psf=psf, processed=processed, phase_max=phase_max,
                  pixel_samples=pixel_samples)
    step = io.make_step(command, params)
    fdir, ddir = d / "frames", d / "darks"
    fdir.mkdir(exist_ok=True)
    ddir.mkdir(exist_ok=True)
    saturated = np.zeros(exp.shape, bool)
    bg = hard2d.background(exp.shape, exp.centre, BACKGROUND_PHOTONS) if processed != "off" else None
    adu_sum = np.zeros(exp.shape)
    for k, frame in enumerate(det.frames(rng, per_frame if bg is None else per_frame + bg / frames,
                                         frames, defects)):
        saturated |= frame >= UINT16_MAX
        adu_sum += frame
        io.write_tiff_raw(str(fdir / f"frame_{k:04d}.tif"), frame)
    for k, dark in enumerate(det.darks(rng, darks, defects)):
        io.write_tiff_raw(str(ddir / f"dark_{k:04d}.tif"), dark)
    _remove_stale(fdir, "frame_", frames)
    _remove_stale(ddir, "dark_", darks)
    sat_list = [(int(r), int(c)) for r, c in zip(*np.nonzero(saturated))]
    mask = defects.mask(sat_list)
    proc = None
    if bg is not None:  # the earlier program calibrated with the dark map: (ADU - offset) / gain
        measured = (adu_sum - frames * det.offset) / adu_per_photon
        proc = _processed(d, rng, exp, processed, measured, bg, mask != 0, expected, mask)
    _write_truth_expected(d, exp, expected, truth, support, mask, step)
    info = exp.base_dict("cells", frames, seed, defects, bs)
    q = shlex.quote
    info.update({
        "n_darks": darks,
        "saturation_adu": UINT16_MAX, "adu_per_photon": adu_per_photon, "dark_adu": dark_adu,
        "read_noise_adu": read_noise,
        "broken_pixels": {"hot": [list(p) for p in defects.hot], "dead": [list(p) for p in defects.dead],
                          "saturated": [list(p) for p in sat_list]},
        "files": {"frames": "frames/frame_*.tif", "darks": "darks/dark_*.tif", "truth": "truth.cxi",
                  "expected": "expected.cxi"},
        "specimen": {"material": "cells (weak phase) with dense inclusions",
                     "cells": len(_CELLS), "inclusions": len(_INCLUSIONS)},
        "preprocess": (f"cxdi preprocess {q(str(fdir / 'frame_*.tif'))} --dark {q(str(ddir / 'dark_*.tif'))}"
                       f" --adu-per-photon {adu_per_photon:g} -o {q(str(d / 'pattern.cxi'))}"
                       f" --energy {energy_kev:g} --distance {distance:g} --pixel {pixel:g}"),
    })
    if phase_max is not None:
        info["specimen"]["phase_max_rad"] = phase_max
    _hard_info(info, d, exp, psf, proc, gap_through_beam)
    write_json(d / "experiment.json", info)
    return info


def _remove_stale(folder: Path, prefix: str, n: int) -> None:
    """Remove frames a previous, longer run left behind (they would join a glob of this run's frames)."""
    for p in folder.glob(f"{prefix}*.tif"):
        stem = p.stem[len(prefix):]
        if stem.isdigit() and int(stem) >= n:
            p.unlink()
