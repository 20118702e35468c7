"""cxdi: coherent X-ray diffraction imaging from the command line (library part).

The library does the numerics and the file formats; it never prints, never exits and never imports
the command-line packages. See DESIGN.md for the layout. For scripts and notebooks, the stages are
`from cxdi_cli import reduce, phasing, analysis` (README, "Scripting"); importing the package loads
nothing else: a stage is imported when it is first named (PEP 562).
"""
import importlib as _importlib

__version__ = "0.1.0"

#: Subpackages and modules reachable as attributes (`cxdi_cli.reduce`), imported on first use.
_LAZY = ("reduce", "phasing", "analysis", "view", "sim", "io", "model", "fft", "geometry", "planning",
         "sampling", "registration")


def __getattr__(name: str):  # noqa: ANN202 - PEP 562
    if name in _LAZY:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
