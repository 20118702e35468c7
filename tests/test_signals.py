"""Interrupted work: SIGINT, SIGTERM or SIGHUP during a command leave no file under the output's name and
no temporary file, exit 128 + signal, and say what was interrupted."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cxdi_cli import io
from cxdi_cli.model import Pattern

CXDI = os.path.join(os.path.dirname(sys.executable), "cxdi")


def _pattern(path, n=48, seed=0):
    rng = np.random.default_rng(seed)
    obj = np.zeros((n, n))
    obj[n // 2 - 6:n // 2 + 6, n // 2 - 5:n // 2 + 7] = rng.random((12, 12)) + 0.5
    inten = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(obj)))) ** 2
    inten = rng.poisson(inten / inten.max() * 1e5).astype(np.float32)
    io.write_pattern(str(path), Pattern(inten, np.zeros(inten.shape, np.uint32)), io.make_step("test"))


def _leftovers(folder, name):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}.") or p.name == name)


@pytest.mark.parametrize("signame,status", [("SIGTERM", 143), ("SIGINT", 130), ("SIGHUP", 129)])
def test_signal_while_writing_leaves_nothing(cli, tmp_path, monkeypatch, signame, status):
    """The signal arrives while the output's temporary file is being written (deterministic: sent from
    inside the writer): exit 128 + signal, one line naming it, no output, no temporary file, and an
    earlier output of the same name untouched."""
    from cxdi_cli.io import cxi

    _pattern(tmp_path / "in.cxi")
    (tmp_path / "out.cxi").write_bytes(b"earlier output")
    real = cxi._write_provenance

    def interrupted(f, chain):
        real(f, chain)
        os.kill(os.getpid(), getattr(signal, signame))
        time.sleep(1)  # the handler runs at the next bytecode; never reached

    monkeypatch.setattr(cxi, "_write_provenance", interrupted)
    r = cli("mask", tmp_path / "in.cxi", "-o", tmp_path / "out.cxi", "--threads", 1)
    assert r.exit_code == status, r.stderr
    assert r.stderr.startswith(f"cxdi mask: interrupted by {signame}") and r.stderr.count("\n") == 1
    assert "out.cxi not written" in r.stderr
    assert (tmp_path / "out.cxi").read_bytes() == b"earlier output"
    assert _leftovers(tmp_path, "out.cxi") == ["out.cxi"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored after the command


def test_sigterm_part_way_through_phase_in_a_real_process(tmp_path):
    """A real `cxdi phase` process gets SIGTERM after its first progress line: exit 143, the message
    names what it was doing, and no output or temporary file remains."""
    _pattern(tmp_path / "in.cxi")
    proc = subprocess.Popen([CXDI, "phase", str(tmp_path / "in.cxi"), "-o", str(tmp_path / "runs.cxi"),
                             "--runs", "50", "--seed", "1", "--threads", "1", "--progress-json",
                             "--recipe", "hio**400,er**100"],
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    first = proc.stderr.readline()
    assert first, "phase printed no progress"
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(60) == 143, rest
    last = [line for line in rest.splitlines() if not line.startswith("{")]
    assert last and last[-1].startswith("cxdi phase: interrupted by SIGTERM")
    assert "runs.cxi not written" in last[-1]
    assert _leftovers(tmp_path, "runs.cxi") == []


def test_stdin_spool_removed_after_the_command(cli, tmp_path):
    import tempfile

    _pattern(tmp_path / "in.cxi")
    before = {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("cxdi-stdin-")}
    r = cli("info", "-", input=(tmp_path / "in.cxi").read_bytes())
    assert r.exit_code == 0, r.stderr
    after = {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("cxdi-stdin-")}
    assert after <= before
