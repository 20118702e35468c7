"""The same command, seed and machine give bitwise the same reconstruction in two separate processes.

FFTW_MEASURE (the default planner) may pick another algorithm in each process, changing the rounding
that hundreds of chaotic iterations amplify; plans come from the on-disk wisdom instead (fft._fftw).
The test runs the real planner against a fresh wisdom file: the first process measures and saves,
the second plans from the file."""
import os
import subprocess
import sys

import numpy as np

from cxdi_cli import fft, io
from test_phasing import synthetic


def _phase(src, out, env):
    cmd = [sys.executable, "-m", "cxdi_cli.commands.main", "phase", str(src), "-o", str(out), "--runs", "2",
           "--seed", "7", "--recipe", "hio**60,er**20,ml**10", "--quiet"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return io.read_reconstruction(str(out))


def test_two_processes_give_bitwise_the_same_runs(tmp_path):
    pattern, _ = synthetic(n=64, seed=3)
    src = tmp_path / "in.cxi"
    io.write_pattern(str(src), pattern, io.make_step("test"))
    env = {**os.environ, "CXDI_WISDOM": str(tmp_path / "wisdom.json"), "CXDI_FFTW_PLANNER": "FFTW_MEASURE"}
    env.pop("CXDI_NO_WISDOM", None)
    a = _phase(src, tmp_path / "a.cxi", env)
    assert (tmp_path / "wisdom.json").exists()   # the first process saved its plans
    b = _phase(src, tmp_path / "b.cxi", env)
    assert len(a.runs) == len(b.runs) == 2
    for ra, rb in zip(a.runs, b.runs):
        assert ra.params["run_index"] == rb.params["run_index"]
        assert np.array_equal(ra.obj.view(np.uint8), rb.obj.view(np.uint8))
        assert np.array_equal(ra.support, rb.support)
        for key in ("llk", "llk_free", "chi2", "support_size"):
            assert ra.metrics[key] == rb.metrics[key]


def test_threads_per_job_never_oversubscribes():
    cores = fft.cores()
    for jobs in (1, 2, 3, cores, 4 * cores):
        t = fft.threads_per_job(jobs)
        assert t >= 1 and (jobs * t <= cores or t == 1)
        assert fft.threads_per_job(jobs, requested=1) == 1
        assert fft.threads_per_job(jobs, requested=10 * cores) == t
