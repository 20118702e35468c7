"""`make robust`: the measuring ground of issue 12 -- does phasing hold on hard data?

For each hard case of `cxdi_cli.sim.hard2d.HARD_CASES` it runs, in fresh processes, what a user types:

    cxdi simulate KIND -o DIR --size N OPTIONS      (once per case; truth.cxi is the known object)
    cxdi preprocess ... (2D) / cxdi assemble3d ... (3D; the command experiment.json gives)
    cxdi mask PATTERN -o data.cxi
    cxdi phase data.cxi -o runs_S.cxi --runs R --seed S [--phase-opts]   (per seed S)
    cxdi average runs_S.cxi -o avg_S.cxi

and prints one row per (case, seed): starts converged (NRMSE within 1.5x of the best start's; and
below the fixed --bar), the NRMSE (`cxdi_cli.analysis.align.nrms_error`, after alignment) of /entry_1,
of the best and of the median start and of the average, and the wall time of phase + average.

Usage: python -m tests.robustness [--cases gap,psf] [--starts 8] [--size N] [--seeds 1,2]
       [--phase-opts "--support-smooth 2,0.5"] [--full] [--json] [--workdir DIR] [--cxdi "CMD"]

--cxdi runs another build, e.g. a snapshot of an older commit for a before/after table:
  git archive REV | tar -x -C /tmp/old && ln -s ../commands /tmp/old/cxdi_cli/commands
  python -m tests.robustness --cxdi "env PYTHONPATH=/tmp/old .venv/bin/python -m cxdi_cli.commands.main"
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Default detector sizes: quick (a few minutes for the family on 2 cores) and --full (as in issue 12).
SIZE_2D, SIZE_2D_FULL = 256, 512
SIZE_3D, SIZE_3D_FULL = 64, 100
#: Starts of the 3D case (each one costs ~ a 2D case's eight).
STARTS_3D = 4
#: The plain simulations, for reference (not in the default list): `--cases tungsten,cells`.
PLAIN_CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "tungsten": ("tungsten", {}, "tungsten letters, the simulator's defaults"),
    "cells": ("cells", {}, "weak-phase cells, the simulator's defaults"),
}


def cases() -> dict[str, tuple[str, dict[str, Any], str]]:
    """Every case by name: the hard family, then the plain simulations."""
    from cxdi_cli.sim.hard2d import HARD_CASES  # noqa: PLC0415

    return {**HARD_CASES, **PLAIN_CASES}


#: A start within this factor of the best start's NRMSE has converged.
CONVERGED_FACTOR = 1.5


#: The cxdi command line every step runs (set by --cxdi).
CXDI: list[str] = []


def _cxdi() -> list[str]:
    """The cxdi command: --cxdi, else the one of this interpreter's environment."""
    if CXDI:
        return list(CXDI)
    exe = Path(sys.executable).with_name("cxdi")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cxdi_cli.commands.main"]


def _run(args: list[str], cwd: Path, log: list[str]) -> float:
    """Run one cxdi command; its wall time. A failure raises with the command's stderr."""
    t0 = time.perf_counter()
    p = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    log.append(" ".join(shlex.quote(a) for a in args))
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])}... exited {p.returncode}: {p.stderr.strip()[-400:]}")
    return dt


def _options(opts: dict[str, Any]) -> list[str]:
    """`cxdi simulate` options from a HARD_CASES dict."""
    out: list[str] = []
    for k, v in opts.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            out.append(flag)
        elif v is not False and v is not None:
            out += [flag, str(v)]
    return out


