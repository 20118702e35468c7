"""Raw frame readers: LIMA, Eiger/NeXus master files with external links and filters, TIFF stacks and
lists, EDF/CBF; finding the frames; block-by-block reading; one-line errors for broken inputs."""
import os

import numpy as np
import pytest

from cxdi_cli import io
from cxdi_cli.io import frames as fr
from cxdi_cli.model import DataError, InputError, UsageError


def _stack(n=7, shape=(16, 20), dtype=np.uint32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.poisson(5.0, (n,) + shape).astype(dtype)


def _read_all(specs, **kw):
    with fr.open_frames(specs) as st:
        return np.concatenate([b for _, b in st.blocks(**kw)])


def test_lima_stack_found_and_read_in_blocks(tmp_path):
    data = _stack()
    p = tmp_path / "lima.h5"
    io.write_lima(str(p), data)
    with fr.open_frames(str(p)) as st:
        assert st.n_frames == 7 and st.shape == (16, 20) and st.dtype == np.uint32
        assert st.parts[0].name.endswith("/entry_0000/measurement/data")
        starts, sizes = zip(*[(i, len(b)) for i, b in st.blocks(block=3)])
    assert starts == (0, 3, 6) and sizes == (3, 3, 1)
    np.testing.assert_array_equal(_read_all(str(p), block=3), data)
    np.testing.assert_array_equal(_read_all(str(p), frames=fr.parse_frames("2:5")), data[2:5])
    np.testing.assert_array_equal(_read_all(str(p), frames=fr.parse_frames("1:7:3")), data[1:7:3])


def test_block_size_is_bounded_by_bytes(tmp_path, monkeypatch):
    data = _stack(n=10, shape=(32, 32))
    p = tmp_path / "lima.h5"
    io.write_lima(str(p), data)
    monkeypatch.setattr(fr, "BLOCK_BYTES", 3 * 32 * 32 * 4)  # three frames per block
    with fr.open_frames(str(p)) as st:
        assert max(len(b) for _, b in st.blocks()) == 3


def test_lima_instrument_only_and_explicit_path(tmp_path):
    import h5py

    data = _stack(n=3)
    p = tmp_path / "inst.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("/entry_0000/instrument/eiger/data", data=data)
        f.create_dataset("/entry_0000/instrument/eiger/temperature", data=np.zeros(3))
    np.testing.assert_array_equal(_read_all(str(p)), data)
    np.testing.assert_array_equal(_read_all(f"{p}::/entry_0000/instrument/eiger/data"), data)
    # a group given with :: is searched like a file
    np.testing.assert_array_equal(_read_all(f"{p}::/entry_0000/instrument"), data)


def test_eiger_master_with_external_links_and_bitshuffle(tmp_path):
    import h5py
    import hdf5plugin

    data = _stack(n=9, dtype=np.uint16, seed=3)
    names = []
    for k, sl in enumerate((slice(0, 4), slice(4, 9)), start=1):
        name = f"scan_data_{k:06d}.h5"
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("/entry/data/data", data=data[sl], chunks=(1, 16, 20),
                             **hdf5plugin.Bitshuffle(cname="lz4"))
        names.append(name)
    master = tmp_path / "scan_master.h5"
    with h5py.File(master, "w") as f:
        for k, name in enumerate(names, start=1):
            f[f"/entry/data/data_{k:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
        det = f.create_group("/entry/instrument/detector")
        det.create_dataset("x_pixel_size", data=75e-6).attrs["units"] = "m"
        det.create_dataset("detector_distance", data=5.0).attrs["units"] = "m"
        det.create_dataset("detectorSpecific/countrate_correction_count_cutoff", data=60000)
        f.create_dataset("/entry/instrument/beam/incident_wavelength", data=1.5498).attrs["units"] = "angstrom"
    with fr.open_frames(str(master)) as st:
        assert st.n_frames == 9 and len(st.parts) == 2 and st.saturation == 60000
        # a block spanning two files is read file by file
        np.testing.assert_array_equal(st.read(2, 7), data[2:7])
    np.testing.assert_array_equal(_read_all(str(master)), data)
    book = fr.logbook(str(master))
    assert book["pixel_m"] == pytest.approx(75e-6) and book["distance_m"] == pytest.approx(5.0)
    assert book["energy_kev"] == pytest.approx(8.0, rel=1e-3)
    os.unlink(tmp_path / names[1])
    with pytest.raises(InputError, match="missing data file"):
        fr.open_frames(str(master))


def test_ambiguous_file_lists_candidates_and_wrong_path_lists_contents(tmp_path):
    import h5py

    p = tmp_path / "two.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("/a/frames", data=_stack(n=2))
        f.create_dataset("/b/other", data=_stack(n=2))
    with pytest.raises(InputError, match="candidates: /a/frames, /b/other"):
        fr.open_frames(str(p))
    with pytest.raises(InputError, match=r"no dataset /nope \(the file holds: /a/frames, /b/other\)"):
        fr.open_frames(f"{p}::/nope")


def test_tiff_multipage_list_glob_folder(tmp_path):
    import tifffile

    data = _stack(n=6, dtype=np.uint16, seed=1)
    tifffile.imwrite(tmp_path / "stack.tif", data)                      # contiguous: memory-mapped
    tifffile.imwrite(tmp_path / "stackz.tif", data, compression="zlib")  # compressed: page by page
    np.testing.assert_array_equal(_read_all(str(tmp_path / "stack.tif"), block=4), data)
    np.testing.assert_array_equal(_read_all(str(tmp_path / "stackz.tif"), block=4), data)
    d = tmp_path / "frames"
    d.mkdir()
    for k, f in enumerate(data):
        tifffile.imwrite(d / f"frame_{k:04d}.tif", f)
    files = [str(d / f"frame_{k:04d}.tif") for k in range(6)]
    np.testing.assert_array_equal(_read_all(files), data)
    np.testing.assert_array_equal(_read_all(str(d / "frame_*.tif")), data)
    np.testing.assert_array_equal(_read_all(str(d)), data)
    with fr.open_frames(str(d / "frame_*.tif")) as st:
        assert st.saturation is None and st.dtype == np.uint16 and len(st.parts) == 6


def test_edf_and_cbf_written_by_fabio(tmp_path):
    import fabio.cbfimage
    import fabio.edfimage

    img = _stack(n=1, dtype=np.int32)[0]
    fabio.edfimage.EdfImage(data=img).write(str(tmp_path / "a.edf"))
    fabio.cbfimage.CbfImage(data=img).write(str(tmp_path / "a.cbf"))
    for name in ("a.edf", "a.cbf"):
        got = _read_all(str(tmp_path / name))
        assert got.shape == (1, 16, 20)
        np.testing.assert_array_equal(got[0], img)
        with fr.open_frames(str(tmp_path / name)) as st:
            assert st.dtype == np.int32 and st.shape == (16, 20)
    # a multi-frame EDF: count, shape and type from the header, frames decoded when read
    e = fabio.edfimage.EdfImage(data=img.astype(np.uint16))
    for k in (1, 2):
        e.append_frame(data=(img + k).astype(np.uint16))
    e.write(str(tmp_path / "m.edf"))
    with fr.open_frames(str(tmp_path / "m.edf")) as st:
        assert st.n_frames == 3 and st.dtype == np.uint16
        (_, block), = list(st.blocks(slice(1, 3)))
    assert block.dtype == np.uint16
    np.testing.assert_array_equal(block, np.stack([img + 1, img + 2]).astype(np.uint16))


def test_broken_inputs_raise_one_line_errors(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((8, 8), np.uint16))
    tifffile.imwrite(tmp_path / "b.tif", np.zeros((8, 9), np.uint16))
    with pytest.raises(DataError, match="frames of different shapes.*8x8.*8x9"):
        fr.open_frames([str(tmp_path / "a.tif"), str(tmp_path / "b.tif")])
    p = tmp_path / "lima.h5"
    io.write_lima(str(p), _stack(n=20, shape=(64, 64)), compression=None)
    raw = p.read_bytes()
    (tmp_path / "cut.h5").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="truncated"):
        _read_all(str(tmp_path / "cut.h5"))
    tifffile.imwrite(tmp_path / "big.tif", _stack(n=4, shape=(64, 64), dtype=np.uint16), photometric="minisblack")
    raw = (tmp_path / "big.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="cut.tif"):
        _read_all(str(tmp_path / "cut.tif"))
    with pytest.raises(InputError, match="no file matches"):
        fr.open_frames(str(tmp_path / "nothing_*.tif"))
    (tmp_path / "junk.bin").write_bytes(b"hello world")
    with pytest.raises(InputError, match="unknown file format"):
        fr.open_frames(str(tmp_path / "junk.bin"))


def test_parse_frames():
    assert fr.parse_frames(None) is None and fr.parse_frames(":") is None
    assert fr.parse_frames("3:10") == slice(3, 10)
    assert fr.parse_frames("5") == slice(5, 6)
    assert fr.parse_frames(":4") == slice(None, 4)
    for bad in ("a:b", "1:2:3:4", "0:10:0"):
        with pytest.raises(UsageError):
            fr.parse_frames(bad)


# --------------------------------------------------------------------------- readers that never lie


def _multi_edf(path, n=7, shape=(32, 32), seed=0):
    import fabio.edfimage

    frames = _stack(n=n, shape=shape, dtype=np.uint16, seed=seed)
    e = fabio.edfimage.EdfImage(data=frames[0])
    for f in frames[1:]:
        e.append_frame(data=f)
    e.write(str(path))
    return frames


def test_truncated_multiframe_edf_is_an_error_not_fewer_frames(tmp_path, cli):
    """Regression: a 7-frame EDF cut at 35 % gave 2 whole frames and a zero-padded third, exit 0."""
    frames = _multi_edf(tmp_path / "m.edf")
    raw = (tmp_path / "m.edf").read_bytes()
    (tmp_path / "cut.edf").write_bytes(raw[: int(len(raw) * 0.35)])
    with pytest.raises(InputError, match=r"cut.edf: truncated: frame 2 needs 2048 bytes .*\(2 complete frames"):
        fr.open_frames(str(tmp_path / "cut.edf"))
    np.testing.assert_array_equal(_read_all(str(tmp_path / "m.edf")), frames)
    r = cli("preprocess", tmp_path / "cut.edf", "-o", tmp_path / "out.cxi", "--energy", 8, "--distance", 1,
            "--pixel", 75e-6, "--threads", 1)
    assert r.exit_code == 1 and "truncated" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "out.cxi").exists()
    # cut inside a header, and cut exactly at a header's start (a shorter but valid file)
    (tmp_path / "cuth.edf").write_bytes(raw[: 2560 * 3 + 100])
    with pytest.raises(InputError, match="inside the header of frame 3"):
        fr.open_frames(str(tmp_path / "cuth.edf"))
    (tmp_path / "three.edf").write_bytes(raw[: 2560 * 3])
    np.testing.assert_array_equal(_read_all(str(tmp_path / "three.edf")), frames[:3])


def test_edf_gzip_and_big_endian(tmp_path):
    import gzip

    img = _stack(n=1, shape=(8, 12), dtype=np.int32)[0] * 1000
    body = gzip.compress(img.astype(">i4").tobytes())
    head = (f"{{\nHeaderID = EH:000001:000000:000000 ;\nByteOrder = HighByteFirst ;\nDataType = SignedInteger ;\n"
            f"Dim_1 = 12 ;\nDim_2 = 8 ;\nCompression = gzip ;\nSize = {len(body)} ;\n").encode()
    head += b" " * (510 - len(head)) + b"}\n"
    (tmp_path / "g.edf").write_bytes(head + body)
    np.testing.assert_array_equal(io.read_array(str(tmp_path / "g.edf")), img)
    (tmp_path / "gcut.edf").write_bytes(head + body[:-10])
    with pytest.raises(InputError, match="truncated"):
        io.read_array(str(tmp_path / "gcut.edf"))


def test_cbf_byte_offset_decoder_matches_fabio_on_all_escape_widths(tmp_path):
    import fabio.cbfimage

    rng = np.random.default_rng(3)
    img = rng.integers(0, 100, (40, 50)).astype(np.int32)
    img[3, 4] = 30000          # 16-bit escape
    img[10, 11] = 2_000_000_000  # 32-bit escape
    img[20, ::7] = -5
    fabio.cbfimage.CbfImage(data=img).write(str(tmp_path / "e.cbf"))
    np.testing.assert_array_equal(_read_all(str(tmp_path / "e.cbf"))[0], img)
    np.testing.assert_array_equal(io.read_array(str(tmp_path / "e.cbf")), img)


def test_truncated_cbf_is_an_error_and_never_hangs(tmp_path):
    """Regression: fabio hangs on a CBF cut inside its header and raises AssertionError inside its data."""
    import fabio.cbfimage

    img = _stack(n=1, shape=(64, 64), dtype=np.int32)[0]
    fabio.cbfimage.CbfImage(data=img).write(str(tmp_path / "a.cbf"))
    raw = (tmp_path / "a.cbf").read_bytes()
    mark = raw.index(b"\x0c\x1a\x04\xd5")
    for cut, msg in ((0, "unknown file format|not|truncated"), (500, "truncated inside the header"),
                     (mark + 2, "truncated inside the header"), (mark + 100, r"promises \d+ data bytes")):
        (tmp_path / "c.cbf").write_bytes(raw[:cut])
        with pytest.raises(InputError, match=msg):
            _read_all(str(tmp_path / "c.cbf"))
    bad = bytearray(raw)
    bad[-40] ^= 0xFF  # a flipped data byte: the header's MD5 catches it
    (tmp_path / "f.cbf").write_bytes(bytes(bad))
    with pytest.raises(InputError, match="checksum"):
        _read_all(str(tmp_path / "f.cbf"))


def test_truncated_tiff_stacks_are_errors(tmp_path):
    """tifffile reads a cut ImageJ or compressed stack as fewer frames, or one frame; we refuse."""
    import tifffile

    st = _stack(n=6, shape=(32, 32), dtype=np.uint16)
    for kw in ({}, {"imagej": True}, {"compression": "zlib"}):
        p = tmp_path / "s.tif"
        tifffile.imwrite(p, st, **kw)
        raw = p.read_bytes()
        np.testing.assert_array_equal(_read_all(str(p)), st)
        for frac in (0.3, 0.6, 0.95):
            (tmp_path / "c.tif").write_bytes(raw[: int(len(raw) * frac)])
            with pytest.raises(InputError, match="c.tif: truncated TIFF"):
                _read_all(str(tmp_path / "c.tif"))
            with pytest.raises(InputError, match="c.tif"):
                io.read_array(str(tmp_path / "c.tif"))


def test_npy_short_or_absurd_header_refused_before_reading(tmp_path):
    a = _stack(n=3, shape=(16, 16), dtype=np.float32)
    np.save(tmp_path / "a.npy", a)
    raw = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "c.npy").write_bytes(raw[:-100])
    for reader in (_read_all, io.read_array):
        with pytest.raises(InputError, match=r"c.npy: truncated .npy: shape \(3, 16, 16\) float32 needs 3072"):
            reader(str(tmp_path / "c.npy"))
    huge = raw.replace(b"(3, 16, 16)", b"(3, 99999999999)")
    (tmp_path / "h.npy").write_bytes(huge)
    with pytest.raises(InputError, match="truncated"):
        io.read_array(str(tmp_path / "h.npy"))


