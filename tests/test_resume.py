"""phase keeps every finished run in a checkpoint beside the output and resumes from it: the resumed
result equals the uninterrupted one (same seed), and runs already finished are not computed again."""
import numpy as np
import pytest

from cxdi_cli import io
from cxdi_cli.executor import InProcess
from cxdi_cli.model import Pattern, UsageError
from cxdi_cli.phasing import resume
from cxdi_cli.phasing import runs as phasing


def _pattern(n=32, seed=0):
    rng = np.random.default_rng(seed)
    obj = np.zeros((n, n))
    obj[n // 2 - 4:n // 2 + 4, n // 2 - 3:n // 2 + 5] = rng.random((8, 8)) + 0.5
    inten = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(obj)))) ** 2
    inten = rng.poisson(inten / inten.max() * 1e5).astype(np.float32)
    return Pattern(inten, np.zeros(inten.shape, np.uint32))


def _options(generations=1, positivity=True):
    return phasing.Options(recipe="hio**20,er**10", runs=4, seed=7, positivity=positivity, threads=1,
                           generations=generations, report_every=10)


def _by_index(rec):
    return {r.params["run_index"]: r for r in rec.runs}


def _nrms(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


class Stop(Exception):
    pass


@pytest.mark.parametrize("generations,positivity", [(1, True), (1, "auto")])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, generations, positivity):
    pattern = _pattern()
    full = phasing.phase(pattern, _options(generations, positivity), executor=InProcess())
    ckpt = str(tmp_path / "runs.cxi.partial")
    fp = resume.fingerprint({"recipe": "hio**20,er**10", "seed": 7})
    finished = []

    def stop_after_two(ev):
        if ev.get("done"):
            finished.append(ev["run"])
            if len(finished) == 2:
                raise Stop

    with pytest.raises(Stop):
        with resume.Checkpointing(InProcess(), ckpt, fp) as ex:
            phasing.phase(pattern, _options(generations, positivity), executor=ex, on_progress=stop_after_two)
    done, info = resume.load(ckpt, fp)
    assert sorted(i for _, i in done) == sorted(finished[:2]) == info["finished_runs"]
    with resume.Checkpointing(InProcess(), ckpt, fp, done) as ex:
        again = phasing.phase(pattern, _options(generations, positivity), executor=ex)
        assert ex.reused == 2
    a, b = _by_index(full), _by_index(again)
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    for k in a:
        assert _nrms(b[k].obj, a[k].obj) < 1e-4
        np.testing.assert_array_equal(b[k].support, a[k].support)
        assert b[k].metrics["llk"] == pytest.approx(a[k].metrics["llk"], rel=1e-6)
    assert [r.params["run_index"] for r in again.runs] == [r.params["run_index"] for r in full.runs]
    with pytest.raises(UsageError, match="other data or options"):
        resume.load(ckpt, "another fingerprint")
    resume.discard(ckpt)
    assert resume.load(ckpt, fp) == ({}, {})


def test_sigterm_part_way_then_resume_equals_uninterrupted(tmp_path):
    """`cxdi phase` gets SIGTERM after 2 of 5 runs finished: exit 143, the finished runs stay in
    runs.cxi.partial and the message says so; `--resume` completes it (reusing them), removes the
    checkpoint, and every run equals the uninterrupted run's (same seed)."""
    import os
    import signal
    import subprocess
    import sys

    cxdi = os.path.join(os.path.dirname(sys.executable), "cxdi")
    io.write_pattern(str(tmp_path / "in.cxi"), _pattern(n=64), io.make_step("t"))
    args = ["phase", str(tmp_path / "in.cxi"), "--runs", "5", "--seed", "3", "--threads", "1", "--positivity",
            "--recipe", "hio**400,er**100", "--no-consensus"]
    whole = subprocess.run([cxdi, *args, "-o", str(tmp_path / "whole.cxi"), "-q"], capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "runs.cxi"
    proc = subprocess.Popen([cxdi, *args, "-o", str(out), "--progress-json"], stderr=subprocess.PIPE, text=True)
    finished = 0
    for line in proc.stderr:
        if '"done": true' in line:
            finished += 1
            if finished == 2:
                proc.send_signal(signal.SIGTERM)
                break
    rest = proc.stderr.read()
    assert proc.wait(60) == 143, rest
    last = rest.strip().splitlines()[-1]
    assert last.startswith("cxdi phase: interrupted by SIGTERM") and "runs.cxi not written" in last
    assert "finished run(s) kept in" in last and "--resume" in last
    assert not out.exists() and (tmp_path / "runs.cxi.partial").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.cxi", "runs.cxi.partial", "whole.cxi"]
    kept, _ = resume.load(str(tmp_path / "runs.cxi.partial"), None)
    assert len(kept) >= 2
    again = subprocess.run([cxdi, *args, "-o", str(out), "--resume"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"resuming from {len(kept)} finished run(s)" in again.stderr
    assert not (tmp_path / "runs.cxi.partial").exists()
    a, b = _by_index(io.read_reconstruction(str(tmp_path / "whole.cxi"))), _by_index(io.read_reconstruction(str(out)))
    assert sorted(a) == sorted(b) == [0, 1, 2, 3, 4]
    for k in a:
        assert _nrms(b[k].obj, a[k].obj) < 1e-4
    # resuming with other options is refused, and a resume without a checkpoint just runs
    (tmp_path / "runs.cxi.partial").write_bytes((tmp_path / "whole.cxi").read_bytes())
    r = subprocess.run([cxdi, *args[:-1], "--consensus", "-o", str(out), "--resume"], capture_output=True, text=True)
    assert r.returncode == 2 and "made from other data or options" in r.stderr


def test_a_second_pass_over_the_same_run_indices_is_computed_not_reused(tmp_path):
    """`phase` runs the starts twice on partially coherent data (the second pass deconvolved, with
    another PSF option): the checkpoint must answer a run only from the same pass. It had returned the
    first pass's runs for the second, so through the command the deconvolved search never ran."""
    from cxdi_cli.model import Run

    calls = []

    def task(shared, options, index, start, stop, on_event):
        calls.append((options.psf, index))
        return Run(obj=np.full((2, 2), index, np.complex64), support=np.ones((2, 2), bool),
                   metrics={"pass": options.psf}, params={"run_index": index})

    first, second = phasing.Options(psf="auto"), phasing.Options(psf="gaussian:2")
    ckpt = str(tmp_path / "runs.cxi.partial")
    with resume.Checkpointing(InProcess(), ckpt, "fp") as ex:
        a = ex.map(task, None, [(first, i, None, None) for i in range(3)])
        b = ex.map(task, None, [(second, i, None, None) for i in range(3)])
        again = ex.map(task, None, [(first, i, None, None) for i in range(3)])
    assert [r.metrics["pass"] for r in a.results] == ["auto"] * 3
    assert [r.metrics["pass"] for r in b.results] == ["gaussian:2"] * 3
    assert [r.metrics["pass"] for r in again.results] == ["auto"] * 3 and ex.reused == 3
    assert len(calls) == 6
    done, _ = resume.load(ckpt, "fp")
    assert len(done) == 6
