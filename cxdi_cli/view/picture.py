"""The picture model every view draws from, and the primitives it is made of.

A `Picture` is a list of `Panel`s (RGB arrays ready to show, row 0 at the bottom, with axes, scale
bar and `ColourScale`) or of `CurveSet`s (1-D curves with thresholds). `figure` draws it with
matplotlib, `terminal` as text. Here also: the colours (intensity map, phase wheel, the mask colour),
`--slice` parsing, 1-2-5 scale-bar lengths and the area-average `resample`.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Sequence

import numpy as np

from cxdi_cli.model import UsageError

#: The colour of masked pixels in every diffraction picture (RGB, 0-255): pure magenta.
MASK_RGB: tuple[int, int, int] = (255, 0, 255)
#: Colour map of intensities; it never comes near MASK_RGB.
INTENSITY_CMAP = "viridis"

AXES = ("z", "y", "x")


# --------------------------------------------------------------------------- the picture model


@dataclasses.dataclass
class ColourScale:
    """A colour bar: label, value range and colour map ('hsv-phase' for the phase wheel)."""

    label: str
    vmin: float
    vmax: float
    cmap: str = INTENSITY_CMAP
    key: str = ""  # panels with the same key share one colour bar


@dataclasses.dataclass
class Panel:
    """One image ready to draw. `rgb` is (h, w, 3) float in [0, 1], row 0 at the BOTTOM (lab y up)."""

    rgb: np.ndarray
    title: str = ""
    extent: tuple[float, float, float, float] | None = None  # (x0, x1, y0, y1) in axis units
    xlabel: str = ""
    ylabel: str = ""
    brightness: np.ndarray | None = None   # (h, w) in [0, 1], for plain-text ramps
    masked: np.ndarray | None = None       # (h, w) bool: drawn in MASK_RGB
    scalebar: tuple[float, str] | None = None  # (length in pixels along x, label)
    pixel_aspect: float = 1.0              # height / width of one pixel on screen
    scale: ColourScale | None = None
    ticks: bool = True


@dataclasses.dataclass
class CurveSet:
    """Curves sharing an x axis; thresholds are (label, scalar or array over x)."""

    title: str
    x: np.ndarray
    xlabel: str
    curves: list[tuple[str, np.ndarray]]
    thresholds: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    ylabel: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Picture:
    """What `show` draws: a title, panels (images) or curve sets, and the number of grid columns."""

    kind: str                # 'pattern', 'volume', 'image', 'reconstruction', 'runs', 'curves'
    title: str
    panels: list[Panel] = dataclasses.field(default_factory=list)
    curves: list[CurveSet] = dataclasses.field(default_factory=list)
    ncols: int = 1
    notes: list[str] = dataclasses.field(default_factory=list)


# --------------------------------------------------------------------------- small helpers


def parse_slice(spec: str | None, ndim: int) -> tuple[int, int | None] | None:
    """Parse `--slice`: 'z', 'y', 'x' (central slice normal to that axis), 'z=12', '0=12' or '12'
    (index 12 along the first axis). Returns (axis, index or None for central); None if spec is None."""
    if spec is None:
        return None
    if ndim != 3:
        raise UsageError(f"--slice {spec}: slices apply to 3D volumes; this file holds {ndim}D data")
    text = spec.strip().lower()
    m = re.fullmatch(r"(?:([zyx012])\s*[=:])?\s*(-?\d+)?", text)
    if text in AXES:
        return AXES.index(text), None
    if not text or m is None or m.group(2) is None:
        raise UsageError(f"--slice {spec}: expected z, y, x, AXIS=INDEX (e.g. z=40) or an index along z")
    ax = m.group(1) or "z"
    axis = AXES.index(ax) if ax in AXES else int(ax)
    return axis, int(m.group(2))


def check_index(axis: int, index: int, shape: Sequence[int]) -> int:
    """`index` along `axis` of `shape`, negative counted from the end; a usage error naming --slice."""
    n = shape[axis]
    if not -n <= index < n:
        raise UsageError(f"--slice {AXES[axis]}={index}: index out of range for axis {AXES[axis]} of length {n}")
    return index % n


def plane_axes(axis: int) -> tuple[int, int]:
    """(vertical, horizontal) array axes of the plane normal to `axis` in a (z, y, x) volume."""
    rest = [a for a in range(3) if a != axis]
    return rest[0], rest[1]


def nice_length(target: float) -> float:
    """The 1-2-5 number nearest below `target` (for scale bars)."""
    if target <= 0:
        return 0.0
    exp = math.floor(math.log10(target))
    for m in (5, 2, 1):
        if m * 10 ** exp <= target:
            return m * 10 ** exp
    return 10 ** exp


def length_label(metres: float) -> str:
    """A scale-bar label: nm below 1 µm, µm above."""
    nm = metres * 1e9
    if nm >= 1000:
        um = nm / 1000
        return f"{um:g} µm"
    return f"{nm:g} nm"



def hsv_phase_rgb(hue_from_phase: np.ndarray, value: np.ndarray) -> np.ndarray:
    """RGB of full-saturation HSV colours: hue = phase/2π (phase 0 red), brightness = value."""
    h = np.mod(hue_from_phase / (2 * np.pi), 1.0)
    v = np.clip(value, 0.0, 1.0)
    i = np.floor(h * 6.0).astype(int) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p = np.zeros_like(v)
    q = v * (1 - f)
    t = v * f
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def phase_colours(n: int = 256) -> np.ndarray:
    """(n, 3) RGB of the phase wheel from -π to π, as drawn in reconstructions (for colour bars)."""
    ph = np.linspace(-np.pi, np.pi, n)
    return hsv_phase_rgb(ph, np.ones(n))


def cmap_rgb(values01: np.ndarray, cmap: str = INTENSITY_CMAP) -> np.ndarray:
    """RGB (..., 3) of `values01` in [0, 1] through the matplotlib colour map `cmap`."""
    from matplotlib import colormaps  # noqa: PLC0415 - lazy: `cxdi --help` must stay light

    return np.asarray(colormaps[cmap](np.clip(values01, 0.0, 1.0)))[..., :3]


def resample(arr: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Area-average `arr` (h, w[, c]) onto an (out_h, out_w) grid; repeats pixels when enlarging."""
    a = np.asarray(arr, np.float64)

    def bins(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
        starts = (np.arange(n_out) * n_in) // n_out
        return starts, np.maximum(np.append(starts[1:], n_in) - starts, 1)

    rs, rc = bins(a.shape[0], out_h)
    cs, cc = bins(a.shape[1], out_w)
    rows = np.add.reduceat(a, rs, axis=0) / rc.reshape((-1,) + (1,) * (a.ndim - 1))
    return np.add.reduceat(rows, cs, axis=1) / cc.reshape((1, -1) + (1,) * (a.ndim - 2))



__all__ = [
    "AXES", "INTENSITY_CMAP", "MASK_RGB", "ColourScale", "CurveSet", "Panel", "Picture", "check_index",
    "cmap_rgb", "hsv_phase_rgb", "length_label", "nice_length", "parse_slice", "phase_colours", "plane_axes",
    "resample",
]
