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


def test_edf_and_cbf_via_fabio(tmp_path):
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
