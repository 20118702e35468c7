"""Analysis of reconstructions: selection, averaging and modes (`averaging`), and resolution from the
PRTF and from Fourier ring/shell correlation (`resolution`); registration lives in the base
(`cxdi_cli.registration`, re-exported as `align`).

May import the base only (model, fft, geometry, planning, sampling, io, registration).

Scripting: `average(rec_or_recs, best=10, ...)` -> Reconstruction, the average (`cxdi average`);
`resolve(average, data, half_sets=, split_runs=)` -> Resolution (`cxdi resolve-prt`).
"""
from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from cxdi_cli.model import Reconstruction

__all__ = ["average", "resolve"]


def average(recs: Reconstruction | Sequence[Any], **options: Any) -> Reconstruction:
    """Select, align and average runs: `averaging.average_runs` on one Reconstruction (the runs of
    `cxdi phase`) or a sequence of them (or of (name, Reconstruction) pairs)."""
    from cxdi_cli.analysis import averaging  # noqa: PLC0415
    from cxdi_cli.model import Reconstruction as _Rec  # noqa: PLC0415

    return averaging.average_runs([recs] if isinstance(recs, _Rec) else recs, **options)


def __getattr__(name: str):  # noqa: ANN202 - PEP 562
    if name == "resolve":
        return _importlib.import_module(f"{__name__}.resolution").resolve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
