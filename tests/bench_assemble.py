"""Benchmark of `cxdi assemble3d` (not a test): a 141-frame tilt series of N x N frames into an N^3 volume.

    .venv/bin/python -m tests.bench_assemble [N] [method]      # default N = 256, method = interp

Frames: Poisson counts of a smooth speckle-like pattern (timing does not depend on the content), written
as a LIMA stack; the whole file-to-volume path runs (two passes over the frames: sum/centre/mask, then
deposition) and the wall time and peak resident memory are printed.
"""
from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    method = sys.argv[2] if len(sys.argv) > 2 else "interp"
    from cxdi_cli import io
    from cxdi_cli.reduce.assembly import assemble_files

    rng = np.random.default_rng(0)
    yy, xx = np.indices((n, n)) - n / 2
    env = 1e6 / (1 + (xx ** 2 + yy ** 2) / 16) ** 2
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tilts.h5"
        frames = np.empty((141, n, n), np.uint32)
        for k in range(141):
            frames[k] = rng.poisson(env * (1 + np.cos(0.3 * xx + 0.1 * k) * np.cos(0.2 * yy)))
        io.write_lima(str(path), frames, compression=None)
        del frames
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t = time.perf_counter()
        res = assemble_files([str(path)], "-70:70:1", energy_kev=8.0, distance=0.08 * (n / 128) ** 2, pixel=75e-6,
                             centre=(n / 2 - 0.3, n / 2 + 0.2), method=method, auto_mask=False)
        dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    vol = res.pattern.intensity
    print(f"assemble3d {method}: 141 x {n}^2 frames -> {vol.shape[0]}^3 volume in {dt:.1f} s; peak RSS "
          f"{peak:.0f} MiB (before assembly {rss0:.0f} MiB; one float32 volume {vol.nbytes / 2**20:.0f} MiB); "
          f"measured {100 * res.stats['measured_fraction']:.1f} %")


if __name__ == "__main__":
    main()
