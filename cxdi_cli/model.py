"""Data model shared by every module: errors with exit codes, mask bits, patterns, reconstructions.

Nothing here does I/O or heavy numerics; everything else in `cxdi_cli` builds on it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

# --------------------------------------------------------------------------- errors


class CxdiError(Exception):
    """A failure the user can act on; the CLI prints it as one line and exits with `exit_code`."""

    exit_code = 1


class InputError(CxdiError):
    """An input file is missing, unreadable, truncated or holds the wrong thing."""


class DataError(CxdiError):
    """The data are readable but unusable (NaNs, all zero, wrong shape, inconsistent geometry)."""


class ComputeError(CxdiError):
    """The computation failed (did not converge, ran out of memory, ...)."""


class UsageError(CxdiError):
    """Options that contradict each other or a malformed option value (exit status 2)."""

    exit_code = 2


# --------------------------------------------------------------------------- mask bits

#: CXI pixel-mask bits (0 = good pixel). The single table every module uses; bit values follow the
#: CXI 1.6 pixel_mask convention where one exists, so PyNX and cxidb readers understand them.
MASK_BITS: dict[str, int] = {
    "invalid": 1 << 0,      # CXI: invalid / user-declared bad pixel
    "saturated": 1 << 1,    # CXI: saturated
    "hot": 1 << 2,          # CXI: hot
    "dead": 1 << 3,         # CXI: dead
    "beamstop": 1 << 4,     # CXI: shadowed (beamstop and its holder)
    "gap": 1 << 9,          # CXI: non-sensitive area between modules (bit 9 in CXI 1.6)
    "user": 1 << 16,        # cxdi: drawn or supplied by the user
    "unmeasured": 1 << 17,  # cxdi: no measurement reached the voxel / pixel (padding, missing wedge)
    "friedel": 1 << 18,     # cxdi: filled from the centro-symmetric mate (still counts as data)
    "zero": 1 << 19,        # cxdi: an exact 0 photon noise cannot make (processed data, earlier program's mask)
}

#: Bits that do NOT exclude a pixel from the data (informational flags).
INFO_BITS = MASK_BITS["friedel"]


def mask_bit(name: str) -> int:
    """The integer bit of a mask-bit name; raises UsageError listing the valid names."""
    try:
        return MASK_BITS[name]
    except KeyError:
        raise UsageError(f"unknown mask bit {name!r}; valid: {', '.join(sorted(MASK_BITS))}") from None


def bit_names() -> list[str]:
    """Distinct bit names in bit order (aliases dropped)."""
    seen: dict[int, str] = {}
    for name, bit in MASK_BITS.items():
        seen.setdefault(bit, name)
    return [seen[b] for b in sorted(seen)]


def measured_from_mask(mask: np.ndarray) -> np.ndarray:
    """True where a pixel holds data: mask bits other than the informational ones are all clear."""
    return (np.asarray(mask).astype(np.uint32) & ~np.uint32(INFO_BITS)) == 0


def mask_counts(mask: np.ndarray) -> dict[str, int]:
    """Number of pixels carrying each bit (by distinct name)."""
    m = np.asarray(mask).astype(np.uint32)
    return {name: int(np.count_nonzero(m & np.uint32(MASK_BITS[name]))) for name in bit_names()}


# --------------------------------------------------------------------------- physics constants

PLANCK_EV_M = 1.239841984e-6  # h*c in eV*m: lambda[m] = PLANCK_EV_M / E[eV]
EV_J = 1.602176634e-19


def wavelength_from_kev(energy_kev: float) -> float:
    """X-ray wavelength in metres for a photon energy in keV."""
    return PLANCK_EV_M / (energy_kev * 1e3)


def kev_from_wavelength(wavelength_m: float) -> float:
    """Photon energy in keV for a wavelength in metres."""
    return PLANCK_EV_M / wavelength_m / 1e3


# --------------------------------------------------------------------------- containers


@dataclasses.dataclass
class Geometry:
    """Detector geometry in SI units; pixel sizes are (y, x); `centre` is the beam centre (row, col)."""

    wavelength: float | None = None
    distance: float | None = None
    pixel: tuple[float, float] | None = None
    centre: tuple[float, ...] | None = None
    q_pitch: tuple[float, ...] | None = None  # voxel pitch in q (1/m) for assembled volumes

    @property
    def energy_kev(self) -> float | None:
        return None if self.wavelength is None else kev_from_wavelength(self.wavelength)

    def is_complete(self) -> bool:
        return self.wavelength is not None and self.distance is not None and self.pixel is not None

    def q_step(self, ndim: int) -> tuple[float, ...] | None:
        """Reciprocal-space pitch per axis (1/m): p/(lambda D), or the stored voxel pitch."""
        if self.q_pitch is not None:
            return tuple(self.q_pitch)
        if not self.is_complete():
            return None
        py, px = self.pixel  # type: ignore[misc]
        step = (py / (self.wavelength * self.distance), px / (self.wavelength * self.distance))  # type: ignore[operator]
        return step if ndim == 2 else (step[0],) + step

    def real_pixel(self, shape: tuple[int, ...]) -> tuple[float, ...] | None:
        """Real-space pixel (m) of a reconstruction of an array of `shape`: 1/(N dq) per axis."""
        dq = self.q_step(len(shape))
        if dq is None:
            return None
        return tuple(1.0 / (n * d) for n, d in zip(shape, dq))


@dataclasses.dataclass
class Pattern:
    """A centred diffraction pattern (2D) or volume (3D) in photons, with its mask and geometry."""

    intensity: np.ndarray                    # float32, q = 0 at n // 2 of every axis
    mask: np.ndarray                         # uint32 CXI bits, 0 = good
    geometry: Geometry = dataclasses.field(default_factory=Geometry)
    provenance: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # e.g. per-voxel weight
    source: str = ""                         # where it was read from, for messages

    @property
    def measured(self) -> np.ndarray:
        return measured_from_mask(self.mask)


@dataclasses.dataclass
class Run:
    """One reconstruction: complex object, its support, metrics and parameters."""

    obj: np.ndarray                          # complex64, centred
    support: np.ndarray                      # bool
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    history: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Reconstruction:
    """A set of runs (phase) or one averaged object (average), with pixel size and provenance."""

    runs: list[Run]
    pixel_size: tuple[float, ...] | None = None  # real-space pixel (m) per axis
    geometry: Geometry = dataclasses.field(default_factory=Geometry)
    provenance: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. alignment table, modes
    source: str = ""
    # numeric datasets directly under /entry_1 (write_reconstruction(arrays=)): mode_K, run_intensity
    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
