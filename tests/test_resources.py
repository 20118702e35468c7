"""Resource errors (file-size limit, full disk, read-only or vanished folder, not enough memory) give one
line and exit 1 with an earlier output untouched; concurrent writers of one output end with one whole file."""
import errno
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cxdi_cli import io
from cxdi_cli.model import Pattern

CXDI = os.path.join(os.path.dirname(sys.executable), "cxdi")


def _raw(path, n=256, frames=2, seed=0):
    rng = np.random.default_rng(seed)
    io.write_lima(str(path), rng.poisson(50, (frames, n, n)).astype(np.uint32))


def _preprocess(tmp_path, out):
    return ["preprocess", str(tmp_path / "raw.h5"), "-o", str(out), "--energy", "8", "--distance", "1",
            "--pixel", "75e-6", "--threads", "1", "--no-auto-mask"]


def test_file_size_limit_while_writing(tmp_path):
    """RLIMIT_FSIZE in a child process: one line naming the output and the cause, exit 1, the earlier
    output byte for byte as it was, no temporary file."""
    import resource

    _raw(tmp_path / "raw.h5")
    out = tmp_path / "out.cxi"
    out.write_bytes(b"an earlier output")

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000))

    r = subprocess.run([CXDI] + _preprocess(tmp_path, out), preexec_fn=limit, capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert r.stderr == (f"cxdi preprocess: error: {out}: cannot write (file too large (file-size limit reached)); "
                        f"nothing written, an existing {out} is unchanged\n")
    assert out.read_bytes() == b"an earlier output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.cxi", "raw.h5"]


@pytest.mark.parametrize("code,said", [(errno.ENOSPC, "no space left on the device"),
                                       (errno.EROFS, "read-only file system"),
                                       (errno.EDQUOT, "disk quota exceeded")])
def test_full_disk_or_read_only_folder(cli, tmp_path, monkeypatch, code, said):
    """The operating system's refusal (simulated: root ignores permissions) becomes one line, exit 1."""
    import tempfile

    _raw(tmp_path / "raw.h5", n=64)
    out = tmp_path / "out.cxi"
    out.write_bytes(b"earlier")

    def refuse(*a, **k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    r = cli(*_preprocess(tmp_path, out))
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert f"{out}: cannot write ({said})" in r.stderr
    assert out.read_bytes() == b"earlier"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_for_real(cli, tmp_path):
    _raw(tmp_path / "raw.h5", n=64)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = cli(*_preprocess(tmp_path, ro / "out.cxi"))
    finally:
        ro.chmod(0o755)
    assert r.exit_code == 1 and "cannot write (permission denied)" in r.stderr


def test_output_folder_vanishes_while_writing(cli, tmp_path, monkeypatch):
    from cxdi_cli.io import cxi

    _raw(tmp_path / "raw.h5", n=64)
    (tmp_path / "sub").mkdir()
    real = cxi._write_provenance

    def vanish(f, chain):
        real(f, chain)
        shutil.rmtree(tmp_path / "sub")

    monkeypatch.setattr(cxi, "_write_provenance", vanish)
    r = cli(*_preprocess(tmp_path, tmp_path / "sub" / "out.cxi"))
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "out.cxi: cannot write (the folder vanished)" in r.stderr


def test_memory_estimate_before_the_big_allocation(cli, tmp_path):
    """A volume far beyond the machine's memory is refused before anything is allocated, naming the
    figure and the option that reduces it."""
    _raw(tmp_path / "raw.h5", n=32, frames=3)
    r = cli("assemble3d", tmp_path / "raw.h5", "-o", tmp_path / "v.cxi", "--energy", 8, "--distance", 1,
            "--pixel", 75e-6, "--angles", "0,1,2", "--size", 100000, "--threads", 1)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "a 100000^3 volume needs about 24.9 PiB of memory" in r.stderr and "reduce --size" in r.stderr
    _raw(tmp_path / "raw.h5", n=256)
    r = cli(*_preprocess(tmp_path, tmp_path / "p.cxi"), "--pad", 10 ** 7)
    assert r.exit_code == 1 and "reduce --pad" in r.stderr and not (tmp_path / "p.cxi").exists()


WRITER = """
import sys, numpy as np
from cxdi_cli import io
from cxdi_cli.model import Pattern
value = float(sys.argv[2])
data = np.full((256, 256), value, np.float32)
data[0, 0] = 1 + value  # photons differ from file to file: a mix would show
for _ in range(12):
    io.write_pattern(sys.argv[1], Pattern(data, np.zeros(data.shape, np.uint32)), io.make_step("w" + sys.argv[2]))
"""


def test_two_writers_of_one_output_end_with_one_whole_file(tmp_path):
    """Two processes write the same output 12 times each at once: unique temporary names and an atomic
    rename leave one complete, valid file, wholly one writer's, and no temporary file."""
    dest = tmp_path / "same.cxi"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(dest), str(v)], stderr=subprocess.PIPE)
             for v in (3.0, 7.0)]
    seen = []
    while any(p.poll() is None for p in procs):
        if dest.exists():  # a reader meanwhile only ever sees whole files
            p = io.read_pattern(str(dest))
            seen.append(float(p.intensity[1, 1]))
    for p in procs:
        assert p.wait(120) == 0, p.stderr.read()
    final = io.read_pattern(str(dest))
    v = float(final.intensity[1, 1])
    assert v in (3.0, 7.0)
    np.testing.assert_array_equal(final.intensity[1:, 1:], v)
    assert final.intensity[0, 0] == 1 + v and final.provenance[-1]["command"] == f"w{v}"
    assert set(seen) <= {3.0, 7.0}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["same.cxi"]