def test_absurd_edf_dimensions_refused_before_allocation(tmp_path):
    head = b"{\nDataType = UnsignedShort ;\nDim_1 = 2000000 ;\nDim_2 = 2000000 ;\nSize = 8000000000000 ;\n"
    (tmp_path / "h.edf").write_bytes(head + b" " * (510 - len(head)) + b"}\n" + b"\0" * 64)
    with pytest.raises(DataError, match="more than any detector"):
        fr.open_frames(str(tmp_path / "h.edf"))


def test_hdf5_stack_with_unwritten_frames_is_an_error(tmp_path):
    """A LIMA file still being written (chunks of the last frames missing) would read them as zeros."""
    import h5py

    data = _stack(n=6, shape=(16, 16))
    p = tmp_path / "live.h5"
    with h5py.File(p, "w") as f:
        d = f.create_dataset("/entry_0000/measurement/data", shape=data.shape, dtype=data.dtype,
                             chunks=(1, 16, 16))
        d[:4] = data[:4]
    with pytest.raises(InputError, match="promises 6 frames but 2 were never written .first missing: frame 4"):
        fr.open_frames(str(p))
    with pytest.raises(InputError, match="incomplete"):
        io.read_array(f"{p}::/entry_0000/measurement/data")


def test_hdf5_links_outside_the_input_folder_refused(tmp_path):
    import h5py

    outside = tmp_path / "elsewhere"
    inside = tmp_path / "beamtime"
    outside.mkdir()
    inside.mkdir()
    with h5py.File(outside / "secret.h5", "w") as f:
        f["data"] = _stack(n=2)
    with h5py.File(inside / "data_000001.h5", "w") as f:
        f["data"] = _stack(n=2)
    with h5py.File(inside / "ok.h5", "w") as f:
        f["/entry/data/data_000001"] = h5py.ExternalLink("data_000001.h5", "/data")
    np.testing.assert_array_equal(_read_all(str(inside / "ok.h5")), _stack(n=2))
    with h5py.File(inside / "bad.h5", "w") as f:
        f["/entry/data/data_000001"] = h5py.ExternalLink("../elsewhere/secret.h5", "/data")
    with pytest.raises(InputError, match="external link to ../elsewhere/secret.h5, outside the file's folder"):
        fr.open_frames(str(inside / "bad.h5"))
    with h5py.File(inside / "abs.h5", "w") as f:
        f["x"] = h5py.ExternalLink(str(outside / "secret.h5"), "/data")
    with pytest.raises(InputError, match="outside the file's folder"):
        io.read_array(str(inside / "abs.h5") + "::/x")
    layout = h5py.VirtualLayout(shape=(2, 16, 20), dtype=np.uint32)
    layout[:] = h5py.VirtualSource(str(outside / "secret.h5"), "data", shape=(2, 16, 20))
    with h5py.File(inside / "vds.h5", "w") as f:
        f.create_virtual_dataset("/entry_0000/measurement/data", layout)
    with pytest.raises(InputError, match="virtual dataset mapping"):
        fr.open_frames(str(inside / "vds.h5"))
