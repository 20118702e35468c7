"""Phasing, the numerical lens: projections composed into algorithms (`algorithms`), the recipe
language (`recipe`), the support (`support`) and many random starts with their metrics (`runs`).

May import the base only (model, fft, geometry, planning, sampling, io).

Scripting: `phase(pattern, runs=8, seed=1, recipe=..., ...)` -> Reconstruction, best run first (what
`cxdi phase` does; the keywords are the fields of `runs.Options`); `Options`, `DEFAULT_RECIPE`.
Importing the package loads no numpy (`cxdi --help` reads `defaults` through it).
"""
from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING, Any, Callable

from cxdi_cli.phasing.defaults import DEFAULT_RECIPE

if TYPE_CHECKING:
    import numpy as np

    from cxdi_cli.model import Pattern, Reconstruction

__all__ = ["DEFAULT_RECIPE", "Options", "phase"]


def phase(data: Pattern, *, runs: int = 5, seed: int | None = None, support: np.ndarray | None = None,
          jobs: int = 1, keep: int | None = None, on_progress: Callable[[dict[str, Any]], None] | None = None,
          executor: Any = None, **options: Any) -> Reconstruction:
    """Phase a pattern or volume from `runs` random starts: `runs.phase(data, runs.Options(runs=,
    seed=, **options))`, so every option of `cxdi phase` is a keyword here (recipe, positivity,
    support_threshold, ...). An unknown keyword is a UsageError naming the valid ones. `executor`
    (`cxdi_cli.executor`, e.g. `executor.connect("tcp://host:8786")`) runs the starts elsewhere."""
    from cxdi_cli.model import UsageError  # noqa: PLC0415
    from cxdi_cli.phasing import runs as _runs  # noqa: PLC0415

    try:
        opts = _runs.Options(runs=runs, seed=seed, **options)
    except TypeError:
        import dataclasses  # noqa: PLC0415

        known = sorted(f.name for f in dataclasses.fields(_runs.Options))
        unknown = sorted(set(options) - set(known))
        raise UsageError(f"phase: unknown option(s) {', '.join(unknown)}; valid: {', '.join(known)}") from None
    return _runs.phase(data, opts, support=support, jobs=jobs, keep=keep, on_progress=on_progress,
                       executor=executor)


def __getattr__(name: str):  # noqa: ANN202 - PEP 562
    if name == "Options":
        return _importlib.import_module(f"{__name__}.runs").Options
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
