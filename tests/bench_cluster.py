"""`make bench` (cluster part): phasing runs per minute in-process, on a Dask cluster of 1 and 2 local
workers, and in 2 local processes, and the overhead of the cluster path per run.

The same prepared 128^3 problem (Poisson photons of a few balls) and the same runs (`runs.run_one`, one FFT
thread per task everywhere) go through each executor of `cxdi_cli.executor`; the cluster is a
`distributed.LocalCluster` on 127.0.0.1 (one thread per worker process), started before the clock
starts (its start-up is printed apart). The overhead per run is (wall on 1 worker - wall in-process) /
runs: scattering the problem, shipping the task, bringing the run back; the same round trip is also
timed alone, with tasks that compute nothing and send back a run-sized array (not hidden by load noise). Goal (issue 14): under 5 % of a
run for runs of more than 10 s. On a machine shared with other work, the 2-worker figures say more
about the load than about Dask.

Usage: python -m tests.bench_cluster [--size 128] [--runs 4] [--recipe hio**80,er**20]
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time

os.environ["CXDI_THREADS"] = "1"          # every task, here and on the workers, on one FFT thread
os.environ.setdefault("CXDI_FFTW_PLANNER", "FFTW_ESTIMATE")


def _pattern(shape: tuple[int, ...], seed: int = 0):
    """Poisson photons of a few overlapping balls spanning about a quarter of the array (oversampling ~4)."""
    import numpy as np

    from cxdi_cli import fft, model

    rng = np.random.default_rng(seed)
    n = shape[0]
    grids = np.meshgrid(*[np.arange(m, dtype=np.float32) - m // 2 for m in shape], indexing="ij")
    obj = np.zeros(shape, np.float32)
    for _ in range(6):
        c = rng.uniform(-0.06 * n, 0.06 * n, len(shape))
        r = rng.uniform(0.03 * n, 0.06 * n)
        obj = np.maximum(obj, (sum((g - ci) ** 2 for g, ci in zip(grids, c)) < r * r) * np.float32(rng.uniform(0.6, 1)))
    intensity = np.abs(fft.cfftn(obj.astype(np.complex64), norm="ortho")) ** 2
    intensity *= np.float32(1e3 * intensity.size / intensity.sum())
    return model.Pattern(intensity=rng.poisson(intensity).astype(np.float32),
                         mask=np.zeros(shape, np.uint32), source="bench")


def _echo(problem, index, report):
    """A task that computes nothing and sends back an array the size of a run's object."""
    import numpy as np

    return np.zeros(problem.shape, np.complex64)


def _timed(executor, problem, options, n: int) -> tuple[float, list]:
    from cxdi_cli.phasing import runs as phasing

    t = time.perf_counter()
    out = executor.map(phasing.run_one, problem, [(options, k) for k in range(n)])
    wall = time.perf_counter() - t
    if out.failures:
        raise RuntimeError(f"{len(out.failures)} runs failed: {out.describe(min(out.failures))}")
    return wall, out.results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--recipe", default="hio**80,er**20")
    args = parser.parse_args()

    import numpy as np
    from distributed import LocalCluster

    from cxdi_cli import executor as ex, fft
    from cxdi_cli.phasing import recipe as rcp, runs as phasing

    logging.getLogger("distributed").setLevel(logging.ERROR)   # the cluster's own start/stop chatter

    fft.set_threads(1)
    shape = (args.size,) * 3
    options = phasing.Options(recipe=args.recipe, runs=args.runs, seed=1, positivity=True, threads=1)
    problem = phasing.prepare(_pattern(shape), options)
    mb = (problem.amp.nbytes + problem.kind.nbytes + problem.support.nbytes) / 2 ** 20
    print(f"cluster bench: {args.size}^3, recipe {args.recipe} ({problem.n_iterations} iterations), "
          f"{args.runs} runs, one FFT thread per task; shared problem {mb:.0f} MiB")
    # warm-up (not timed): one iteration of each step of the recipe, for the JIT kernels and FFT plans
    names = dict.fromkeys(step.name for step in rcp.flatten(problem.steps))
    warm_steps = phasing.parse_recipe(",".join(f"{name}**1" for name in names) + ",sup")
    warm = dataclasses.replace(problem, steps=warm_steps, n_iterations=phasing.count_iterations(warm_steps))
    phasing.run_one(warm, options, 0)
    rows = []
    wall, reference = _timed(ex.InProcess(), problem, options, args.runs)
    rows.append(("in-process", wall))
    for n_workers in (1, 2):
        t = time.perf_counter()
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster, ex.connect(cluster.scheduler_address) as dask:
            start = time.perf_counter() - t
            dask.map(phasing.run_one, warm, [(options, 0)] * 2 * n_workers)
            wall, results = _timed(dask, problem, options, args.runs)
            if n_workers == 1:    # the round trip alone: scatter, a task, a run-sized result back
                t = time.perf_counter()
                dask.map(_echo, problem, [(k,) for k in range(8)])
                round_trip = (time.perf_counter() - t) / 8
        worst = max(np.linalg.norm(a.obj - b.obj) / np.linalg.norm(b.obj) for a, b in zip(results, reference))
        rows.append((f"Dask, {n_workers} local worker{'s' if n_workers > 1 else ''}", wall))
        print(f"  (cluster of {n_workers} started in {start:.1f} s; runs differ from in-process by {worst:.1e})")
    with ex.LocalProcesses(2, threads=1) as pool:
        pool.map(phasing.run_one, warm, [(options, 0)] * 2)
        wall, _ = _timed(pool, problem, options, args.runs)
    rows.append(("2 local processes (--jobs 2)", wall))
    print(f"{'executor':32s} {'wall s':>8s} {'runs/min':>9s} {'s/run':>7s}")
    for name, wall in rows:
        print(f"{name:32s} {wall:8.1f} {60 * args.runs / wall:9.2f} {wall / args.runs:7.2f}")
    per_run = rows[0][1] / args.runs
    over = (rows[1][1] - rows[0][1]) / args.runs
    print(f"cluster overhead per run: {over:+.2f} s ({100 * over / per_run:+.1f} % of a {per_run:.1f} s run; "
          "goal < 5 % for runs over 10 s)")
    print(f"cluster round trip per task without computation (scatter, task, {args.size}^3 complex64 back): "
          f"{round_trip:.3f} s ({100 * round_trip / per_run:.2f} % of a run)")


if __name__ == "__main__":
    main()
