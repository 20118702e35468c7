"""`make bench`: phase-retrieval iteration time against the bare FFT pair, and peak memory.

For each size (2D 512^2, 3D 128^3; 256^3 with --big) and in one process, on the same threads:
- the bare in-place forward + inverse pair of `fft.FFTPair` (unscaled, as the loop runs it);
- one iteration of ER, HIO, RAAR and ML (median over blocks of iterations; shrink-wrap off);
- the shrink-wrap update on its own;
- peak memory (tracemalloc: numpy and the FFTW buffers) of a whole run (preparation excluded),
  as a multiple of one complex64 array of that size.
Targets (issue 4): HIO and RAAR <= 1.3x the pair, ER <= 1.2x, peak memory <= 8 arrays.

Usage: python -m tests.bench [--big] [--threads N] [--repeat R]
"""
from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np


def _object(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    r = np.sqrt(sum(g.astype(np.float32) ** 2 for g in grids))
    obj = (r < shape[0] / 8).astype(np.complex64)
    obj *= np.exp(1j * rng.uniform(0, 0.3, shape)).astype(np.complex64)
    return obj


def _problem(shape: tuple[int, ...]):
    from cxdi_cli import fft, model
    from cxdi_cli.phasing import runs as phasing

    rng = np.random.default_rng(0)
    obj = _object(shape, rng)
    intensity = np.abs(fft.cfftn(obj, norm="ortho")) ** 2
    intensity *= 1e9 / intensity.sum()
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    r = np.sqrt(sum(g.astype(np.float32) ** 2 for g in grids))
    mask = np.where(r < 3, model.MASK_BITS["beamstop"], 0).astype(np.uint32)
    pattern = model.Pattern(intensity=rng.poisson(intensity).astype(np.float32), mask=mask)
    options = phasing.Options(recipe="er**10", runs=1, seed=1, support_update=0, check_oversampling=False)
    return pattern, options, phasing.prepare(pattern, options, support=r < shape[0] / 7)


def _median_time(fn, n: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t) / n)
    return statistics.median(times)


def bench_size(shape: tuple[int, ...], repeat: int) -> dict[str, float]:
    from cxdi_cli.phasing import algorithms as alg
    from cxdi_cli import fft
    from cxdi_cli.phasing import runs as phasing

    pattern, options, problem = _problem(shape)
    size = int(np.prod(shape))
    pair = fft.FFTPair(shape)
    # the bare pair, unscaled as the loop runs it, on a zero buffer: FFTW's cost does not depend on
    # the values, and repeated unscaled pairs of real data would overflow to inf
    pair.buffer[...] = 0
    zero_pair = lambda: (pair.forward(scale=False), pair.inverse(scale=False))  # noqa: E731
    zero_pair()
    n = max(5, int(0.15 / _median_time(zero_pair, 3, 1)))  # iterations per timed block: ~0.15 s
    rho = np.fft.ifftshift(_object(shape, np.random.default_rng(1))).astype(np.complex64)
    pair2 = fft.FFTPair(shape)
    pair2.buffer[...] = rho
    state = alg.State(pair=pair2, rho=rho, amp=problem.amp, kind=problem.kind, support=problem.support.copy(),
                      positivity=True, support_update=0, record_every=0)
    # ML keeps its conjugate-gradient block going on a state of its own (Psi = F rho is carried)
    pair3 = fft.FFTPair(shape)
    pair3.buffer[...] = rho
    state_ml = alg.State(pair=pair3, rho=rho.copy(), amp=problem.amp, kind=problem.kind,
                         support=problem.support.copy(), support_update=0, record_every=0)
    steps = {name: alg.build(name, {}) for name in ("er", "hio", "raar", "ml")}
    states = {"er": state, "hio": state, "raar": state, "ml": state_ml}
    for name, step in steps.items():
        for _ in range(3):
            step(states[name])   # compile, and the first ML iteration computes Psi once
    # blocks of each measurement interleaved round-robin, so that a load from other processes
    # falls on all of them alike; the median block of each
    times: dict[str, list[float]] = {k: [] for k in ["pair", *steps]}
    for _ in range(repeat):
        times["pair"].append(_median_time(zero_pair, n, 1))
        for name, step in steps.items():
            st = states[name]
            times[name].append(_median_time(lambda: step(st), n, 1))
    out = {f"{k}_ms": statistics.median(v) * 1e3 for k, v in times.items()}
    from cxdi_cli.phasing.support import shrink_wrap

    state.support_update = 20
    out["shrinkwrap_ms"] = _median_time(lambda: shrink_wrap(state), max(2, n // 5), repeat) * 1e3
    del state, state_ml, pair, pair2, pair3
    # peak memory of whole runs (HIO/ER/shrink-wrap and ML), preparation excluded
    array_bytes = size * 8
    for label, recipe in (("peak_hio_er", "hio**20,er**10"), ("peak_ml", "er**5,ml**10")):
        opts = phasing.Options(recipe=recipe, runs=1, seed=1, support_update=10, check_oversampling=False)
        prob = phasing.prepare(pattern, opts, support=np.fft.fftshift(problem.support))
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        run = phasing.run_one(prob, opts, 0)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        del run
        # the problem's own arrays (amp float32, kind int8, support bool) exist before the run
        shared = prob.amp.nbytes + prob.kind.nbytes + prob.support.nbytes
        out[label] = (peak + shared) / array_bytes
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", action="store_true", help="also 256^3 (slow: minutes on 2 cores)")
    ap.add_argument("--threads", type=int, default=None, help="FFT threads [all cores]")
    ap.add_argument("--repeat", type=int, default=9, help="timed blocks per measurement (median)")
    args = ap.parse_args()
    from cxdi_cli.phasing import algorithms  # noqa: F401  (compiles the kernels from the cache)
    from cxdi_cli import fft  # noqa: F401  (compiles the kernels from the cache)

    fft.set_threads(args.threads)
    sizes = [(512, 512), (128, 128, 128)] + ([(256, 256, 256)] if args.big else [])
    print(f"cxdi bench: FFT threads {fft.threads()}, element-wise kernels numba (serial), complex64")
    print(f"{'size':>12} {'pair ms':>9} {'ER':>6} {'HIO':>6} {'RAAR':>6} {'ML':>6} {'SW':>6}  "
          f"{'peak HIO/ER':>11} {'peak ML':>8}   (ratios to the pair; peak in complex64 arrays)")
    for shape in sizes:
        r = bench_size(shape, args.repeat)
        p = r["pair_ms"]
        print(f"{'x'.join(map(str, shape)):>12} {p:9.2f} {r['er_ms'] / p:6.2f} {r['hio_ms'] / p:6.2f} "
              f"{r['raar_ms'] / p:6.2f} {r['ml_ms'] / p:6.2f} {r['shrinkwrap_ms'] / p:6.2f}  "
              f"{r['peak_hio_er']:11.2f} {r['peak_ml']:8.2f}", flush=True)
    print("targets: ER <= 1.2, HIO and RAAR <= 1.3 (x the FFT pair); ML runs 2 FFTs + 4 passes; peak <= 8 arrays")


if __name__ == "__main__":
    main()
