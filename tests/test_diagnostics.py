"""Every row of the DIAGNOSTICS table of cxdi(1) (commands/_man.DIAGNOSTICS) is a test: the bad input,
the command line, the excerpt of the one error line and the exit status; no output is written."""
import shlex

import numpy as np
import pytest

from cxdi_cli import io
from cxdi_cli.commands._man import DIAGNOSTICS, FILES
from cxdi_cli.model import Pattern, Reconstruction, Run


def _speckles(n=64, frames=4, seed=0):
    rng = np.random.default_rng(seed)
    obj = np.zeros((n, n))
    obj[n // 2 - 4:n // 2 + 4, n // 2 - 4:n // 2 + 4] = rng.random((8, 8)) + 0.5
    inten = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(obj)))) ** 2
    return rng.poisson(inten / inten.max() * 2000, (frames, n, n)).astype(np.uint16)


def _edf(path, frames):
    import fabio.edfimage

    e = fabio.edfimage.EdfImage(data=frames[0])
    for f in frames[1:]:
        e.append_frame(data=f)
    e.write(str(path))


def _build(d):
    """Make the files the table names, under the names FILES gives."""
    import fabio.cbfimage
    import h5py
    import tifffile

    f = {k: d / v for k, v in FILES.items() if k != "geometry"}
    frames = _speckles()
    io.write_lima(str(f["raw"]), frames)
    (d / "notes.txt").write_text("beamtime notes\n")
    f["folder"].mkdir()
    pat = frames.sum(0).astype(np.float32)
    empty = np.zeros(pat.shape, np.uint32)
    io.write_pattern(str(f["pattern"]), Pattern(pat, empty), io.make_step("t"))
    bad = pat.copy()
    bad[3, 3] = np.nan
    io.write_pattern(str(f["nan_cxi"]), Pattern(bad, empty), io.make_step("t"))
    io.write_pattern(str(f["zero_cxi"]), Pattern(np.zeros_like(pat), empty), io.make_step("t"))
    obj = np.ones((8, 8), np.complex64)
    io.write_reconstruction(str(f["runs_cxi"]), Reconstruction(runs=[Run(obj=obj, support=obj.real > 0)]),
                            io.make_step("t"))
    io.write_lima(str(d / "plain.h5"), frames, compression=None)
    raw = (d / "plain.h5").read_bytes()
    f["cut_h5"].write_bytes(raw[: len(raw) // 2])
    small = frames[:, :16, :16]
    _edf(d / "full.edf", small)
    f["cut_edf"].write_bytes((d / "full.edf").read_bytes()[: 2 * 1024 + 512 + 100])
    fabio.cbfimage.CbfImage(data=frames[0].astype(np.int32)).write(str(d / "full.cbf"))
    cbf = (d / "full.cbf").read_bytes()
    mark = cbf.index(b"\x0c\x1a\x04\xd5")
    f["cut_cbf"].write_bytes(cbf[:500])
    f["short_cbf"].write_bytes(cbf[: mark + 100])
    flipped = bytearray(cbf)
    flipped[-40] ^= 0xFF
    f["flipped_cbf"].write_bytes(bytes(flipped))
    tifffile.imwrite(d / "full.tif", frames, photometric="minisblack")
    tif = (d / "full.tif").read_bytes()
    f["cut_tif"].write_bytes(tif[: int(len(tif) * 0.6)])
    np.save(d / "full.npy", frames)
    f["cut_npy"].write_bytes((d / "full.npy").read_bytes()[:-300])
    head = b"{\nDataType = UnsignedShort ;\nDim_1 = 2000000 ;\nDim_2 = 2000000 ;\n"
    f["huge_edf"].write_bytes(head + b" " * (510 - len(head)) + b"}\n" + bytes(64))
    with h5py.File(f["live_h5"], "w") as h:
        ds = h.create_dataset("/entry_0000/measurement/data", shape=(4, 64, 64), dtype=np.uint16, chunks=(1, 64, 64))
        ds[:2] = frames[:2]
    (d / "elsewhere").mkdir()
    with h5py.File(d / "elsewhere" / "x.h5", "w") as h:
        h["data"] = frames
    (d / "beamtime").mkdir()
    with h5py.File(f["link_h5"], "w") as h:
        h["/entry/data/data_000001"] = h5py.ExternalLink("/etc/passwd.h5", "/data")
    with h5py.File(f["ambiguous_h5"], "w") as h:
        h["/scan/a"] = frames
        h["/scan/b"] = frames
    tifffile.imwrite(f["a_tif"], np.ones((8, 8), np.uint16))
    tifffile.imwrite(f["b_tif"], np.ones((8, 9), np.uint16))
    f["bad_toml"].write_text("nonsense = 1\n")
    f["typo_toml"].write_text('detector = "many"\n')


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("diag")
    _build(d)
    return {k: (v if k == "geometry" else str(d / v)) for k, v in FILES.items()}


def test_the_table_is_long_enough_and_names_only_known_files():
    assert len(DIAGNOSTICS) >= 25
    assert len({row[0] for row in DIAGNOSTICS}) == len(DIAGNOSTICS)
    for what, argv, says, status in DIAGNOSTICS:
        argv.format(**FILES), says.format(**FILES)
        assert status in (1, 2), what


@pytest.mark.parametrize("what,argv,says,status", DIAGNOSTICS, ids=[row[0] for row in DIAGNOSTICS])
def test_diagnostic(cli, files, what, argv, says, status):
    import os

    args = shlex.split(argv.format(**files))
    out_before = os.path.exists(files["out"])
    r = cli(*args, "--threads", "1", input=b"" if args[-1] == "-" else None)
    assert r.exit_code == status, (what, r.exit_code, r.stderr)
    command = args[0]
    assert r.stderr.startswith(f"cxdi {command}: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert says.format(**files) in r.stderr, r.stderr
    assert r.stdout == ""
    assert os.path.exists(files["out"]) == out_before
