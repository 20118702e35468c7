"""`make bench`: whole `cxdi phase` commands against the bare FFT pair, and their peak memory.

For each size (2D 512^2 with 8 runs and the default recipe; 3D 128^3 and 256^3, 1 run each, 256^3
with the default recipe scaled down to 90 iterations), in a fresh process as a user runs it (the
default options: positivity auto, shrink-wrap, free log-likelihood, metrics history, ML refinement):
- the bare in-place forward + inverse pair of `fft.FFTPair` on the same threads, timed in this
  process, interleaved with the commands (median of blocks before and after each command);
- the wall time of the whole command (start-up, reading, preparation, runs, writing) per
  iteration x run, and its ratio to the pair;
- the command's peak resident memory less that of the same command on a tiny input (the
  interpreter, numpy, pyFFTW, numba: fixed costs), as a multiple of one complex64 array of that size.
  The data (float32 photons + uint32 mask) are one such array.
Targets (issue 13): ratio <= 1.3; memory <= 8 arrays + the data (9).

`--steps` adds the per-step table (one ER/HIO/RAAR/ML iteration and a shrink-wrap update in process).

On a loaded machine multi-threaded FFTW times are noise: there, compare with --threads 1.

Measured (issue 13, `--threads 1`, on a 2-core host shared with other jobs at load 4-6: ratios move by
+-0.2 from one run to the next; ratio / RSS arrays):
- before: 512^2 x 8 runs 1.73 / 46; 128^3 1.92-2.07 / 10.2-11.4; 256^3 not run.
- after: 512^2 x 8 runs 1.72-1.88 / 43-44; 128^3 1.77-1.95 / 8.2 (with the default recipe's closing
  cut step: 11.2 before the ml work arrays were freed at the end of their block); 256^3 (90 it.)
  2.07-2.30 / 7.3-7.4. Per step (`--steps`): ER 1.06-1.15 pairs, HIO 1.07-1.23, ML 1.75-1.96,
  shrink-wrap 1.33-1.37 (512^2 3.6 on the busiest run).
- 512^3 by hand (hio**4,er**2,ml**2, 1 run, --threads 2; pair 2.8 s): 194 s wall, peak RSS 7.13 GiB =
  6.9 arrays over the tiny run. FFTW planning of the pair (FFTW_MEASURE, once per machine: wisdom)
  took 84 s before it. In process: read 13 s, prepare 51 s (oversampling estimate 26 s, free-pixel
  permutation 15 s), final metrics 14 s, positivity probe 2 of the 10 iterations.
After the fused PSF ML iteration (psf.ml_psf_iteration) and the big-volume preparation (`--threads 1`):
`--steps` ML+PSF 11.8 -> 5.0 pairs per iteration (512^2). 512^2 x 8 runs: ratio 1.95-2.00 (pair 1.39-1.43
ms) -> 1.43-1.48 (pair 1.83-2.04 ms: a busier machine, which flatters the ratio), RSS 43-44 -> 33.5-33.7
arrays; the same command's user CPU time, two invocations each alternated: 56.4-60.5 s -> 50.1-54.7 s.
512^3 `prepare` in process (a sigma-4 speckle volume): 33.1 -> 11.7-13.1 s (oversampling estimate 13.5
-> 0.8 s on the central 256^3, free islands 15.2 -> 1.0 s from drawn centres).
What keeps the ratio above 1.3 (cProfile): positivity auto's probe (1 run: the other variant to half
the search, 300 of 900 iterations: +33 %; 8 runs: 2 probes, +10 %); in 2D the PSF model of the final
ml block (`psf.ml_psf_iteration`, about 7 HIO iterations each before its passes were fused, about 4.5
after: six FFTs an iteration and 16 per width update); the element-wise passes (update, modulus:
0.06-0.15 of a pair), shrink-wrap (1.35 pairs every 20 iterations), the ml step (1.9 pairs),
start-up, reading and writing (2-4 s).

Usage: python -m tests.bench [--sizes 512x512,128x128x128,256x256x256] [--threads N] [--repeat R] [--steps]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: size -> (runs, recipe or None for the default)
CASES = {
    (512, 512): (8, None),
    (128, 128, 128): (1, None),
    (256, 256, 256): (1, "hio**60,er**20,ml**10"),
}


def _object(shape: tuple[int, ...], rng: np.random.Generator, extent: float = 0.25) -> np.ndarray:
    """A cluster of discs (balls) spanning about `extent` of the array, weak phase: oversampling ~4."""
    n = shape[0]
    grids = np.meshgrid(*[np.arange(m) - m // 2 for m in shape], indexing="ij", sparse=True)  # 512^3: no 3 GB grids
    obj = np.zeros(shape, np.float32)
    for _ in range(8):
        c = rng.uniform(-0.25 * extent * n, 0.25 * extent * n, len(shape))
        rad = rng.uniform(0.12 * extent * n, 0.25 * extent * n)
        r2 = sum((g - ci).astype(np.float32) ** 2 for g, ci in zip(grids, c))
        obj = np.maximum(obj, (r2 < rad * rad) * np.float32(rng.uniform(0.6, 1.0)))
    return (obj * np.exp(0.3j * obj)).astype(np.complex64)


def _pattern(shape: tuple[int, ...], seed: int = 0):
    from cxdi_cli import fft, model

    rng = np.random.default_rng(seed)
    intensity = np.abs(fft.cfftn(_object(shape, rng), norm="ortho")) ** 2
    intensity *= np.float32(1e3 * intensity.size / intensity.sum())
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij", sparse=True)
    r2 = sum(g.astype(np.float32) ** 2 for g in grids)
    mask = np.where(r2 < 9, model.MASK_BITS["beamstop"], 0).astype(np.uint32)
    data = rng.poisson(intensity).astype(np.float32)
    data[mask != 0] = 0
    return model.Pattern(intensity=data, mask=mask, source="bench")


def _write_input(shape: tuple[int, ...], folder: Path) -> Path:
    from cxdi_cli import io

    path = folder / f"in_{'x'.join(map(str, shape))}.cxi"
    io.write_pattern(str(path), _pattern(shape), io.make_step("bench"))
    return path


def _cxdi() -> str:
    exe = Path(sys.executable).with_name("cxdi")
    return str(exe) if exe.exists() else "cxdi"


def _run_command(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS bytes) of one command in its own process."""
    t = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {err}")
    return wall, usage.ru_maxrss * 1024.0


