"""Time-resolved series: per-frame accuracy and warm- against cold-start convergence (run by hand).

    nice -n 19 .venv/bin/python -m tests.bench_series --size 160 --frames 20 --threads 1

Simulates `cxdi simulate series` (a disc growing in the tungsten letters), phases it with
`phasing.series.phase_series` warm (each frame from the previous one) and cold (each frame from a
random start, the full recipe), and prints per frame: the NRMSE of both against the frame's truth, the
final llk, and the iterations each needed to reach the same llk ((1 + CONVERGED) x the higher of the
two final llk values); then the median ratio cold / warm."""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time

import numpy as np


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--photons", type=float, default=1e8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=4, help="starts of the reference")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warm-recipe", default=None)
    ap.add_argument("--dilate", type=int, default=None)
    ap.add_argument("--no-cold", action="store_true")
    args = ap.parse_args(argv)
    from cxdi_cli import fft, io, registration
    from cxdi_cli.phasing import runs as rn, series as ps
    from cxdi_cli.sim.series import simulate_series

    fft.set_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        simulate_series(d, size=args.size, frames=args.frames, photons=args.photons, seed=args.seed)
        data = io.read_series(f"{d}/series.cxi")
        truth = io.read_reconstruction(f"{d}/truth.cxi")
    opts = rn.Options(runs=args.runs, seed=args.seed, threads=args.threads)
    kw = {}
    if args.warm_recipe:
        kw["warm_recipe"] = args.warm_recipe
    if args.dilate is not None:
        kw["dilate"] = args.dilate
    t0 = time.perf_counter()
    warm = ps.phase_series(data, opts, **kw)
    t_warm = time.perf_counter() - t0
    cold = None
    if not args.no_cold:
        t0 = time.perf_counter()
        cold = ps.phase_series(data, dataclasses.replace(opts), warm=False)
        t_cold = time.perf_counter() - t0
    rows = []
    for k in range(len(data)):
        w = warm.frames.runs[k]
        row = {"frame": k, "nrmse_warm": registration.nrms_error(w.obj, truth.runs[k].obj),
               "llk_warm": w.metrics["llk"], "llk_free_warm": w.metrics["llk_free"],
               "converged_warm": w.metrics["iterations_to_converge"]}
        if cold is not None:
            c = cold.frames.runs[k]
            target = (1 + ps.CONVERGED) * max(w.metrics["llk"], c.metrics["llk"])
            row.update(nrmse_cold=registration.nrms_error(c.obj, truth.runs[k].obj), llk_cold=c.metrics["llk"],
                       it_warm=ps.iterations_to(w.history, target), it_cold=ps.iterations_to(c.history, target))
        rows.append(row)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    ref_err = registration.nrms_error(warm.reference.runs[0].obj, np.mean([r.obj for r in truth.runs], axis=0))
    out = {"size": args.size, "frame_shape": list(data.intensity.shape[1:]), "frames": len(data),
           "photons_first_frame": args.photons, "reference_nrmse_vs_mean_truth": ref_err,
           "nrmse_warm_max": max(r["nrmse_warm"] for r in rows),
           "nrmse_warm_median": float(np.median([r["nrmse_warm"] for r in rows])),
           "warm_recipe": warm.frames.extra["series"]["frame_recipe"], "seconds_warm": round(t_warm, 1)}
    if cold is not None:
        ratios = [r["it_cold"] / r["it_warm"] for r in rows if r["it_warm"] and r["it_cold"]]
        out.update(nrmse_cold_max=max(r["nrmse_cold"] for r in rows),
                   nrmse_cold_median=float(np.median([r["nrmse_cold"] for r in rows])),
                   iteration_ratio_median=float(np.median(ratios)) if ratios else None,
                   iteration_ratio_min=float(min(ratios)) if ratios else None,
                   frames_compared=len(ratios), seconds_cold=round(t_cold, 1))
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
