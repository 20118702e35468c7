"""Detector and sample geometry of DESIGN §4: crops around the beam, pixel q vectors, tilt rotations."""
from __future__ import annotations

import numpy as np

from cxdi_cli.fft import good_size
from cxdi_cli.model import DataError, UsageError


def centre_pixel(centre: tuple[float, float]) -> tuple[int, int]:
    """The detector pixel that becomes index N // 2 of a crop: the beam centre rounded."""
    return int(np.floor(centre[0] + 0.5)), int(np.floor(centre[1] + 0.5))


def default_crop(shape: tuple[int, int], centre: tuple[float, float]) -> int:
    """Largest FFT-friendly N (2^a 3^b 5^c 7^d) whose N×N window, with the rounded centre at N // 2,
    fits on the detector. This is the crop `preprocess` uses unless told otherwise."""
    ci, cj = centre_pixel(centre)
    ny, nx = shape
    # index N//2 sits on c: rows c - N//2 ... c - N//2 + N - 1 must lie in [0, n)
    best = 0
    for n in range(2, min(ny, nx) + 1):
        h = n // 2
        if ci - h >= 0 and ci - h + n <= ny and cj - h >= 0 and cj - h + n <= nx:
            best = n
    if best < 8:
        raise DataError(f"beam centre {centre} is too close to the detector edge for a crop")
    n = good_size(best)
    return n


def crop_window(centre: tuple[float, float], n: int) -> tuple[slice, slice]:
    """Row and column slices of the N×N window with the rounded centre at index N // 2."""
    ci, cj = centre_pixel(centre)
    return slice(ci - n // 2, ci - n // 2 + n), slice(cj - n // 2, cj - n // 2 + n)


def detector_xy(shape: tuple[int, int], centre: tuple[float, float],
                pixel: float | tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Lab (y, x) positions (m) of every detector pixel relative to the beam centre, each (ny, nx)."""
    py, px = (pixel, pixel) if np.isscalar(pixel) else pixel
    i = (np.arange(shape[0]) - centre[0]) * py
    j = (np.arange(shape[1]) - centre[1]) * px
    y, x = np.meshgrid(i, j, indexing="ij")
    return y, x


def pixel_q(shape: tuple[int, int], centre: tuple[float, float], distance: float,
            pixel: float | tuple[float, float], wavelength: float) -> np.ndarray:
    """Exact scattering vectors (spatial-frequency units, 1/m) of every detector pixel on the Ewald sphere.

    Returns an array (3, ny, nx) with components (qx, qy, qz): q = ((x, y, D)/r - (0, 0, 1)) / lambda,
    x = (j - cj) p_x, y = (i - ci) p_y, r = sqrt(x^2 + y^2 + D^2).
    """
    y, x = detector_xy(shape, centre, pixel)
    r = np.sqrt(x * x + y * y + distance * distance)
    return np.stack([x / r, y / r, distance / r - 1.0]) / wavelength


def solid_angle(shape: tuple[int, int], centre: tuple[float, float], distance: float,
                pixel: float | tuple[float, float]) -> np.ndarray:
    """Pixel solid angle relative to the central pixel: (D/r)^3 (= (1 + lambda q_z)^3)."""
    y, x = detector_xy(shape, centre, pixel)
    return (distance / np.sqrt(x * x + y * y + distance ** 2)) ** 3


def rotation(axis: str, angle_rad: float) -> np.ndarray:
    """Right-handed rotation by `angle_rad` about lab +y or +x, acting on (x, y, z) (DESIGN §4)."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    if axis == "y":
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    if axis == "x":
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    raise UsageError(f"tilt axis {axis!r}: expected x or y")


def rotation_y(omega_rad: float) -> np.ndarray:
    """R_y(omega) acting on (x, y, z), right-handed about lab +y (DESIGN §4)."""
    return rotation("y", omega_rad)