def _pair_ms(shape: tuple[int, ...], pair=None) -> float:
    """Median time (ms) of blocks of the bare unscaled in-place pair (zero buffer: values do not matter)."""
    from cxdi_cli import fft

    pair = pair or fft.FFTPair(shape)
    pair.buffer[...] = 0

    def block(n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            pair.forward(scale=False)
            pair.inverse(scale=False)
        return (time.perf_counter() - t) / n

    block(1)
    n = max(3, int(0.2 / block(2)))
    return statistics.median(block(n) for _ in range(5)) * 1e3


def bench_command(shape: tuple[int, ...], folder: Path, repeat: int, baseline: dict[int, float],
                  extra: list[str]) -> dict[str, float]:
    from cxdi_cli import fft
    from cxdi_cli.phasing import runs as phasing

    runs, recipe = CASES.get(shape, (1, None))
    recipe = recipe or phasing.DEFAULT_RECIPE
    iterations = phasing.count_iterations(phasing.parse_recipe(recipe)) * runs
    src = _write_input(shape, folder)
    args = [_cxdi(), "phase", str(src), "-o", str(folder / "out.cxi"), "--runs", str(runs), "--seed", "1",
            "--recipe", recipe, "--quiet", *extra]
    pair = fft.FFTPair(shape)
    pairs, walls, rss = [_pair_ms(shape, pair)], [], []
    for _ in range(repeat):
        wall, peak = _run_command(args)
        walls.append(wall)
        rss.append(peak)
        pairs.append(_pair_ms(shape, pair))
    p = statistics.median(pairs)
    from cxdi_cli import io  # noqa: PLC0415 - the recipe the command ran (the default one scales in 2D)
    ran = io.read_reconstruction(str(folder / "out.cxi")).runs[0].params.get("effective_recipe", recipe)
    iterations = phasing.count_iterations(phasing.parse_recipe(ran)) * runs
    per_it = statistics.median(walls) / iterations * 1e3
    array = float(np.prod(shape)) * 8
    return {"pair_ms": p, "iter_ms": per_it, "ratio": per_it / p, "wall_s": statistics.median(walls),
            "iterations": iterations, "rss_mb": max(rss) / 2**20,
            "rss_arrays": (max(rss) - baseline[len(shape)]) / array}


def baseline_rss(ndim: int, folder: Path, extra: list[str]) -> float:
    """Peak RSS of the command on a tiny input (the fixed cost of the interpreter and libraries)."""
    src = _write_input((48,) * ndim if ndim == 3 else (96, 96), folder)
    _, peak = _run_command([_cxdi(), "phase", str(src), "-o", str(folder / "tiny.cxi"), "--runs", "1",
                            "--seed", "1", "--recipe", "hio**20,er**10,ml**10", "--quiet", *extra])  # every kernel: compiled and cached here
    return peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="512x512,128x128x128,256x256x256", help="comma-separated sizes")
    ap.add_argument("--repeat", type=int, default=1, help="commands per size (median)")
    ap.add_argument("--steps", action="store_true", help="also the per-step table (in process)")
    ap.add_argument("--threads", type=int, default=None,
                    help="FFT threads of the pair and the commands [the commands' default: all cores]")
    args = ap.parse_args()
    from cxdi_cli import fft
    from cxdi_cli.phasing import algorithms  # noqa: F401  (compiles the kernels from the cache)

    fft.set_threads(args.threads)
    extra = [] if args.threads is None else ["--threads", str(args.threads)]

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",") if s]
    print(f"cxdi bench: whole `cxdi phase` commands, FFT threads {fft.threads()}, "
          f"complex64", flush=True)
    print(f"{'size':>12} {'runs x it':>9} {'pair ms':>8} {'cmd ms/it':>9} {'ratio':>6} {'wall s':>7} "
          f"{'RSS MB':>7} {'RSS arrays':>10}", flush=True)
    with tempfile.TemporaryDirectory(prefix="cxdi-bench-") as tmp:
        folder = Path(tmp)
        base = {nd: baseline_rss(nd, folder, extra) for nd in sorted({len(s) for s in sizes})}
        for shape in sizes:
            r = bench_command(shape, folder, args.repeat, base, extra)
            print(f"{'x'.join(map(str, shape)):>12} {r['iterations']:9d} {r['pair_ms']:8.2f} {r['iter_ms']:9.2f} "
                  f"{r['ratio']:6.2f} {r['wall_s']:7.1f} {r['rss_mb']:7.0f} {r['rss_arrays']:10.2f}", flush=True)
    print("targets: ratio <= 1.3 (whole command / iterations x runs x FFT pair); "
          "RSS arrays (peak RSS less the tiny-input run, in complex64 arrays) <= 8 + 1 for the data")
    if args.steps:
        steps_table()


