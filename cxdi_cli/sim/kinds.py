"""The registry of simulated experiments: `simulate(kind, out_dir, **options)` runs one of `KINDS`.

The 2D kinds live in `pattern2d`, the 3D tilt series in `tilt3d`; this module is the only one that
knows both, so neither imports the other."""
from __future__ import annotations

import inspect
import os
from typing import Any, Callable

from cxdi_cli.model import UsageError
from cxdi_cli.sim.pattern2d import simulate_cells, simulate_tungsten


def _particle3d(out_dir: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """The 3D tilt series (cxdi_cli.sim.tilt3d, imported only when asked for)."""
    from cxdi_cli.sim.tilt3d import simulate_particle3d  # noqa: PLC0415

    _check_options("particle3d", simulate_particle3d, options)
    return simulate_particle3d(out_dir, **options)


def _series(out_dir: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """The time-resolved 2D series (cxdi_cli.sim.series, imported only when asked for)."""
    from cxdi_cli.sim.series import simulate_series  # noqa: PLC0415

    _check_options("series", simulate_series, options)
    return simulate_series(out_dir, **options)


def _tumbling(out_dir: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """Random orientations of the 3D particle (cxdi_cli.sim.tumbling, imported only when asked for)."""
    from cxdi_cli.sim.tumbling import simulate_tumbling  # noqa: PLC0415

    _check_options("tumbling", simulate_tumbling, options)
    return simulate_tumbling(out_dir, **options)


def _thick(out_dir: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """A tilt series of a specimen deeper than the depth of field (cxdi_cli.sim.thick, imported when asked for)."""
    from cxdi_cli.sim.thick import simulate_thick  # noqa: PLC0415

    _check_options("thick", simulate_thick, options)
    return simulate_thick(out_dir, **options)


KINDS: dict[str, Callable[..., dict[str, Any]]] = {
    "tungsten": simulate_tungsten,
    "cells": simulate_cells,
    "particle3d": _particle3d,
    "series": _series,
    "tumbling": _tumbling,
    "thick": _thick,
}


def _check_options(kind: str, fn: Callable, options: dict[str, Any]) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in options if k not in params]
    if unknown:
        names = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise UsageError(f"{names}: not an option of kind {kind}")


def simulate(kind: str, out_dir: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """Run the simulation `kind` into folder `out_dir` (created if missing); options left None take the
    kind's defaults. Returns the experiment dict (also written as experiment.json)."""
    if kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    options = {k: v for k, v in options.items() if v is not None}
    fn = KINDS[kind]
    _check_options(kind, fn, options)
    return fn(out_dir, **options)