def _crop_like(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The centred part of `a` of `shape` (each axis cut around index n // 2)."""
    sl = tuple(slice(n // 2 - m // 2, n // 2 - m // 2 + m) for n, m in zip(a.shape, shape))
    return a[sl]


def nrmse(obj: np.ndarray, truth: np.ndarray) -> float:
    """NRMSE of `obj` to `truth` after alignment (translation, twin, phase ramp, global phase); arrays of
    different crops are compared on their common centred part."""
    from cxdi_cli.analysis.align import nrms_error  # noqa: PLC0415

    if obj.shape != truth.shape:
        common = tuple(min(a, b) for a, b in zip(obj.shape, truth.shape))
        obj, truth = _crop_like(obj, common), _crop_like(truth, common)
    return nrms_error(obj, truth)


def mask_score(sim: Path, data: Path) -> dict[str, Any]:
    """How the mask of `data` (preprocess + mask) compares with the simulation's true mask (expected.cxi,
    in the preprocess window): false hot/dead flags on genuine pixels, broken pixels missed, planted
    zeros found and zero flags on genuine pixels. 3D volumes: no pixel of particle3d is broken, so every
    hot/dead voxel among the measured ones is a false flag."""
    from cxdi_cli import io  # noqa: PLC0415
    from cxdi_cli.model import MASK_BITS as B, measured_from_mask  # noqa: PLC0415

    p = io.read_pattern(str(data))
    m = np.asarray(p.mask, np.uint32)
    hotdead = (m & np.uint32(B["hot"] | B["dead"])) != 0
    if m.ndim == 3 or not (sim / "expected.cxi").exists():
        genuine = (m & np.uint32(B["unmeasured"])) == 0
        return {"genuine": int(genuine.sum()), "false_hot_dead": int((hotdead & genuine).sum()),
                "false_hot_dead_pct": 100.0 * float((hotdead & genuine).sum()) / max(1, int(genuine.sum()))}
    start = next(s["parameters"]["window_start_px"] for s in p.provenance
                 if "window_start_px" in s.get("parameters", {}))
    n0, n1 = m.shape
    t = np.asarray(io.read_pattern(str(sim / "expected.cxi")).mask, np.uint32)[start[0]:start[0] + n0,
                                                                               start[1]:start[1] + n1]
    genuine = t == 0
    broken = (t & np.uint32(B["hot"] | B["dead"])) != 0
    if json.loads((sim / "experiment.json").read_text()).get("processed"):
        broken &= np.asarray(p.intensity) == 0  # the earlier program zeroed them, or filled them from the mate
    planted = (t & np.uint32(B["zero"])) != 0
    zero = (m & np.uint32(B["zero"])) != 0
    good = measured_from_mask(m)
    return {"genuine": int(genuine.sum()), "false_hot_dead": int((hotdead & genuine).sum()),
            "false_hot_dead_pct": 100.0 * float((hotdead & genuine).sum()) / max(1, int(genuine.sum())),
            "broken": int(broken.sum()), "broken_missed": int((broken & good).sum()),
            "zeros_planted": int(planted.sum()),
            "zeros_found": float(zero[planted].mean()) if planted.any() else None,
            "false_zero": int((zero & genuine).sum()),
            "masked_genuine_pct": 100.0 * float((~good & genuine).sum()) / max(1, int(genuine.sum()))}


#: Extra `cxdi simulate` options for every case (set by --sim-opts).
SIM_OPTS: list[str] = []


def prepare(case: str, size: int, root: Path, threads: int) -> tuple[Path, Path, dict[str, Any], float]:
    """Simulate the case (kept when already there) and preprocess + mask it: (folder, data.cxi,
    experiment dict, wall time)."""
    kind, opts, _ = cases()[case]
    d = root / f"{case}_{size}"
    data = d / "data.cxi"
    expf = d / "sim" / "experiment.json"
    log: list[str] = []
    t = 0.0
    if not (data.exists() and expf.exists()):
        extra = [] if kind == "particle3d" else SIM_OPTS
        t += _run(_cxdi() + ["simulate", kind, "-o", str(d / "sim"), "--size", str(size), "--seed", "0", "-q"]
                  + _options(opts) + extra, root, log)
        exp = json.loads(expf.read_text())
        pre = shlex.split(exp["preprocess"])
        assert pre[0] == "cxdi"
        t += _run(_cxdi() + pre[1:] + ["--threads", str(threads), "-q"], d / "sim", log)
        out = pre[pre.index("-o") + 1]
        t += _run(_cxdi() + ["mask", str((d / "sim" / out).resolve()), "-o", str(data), "-q"], d, log)
        (d / "commands.txt").write_text("\n".join(log) + "\n")
    return d, data, json.loads(expf.read_text()), t


def measure(case: str, seed: int, starts: int, size: int, root: Path, threads: int, phase_opts: list[str],
            bar: float) -> dict[str, Any]:
    """One (case, seed): phase + average, and the NRMSE of every start, /entry_1 and the average."""
    from cxdi_cli import io  # noqa: PLC0415

    d, data, exp, t_prep = prepare(case, size, root, threads)
    tag = f"s{seed}"
    runs, avg = d / f"runs_{tag}.cxi", d / f"avg_{tag}.cxi"
    log: list[str] = []
    t_phase = _run(_cxdi() + ["phase", str(data), "-o", str(runs), "--runs", str(starts), "--seed", str(seed),
                              "--threads", str(threads), "-q"] + phase_opts, d, log)
    t_avg = _run(_cxdi() + ["average", str(runs), "-o", str(avg), "--threads", str(threads), "-q"], d, log)
    truth = io.read_reconstruction(str(d / "sim" / "truth.cxi")).runs[0].obj
    rec = io.read_reconstruction(str(runs))
    errs = [nrmse(r.obj, truth) for r in rec.runs]
    best = min(errs)
    e_avg = nrmse(io.read_reconstruction(str(avg)).runs[0].obj, truth)
    return {
        "case": case, "seed": seed, "size": size, "starts": len(errs),
        "converged": sum(e <= CONVERGED_FACTOR * best for e in errs),
        "below_bar": sum(e < bar for e in errs), "bar": bar,
        "nrmse_entry_1": errs[0], "nrmse_best": best, "nrmse_median": float(statistics.median(errs)),
        "nrmse_average": e_avg, "nrmse_starts": errs,
        "failed_flags": sum(bool(r.metrics.get("failed")) for r in rec.runs),
        "wall_s": t_phase + t_avg, "prepare_s": t_prep, "phase_opts": " ".join(phase_opts),
        "commands": log,
        "psf_fwhm_px": (exp.get("psf") or {}).get("fwhm_px"),
        "mask": mask_score(d / "sim", data),
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a fixed-width text table."""
    head = (f"{'case':10} {'seed':>4} {'conv':>5} {'<bar':>5} {'entry_1':>8} {'best':>7} {'median':>7} "
            f"{'average':>8} {'wall s':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']:10} {r['seed']:>4}  error: {r['error']}")
            continue
        lines.append(f"{r['case']:10} {r['seed']:>4} {r['converged']:>2}/{r['starts']:<2} "
                     f"{r['below_bar']:>2}/{r['starts']:<2} {r['nrmse_entry_1']:8.3f} {r['nrmse_best']:7.3f} "
                     f"{r['nrmse_median']:7.3f} {r['nrmse_average']:8.3f} {r['wall_s']:7.1f}")
    return "\n".join(lines)


def mask_table(rows: list[dict[str, Any]], header: bool = True) -> str:
    """Mask rows (mask_score) as text."""
    head = f"{'case':10} {'size':>5} {'false hot/dead':>16} {'broken missed':>14} {'zeros found':>12} {'false zero':>11}"
    lines = [head, "-" * len(head)] if header else []
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']:10} {r['size']:>5}  error: {r['error']}")
            continue
        zf = "-" if r.get("zeros_found") is None else f"{100 * r['zeros_found']:.1f} %"
        lines.append(f"{r['case']:10} {r['size']:>5} {r['false_hot_dead']:>5} ({r['false_hot_dead_pct']:.4f} %) "
                     f"{str(r.get('broken_missed', '-')) + '/' + str(r.get('broken', '-')):>14} {zf:>12} "
                     f"{str(r.get('false_zero', '-')):>11}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from cxdi_cli.sim.hard2d import HARD_CASES  # noqa: PLC0415

    ALL = cases()  # noqa: N806
    ap = argparse.ArgumentParser(prog="python -m tests.robustness", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(HARD_CASES),
                    help=f"comma list of {', '.join(ALL)} [default: the hard family, all but "
                         f"{', '.join(PLAIN_CASES)}]")
    ap.add_argument("--starts", type=int, default=8, help="phase --runs (3D: at most %d) [8]" % STARTS_3D)
    ap.add_argument("--size", type=int, default=None,
                    help=f"detector pixels across of the 2D cases [{SIZE_2D}; --full: {SIZE_2D_FULL}]")
    ap.add_argument("--size3d", type=int, default=None,
                    help=f"frame pixels across of the 3D case [{SIZE_3D}; --full: {SIZE_3D_FULL}]")
    ap.add_argument("--full", action="store_true", help="the sizes of issue 12 (512^2 detectors, 96^3 volumes)")
    ap.add_argument("--seeds", default="1", help="comma list of phase --seed values [1]")
    ap.add_argument("--phase-opts", default="", help="extra options for every `cxdi phase`, one string")
    ap.add_argument("--sim-opts", default="", help="extra options for every 2D `cxdi simulate`, one string "
                    "(e.g. '--pixel-samples 1'); use a new --workdir, simulations there are reused")
    ap.add_argument("--bar", type=float, default=0.2, help="fixed NRMSE bar for 'below bar' [0.2]")
    ap.add_argument("--threads", type=int, default=1, help="--threads of every command [1]")
    ap.add_argument("--workdir", default=None, help="keep the files here (simulations are reused) [temporary]")
    ap.add_argument("--cxdi", default="", help="the cxdi command to run, one string [this environment's cxdi]")
    ap.add_argument("--masks", action="store_true", help="only simulate, preprocess and mask; print how the mask "
                    "compares with the simulation's truth (false hot/dead flags, planted zeros found)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON (schema cxdi.robustness/1)")
    a = ap.parse_args(argv)
    names = [c.strip() for c in a.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in ALL]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    CXDI[:] = shlex.split(a.cxdi)
    SIM_OPTS[:] = shlex.split(a.sim_opts)
    phase_opts = shlex.split(a.phase_opts)
    tmp = None
    if a.workdir:
        root = Path(a.workdir).resolve()
        root.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="cxdi-robust-")
        root = Path(tmp.name)
    os.environ.setdefault("CXDI_WISDOM", str(root / "wisdom.json"))
    rows: list[dict[str, Any]] = []
    try:
        for case in names:
            is3d = ALL[case][0] == "particle3d"
            size = (a.size3d or (SIZE_3D_FULL if a.full else SIZE_3D)) if is3d else \
                (a.size or (SIZE_2D_FULL if a.full else SIZE_2D))
            starts = min(a.starts, STARTS_3D) if is3d else a.starts
            if a.masks:
                try:
                    d, data, _, _ = prepare(case, size, root, a.threads)
                    row = {"case": case, "size": size, **mask_score(d / "sim", data)}
                except RuntimeError as exc:
                    row = {"case": case, "size": size, "error": str(exc)}
                rows.append(row)
                if not a.json:
                    print(mask_table([row], header=len(rows) == 1), flush=True)
                continue
            for seed in seeds:
                try:
                    row = measure(case, seed, starts, size, root, a.threads, phase_opts, a.bar)
                except RuntimeError as exc:
                    row = {"case": case, "seed": seed, "size": size, "error": str(exc)}
                rows.append(row)
                if not a.json:
                    print(table([row]).splitlines()[-1] if len(rows) > 1 else table([row]), flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if a.json:
        print(json.dumps({"schema": "cxdi.robustness/1", "phase_opts": a.phase_opts, "rows": rows}, indent=1))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
