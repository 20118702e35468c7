"""Reduction: detector frames to one calibrated, centred, masked pattern (`pattern`, `centring`,
`masking`) or a tilt series to a 3D reciprocal-space volume on the Ewald geometry (`assembly`).

May import the base only (model, fft, geometry, planning, sampling, io).

Scripting (each is what the command of the same job does, names imported on first use):
`preprocess(raw, energy_kev=, distance=, pixel=, ...)` -> result with `.pattern` (`cxdi preprocess`);
`mask(pattern, zeros=)` -> the pattern with the automatic mask bits added (`cxdi mask`);
`assemble(tilts, angles, energy_kev=, distance=, pixel=, ...)` -> result with `.pattern`, the volume
(`cxdi assemble3d`); `assemble_slice(tilts, angles, slice_angle=, ...)` -> (that result, the curvature-aware
central 2D slice with `.pattern`) (`cxdi assemble3d --slice`); `central_slice(volume)` (an assembled volume
already in hand); `find_centre(image, mask)`.
"""
import importlib as _importlib

#: name -> (module of this package, attribute)
_EXPORTS = {
    "preprocess": ("pattern", "preprocess"),
    "mask": ("centring", "mask_pattern"),
    "assemble": ("assembly", "assemble_files"),
    "find_centre": ("centring", "find_centre"),
    "assemble_slice": ("slicing", "slice_files"),
    "central_slice": ("slicing", "central_slice"),
}


def __getattr__(name: str):  # noqa: ANN202 - PEP 562: nothing heavy is imported with the package
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        return getattr(_importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