# --------------------------------------------------------------------------- per-step table


def _median_time(fn, n: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t) / n)
    return statistics.median(times)


def steps_table(sizes=((512, 512), (128, 128, 128)), repeat: int = 7) -> None:
    """One iteration of each step and one shrink-wrap update, against the pair (in process)."""
    from cxdi_cli import fft
    from cxdi_cli.phasing import algorithms as alg
    from cxdi_cli.phasing import psf as psfm
    from cxdi_cli.phasing import runs as phasing
    from cxdi_cli.phasing.support import shrink_wrap

    print(f"\nper step, in process: {'size':>12} {'pair ms':>8} {'ER':>6} {'HIO':>6} {'RAAR':>6} {'ML':>6} {'ML+PSF':>6} "
          f"{'SW':>6}  (ratios to the pair; ML+PSF: the 2D final block's ml with `--psf auto`, width updates included)")
    for shape in sizes:
        pattern = _pattern(shape)
        options = phasing.Options(recipe="er**10", runs=1, seed=1, support_update=0, check_oversampling=False)
        problem = phasing.prepare(pattern, options)
        pair = fft.FFTPair(shape)
        pair.buffer[...] = 0
        zero_pair = lambda: (pair.forward(scale=False), pair.inverse(scale=False))  # noqa: E731
        zero_pair()
        n = max(5, int(0.15 / _median_time(zero_pair, 3, 1)))
        rho = np.fft.ifftshift(_object(shape, np.random.default_rng(1)))
        states = {}
        for name in ("er", "hio", "raar", "ml", "mlpsf"):
            p = fft.FFTPair(shape)
            p.buffer[...] = rho
            states[name] = alg.State(pair=p, rho=rho.copy(), amp=problem.amp, kind=problem.kind,
                                     support=problem.support.copy(), positivity=True, support_update=0,
                                     record_every=0)
        if len(shape) == 2:         # the PSF of `--psf auto` (runs.run_one): refined every psf_update steps
            states["mlpsf"].psf = psfm.Psf(shape, phasing.AUTO_PSF, phasing.Options().psf_update, "ml",
                                           off_below=phasing.AUTO_PSF_OFF)
        else:
            del states["mlpsf"]
        steps = {name: alg.build(name.replace("psf", ""), {}) for name in states}
        for name, step in steps.items():
            for _ in range(3):
                step(states[name])
        times: dict[str, list[float]] = {k: [] for k in ["pair", *steps]}
        for _ in range(repeat):
            times["pair"].append(_median_time(zero_pair, n, 1))
            for name, step in steps.items():
                st = states[name]
                times[name].append(_median_time(lambda: step(st), n, 1))
        ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        st = states["er"]
        st.support_update = 20
        ms["sw"] = _median_time(lambda: shrink_wrap(st), max(2, n // 5), repeat) * 1e3
        p = ms["pair"]
        print(f"{'':21} {'x'.join(map(str, shape)):>12} {p:8.2f} {ms['er'] / p:6.2f} {ms['hio'] / p:6.2f} "
              f"{ms['raar'] / p:6.2f} {ms['ml'] / p:6.2f} {ms['mlpsf'] / p if 'mlpsf' in ms else math.nan:6.2f} "
              f"{ms['sw'] / p:6.2f}", flush=True)


if __name__ == "__main__":
    main()
