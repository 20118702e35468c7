"""What every simulated experiment shares: its output folder, its seed check and its experiment.json."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from cxdi_cli.model import InputError, UsageError


def seed_value(seed: int) -> int:
    """The seed as an int; a UsageError unless it is a non-negative integer."""
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise UsageError(f"--seed {seed}: must be a non-negative integer")
    return int(seed)


def out_dir(out_dir: str | os.PathLike) -> Path:
    """The output folder, created if missing; errors name the option."""
    d = Path(out_dir)
    if str(out_dir) in ("", "-"):
        raise UsageError("-o: give an output folder (simulate writes several files)")
    if d.exists() and not d.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out_dir}: cannot create the folder ({exc.strerror})") from None
    return d


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as indented JSON, atomically."""
    from cxdi_cli import io  # noqa: PLC0415

    with io.atomic_output(str(path), ".json") as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1) + "\n")
