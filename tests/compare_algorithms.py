"""Which phasing algorithm when? case x algorithm x (NRMSE best / median start, converged starts, time).

The measuring ground of issue 15. For each case it runs, in fresh processes, what a user types:

    cxdi simulate KIND -o DIR --size N OPTIONS        (once per case; truth.cxi is the known object)
    cxdi assemble3d ... (3D) / cxdi preprocess ... (2D)   (the command experiment.json gives)
    cxdi mask PATTERN -o data.cxi
    cxdi phase data.cxi -o runs_ALG.cxi --runs R --seed S --recipe RECIPE   (per algorithm)

and prints one row per (case, algorithm): NRMSE of the best and the median start after alignment
(`tests.robustness.nrmse`), starts within 1.5x of the case's best start over every algorithm
("converged"), and the wall time of `phase` (positivity probes included).

Cases (3D: `particle3d`, small; 2D: the plain simulations):
  starved3d   photon-starved tilt series (few photons per frame, +-70 deg)
  wedge60     missing wedge, tilts +-60 deg          wedge75   tilts +-75 deg
  beamstop3d  a beamstop 2.5 speckles in radius
  tungsten, cells  the 2D simulations (defaults), as a check that nothing 2D gets worse

Algorithms: one recipe each with the same budget (about 900 iterations, the last 300 ER + ML as in
the default recipe), so that only the search part differs; `default` passes no --recipe (what a user
gets: in 3D the default recipe closes with the low-signal cut-off `cut`; --short does not halve it).

Usage: python -m tests.compare_algorithms [--cases starved3d,wedge60] [--algorithms hio,gps]
       [--starts 3] [--size3d 48] [--size2d 128] [--short] [--workdir DIR] [--json]
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.robustness import CONVERGED_FACTOR, _cxdi, _options, _run, nrmse

#: name -> (simulate kind, simulate options, 3D?, description)
CASES: dict[str, tuple[str, dict[str, Any], bool, str]] = {
    "starved3d": ("particle3d", {"photons": 3e4, "angles": "-70:70:2"}, True, "photon-starved tilt series"),
    "wedge60": ("particle3d", {"angles": "-60:60:2"}, True, "missing wedge, tilts +-60 deg"),
    "wedge75": ("particle3d", {"angles": "-75:75:2"}, True, "missing wedge, tilts +-75 deg"),
    "beamstop3d": ("particle3d", {"beamstop": 2.5, "angles": "-70:70:2"}, True, "beamstop 2.5 speckles"),
    "tungsten": ("tungsten", {}, False, "2D tungsten letters"),
    "cells": ("cells", {}, False, "2D weak-phase cells"),
}

#: name -> recipe (same budget: 600 search iterations, then ER 200 and ML 100); "default": no --recipe,
#: what a user gets (in 3D the default recipe closes with the low-signal cut-off, problem.CUT_3D)
ALGORITHMS: dict[str, str] = {
    "default": "",
    "hio": "hio(beta=0.9)**600,er**200,ml**100",  # not the default text: no 3D cut
    "raar": "raar**600,er**200,ml**100",
    "gps": "gps**600,er**200,ml**100",
    "oss": "oss(n=600)**600,er**200,ml**100",
    "cpower": "cpower**600,er**200,ml**100",
    "tv": "hio**400,tv**200,er**200,ml**100",
}


def prepare(case: str, size: int, root: Path, threads: int) -> tuple[Path, Path]:
    """Simulate the case (kept when already there), assemble/preprocess and mask it: (folder, data.cxi)."""
    kind, opts, _, _ = CASES[case]
    d = root / f"{case}_{size}"
    data = d / "data.cxi"
    if data.exists():
        return d, data
    d.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    _run(_cxdi() + ["simulate", kind, "-o", str(d / "sim"), "--size", str(size), "--seed", "0", "-q"]
         + _options(opts), root, log)
    exp = json.loads((d / "sim" / "experiment.json").read_text())
    pre = shlex.split(exp["preprocess"])
    _run(_cxdi() + pre[1:] + ["--threads", str(threads), "-q"], d / "sim", log)
    out = pre[pre.index("-o") + 1]
    _run(_cxdi() + ["mask", str((d / "sim" / out).resolve()), "-o", str(data), "-q"], d, log)
    (d / "commands.txt").write_text("\n".join(log) + "\n")
    return d, data


def recipe(algorithm: str, short: bool = False) -> str:
    """The algorithm's recipe; `short`: every block count halved (a quick table on a loaded machine)."""
    text = ALGORITHMS[algorithm]
    if not short or not text:
        return text
    import re  # noqa: PLC0415
    return re.sub(r"(\*\*|n=)(\d+)", lambda m: m.group(1) + str(max(1, int(m.group(2)) // 2)), text)


def measure(case: str, algorithm: str, d: Path, data: Path, starts: int, seed: int, threads: int,
            short: bool = False) -> dict[str, Any]:
    """Phase `data` with one algorithm's recipe; the NRMSE of every start."""
    from cxdi_cli import io  # noqa: PLC0415

    runs = d / f"runs_{algorithm}.cxi"
    log: list[str] = []
    text = recipe(algorithm, short)
    wall = _run(_cxdi() + ["phase", str(data), "-o", str(runs), "--runs", str(starts), "--seed", str(seed),
                           "--threads", str(threads), "-q"] + (["--recipe", text] if text else []), d, log)
    truth = io.read_reconstruction(str(d / "sim" / "truth.cxi")).runs[0].obj
    errs = [nrmse(r.obj, truth) for r in io.read_reconstruction(str(runs)).runs]
    return {"case": case, "algorithm": algorithm, "recipe": text or "(default)", "nrmse_starts": errs,
            "nrmse_best": min(errs), "nrmse_median": float(statistics.median(errs)), "wall_s": wall}


def table(rows: list[dict[str, Any]]) -> str:
    """Rows as text; `converged` counts starts within CONVERGED_FACTOR of the case's best over all algorithms."""
    best = {}
    for r in rows:
        best[r["case"]] = min(best.get(r["case"], 1e9), r["nrmse_best"])
    head = f"{'case':11} {'algorithm':9} {'best':>6} {'median':>7} {'conv':>5} {'phase s':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        conv = sum(e <= CONVERGED_FACTOR * best[r["case"]] for e in r["nrmse_starts"])
        lines.append(f"{r['case']:11} {r['algorithm']:9} {r['nrmse_best']:6.3f} {r['nrmse_median']:7.3f} "
                     f"{conv:>2}/{len(r['nrmse_starts']):<2} {r['wall_s']:8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS))
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--size3d", type=int, default=48)
    ap.add_argument("--size2d", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--short", action="store_true", help="halve every block of the recipes")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    root = Path(a.workdir or tempfile.mkdtemp(prefix="cxdi-compare-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in a.cases.split(","):
        size = a.size3d if CASES[case][2] else a.size2d
        d, data = prepare(case, size, root, a.threads)
        for alg in a.algorithms.split(","):
            try:
                rows.append(measure(case, alg, d, data, a.starts, a.seed, a.threads, a.short))
            except Exception as exc:  # noqa: BLE001 - one failed combination is a row, not the end
                print(f"{case} {alg}: {exc}", file=sys.stderr)
                continue
            print(table(rows).splitlines()[-1], file=sys.stderr, flush=True)
    print(json.dumps(rows, indent=1) if a.json else table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
