"""CXI files: round trips, files written by others (PyNX, cxidb), addressing, atomic writes, bad input."""
import os

import h5py
import numpy as np
import pytest

from cxdi_cli import io
from cxdi_cli.model import (EV_J, DataError, Geometry, InputError, MASK_BITS, Pattern, Reconstruction,
                            Run, wavelength_from_kev)


@pytest.fixture
def pattern():
    rng = np.random.default_rng(3)
    data = rng.poisson(50, (32, 40)).astype(np.float32)
    mask = np.zeros(data.shape, np.uint32)
    mask[15:17, 19:21] = MASK_BITS["beamstop"]
    mask[:, 5] |= MASK_BITS["gap"]
    geo = Geometry(wavelength=wavelength_from_kev(8.0), distance=5.0, pixel=(75e-6, 75e-6), centre=(16.3, 20.6))
    return Pattern(data, mask, geo)


def test_pattern_round_trip(tmp_path, pattern):
    out = tmp_path / "p.cxi"
    io.write_pattern(str(out), pattern, io.make_step("cxdi test", {"a": 1}, ["raw.h5"]))
    back = io.read_pattern(str(out))
    assert np.array_equal(back.intensity, pattern.intensity)
    assert np.array_equal(back.mask, pattern.mask)
    assert back.geometry.distance == 5.0 and back.geometry.pixel == (75e-6, 75e-6)
    assert np.isclose(back.geometry.energy_kev, 8.0)
    assert back.geometry.centre == (16.3, 20.6)
    assert back.provenance[-1]["command"] == "cxdi test" and back.provenance[-1]["inputs"] == ["raw.h5"]
    with h5py.File(out) as f:  # DESIGN §3 layout, NeXus default chain, data_1 link
        assert f["/entry_1/data_1/data"].id == f["/entry_1/instrument_1/detector_1/data"].id
        assert f.attrs["default"] == "entry_1" and f["/entry_1"].attrs["default"] == "data_1"
        assert f["/entry_1/instrument_1/detector_1/mask"].dtype == np.uint32
        assert np.isclose(f["/entry_1/instrument_1/source_1/energy"][()], 8000 * EV_J)
        assert "cxi_version" in f


def test_provenance_chain_grows(tmp_path, pattern):
    a, b = tmp_path / "a.cxi", tmp_path / "b.cxi"
    io.write_pattern(str(a), pattern, io.make_step("cxdi preprocess raw.h5"))
    p = io.read_pattern(str(a))
    io.write_pattern(str(b), p, io.make_step("cxdi mask a.cxi"))
    chain = io.read_pattern(str(b)).provenance
    assert [s["command"] for s in chain] == ["cxdi preprocess raw.h5", "cxdi mask a.cxi"]


def test_reconstruction_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    runs = [Run(obj=(rng.random((16, 16)) * np.exp(1j * rng.random((16, 16)))).astype(np.complex64),
                support=rng.random((16, 16)) > 0.5, metrics={"llk": 1.5 + k, "failed": False},
                params={"recipe": "er**10"}, history={"llk": np.arange(5.0)}) for k in range(3)]
    rec = Reconstruction(runs=runs, pixel_size=(10e-9, 12e-9))
    out = tmp_path / "r.cxi"
    io.write_reconstruction(str(out), rec, io.make_step("cxdi phase"))
    back = io.read_reconstruction(str(out))
    assert len(back.runs) == 3 and back.pixel_size == (10e-9, 12e-9)
    for r0, r1 in zip(runs, back.runs):
        assert np.array_equal(r0.obj, r1.obj) and np.array_equal(r0.support, r1.support)
        assert r1.metrics["llk"] == r0.metrics["llk"] and r1.params == {"recipe": "er**10"}
        assert np.array_equal(r1.history["llk"], np.arange(5.0))
    one = io.read_reconstruction(f"{out}::/entry_2/image_1/data")
    assert len(one.runs) == 1 and np.array_equal(one.runs[0].obj, runs[1].obj)


def test_reads_pynx_style_cxi(tmp_path):
    """PyNX: energy in J, mask non-zero = bad (any value), data at detector_1/data."""
    path = tmp_path / "pynx.cxi"
    data = np.ones((8, 8), np.float32)
    with h5py.File(path, "w") as f:
        f["cxi_version"] = 140
        det = f.create_group("/entry_1/instrument_1/detector_1")
        det["data"] = data
        mask = np.zeros((8, 8), np.int8)
        mask[0, 0] = 1
        det["mask"] = mask
        det["distance"] = 2.0
        det["x_pixel_size"] = 55e-6
        det["y_pixel_size"] = 55e-6
        f["/entry_1/instrument_1/source_1/energy"] = 10000 * EV_J
    p = io.read_pattern(str(path))
    assert p.mask[0, 0] != 0 and not p.measured[0, 0] and p.measured.sum() == 63
    assert np.isclose(p.geometry.energy_kev, 10.0) and p.geometry.pixel == (55e-6, 55e-6)


def test_reads_cxidb_single_frame(tmp_path):
    path = tmp_path / "cxidb.cxi"
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = np.ones((1, 6, 7), np.float32)
    p = io.read_pattern(str(path))
    assert p.intensity.shape == (6, 7) and p.measured.all()


def test_tiff_in_and_out(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    io.write_tiff(str(tmp_path / "a.tif"), arr, pixel_size=1e-8)
    back = io.read_array(str(tmp_path / "a.tif"))
    assert back.dtype == np.float32 and np.array_equal(back, arr)
    p = io.read_pattern(str(tmp_path / "a.tif"))
    assert np.array_equal(p.intensity, arr)


def test_dataset_addressing_and_errors(tmp_path):
    path = tmp_path / "raw.h5"
    with h5py.File(path, "w") as f:
        f["/a/img"] = np.ones((4, 4))
        f["/b/img"] = np.ones((5, 5))
    assert io.read_array(f"{path}::/b/img").shape == (5, 5)
    with pytest.raises(InputError, match="cannot tell which dataset"):
        io.read_array(str(path))
    with pytest.raises(InputError, match=r"no dataset /c.*/a/img"):
        io.read_array(f"{path}::/c")
    with pytest.raises(InputError, match="is a group"):
        io.read_array(f"{path}::/a")


def test_truncated_and_non_files(tmp_path, pattern):
    good = tmp_path / "p.cxi"
    io.write_pattern(str(good), pattern, io.make_step("t"))
    bad = tmp_path / "cut.cxi"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(InputError, match="truncated"):
        io.read_pattern(str(bad))
    with pytest.raises(InputError, match="is a directory"):
        io.read_pattern(str(tmp_path))
    with pytest.raises(InputError, match="no such file"):
        io.read_pattern(str(tmp_path / "nope.cxi"))


def test_refuses_nan_and_all_zero(tmp_path):
    np.save(tmp_path / "nan.npy", np.full((4, 4), np.nan, np.float32))
    with pytest.raises(DataError, match="NaN"):
        io.read_pattern(str(tmp_path / "nan.npy"))
    np.save(tmp_path / "zero.npy", np.zeros((4, 4), np.float32))
    with pytest.raises(DataError, match="zero"):
        io.read_pattern(str(tmp_path / "zero.npy"))


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.cxi"
    with pytest.raises(RuntimeError):
        with io.atomic_output(str(target)) as tmp:
            with open(tmp, "w") as fh:
                fh.write("half")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    target.write_text("old")
    with io.atomic_output(str(target)) as tmp:
        with open(tmp, "w") as fh:
            fh.write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["out.cxi"]


def test_refuses_raw_stacks_and_reconstructions_as_patterns(tmp_path):
    io.write_lima(str(tmp_path / "raw.h5"), np.ones((3, 8, 8), np.uint32))
    with pytest.raises(DataError, match="raw frames.*preprocess"):
        io.read_pattern(str(tmp_path / "raw.h5"))
    rec = Reconstruction(runs=[Run(obj=np.ones((8, 8), np.complex64), support=np.ones((8, 8), bool))])
    io.write_reconstruction(str(tmp_path / "r.cxi"), rec, io.make_step("t"))
    with pytest.raises(DataError, match="reconstruction"):
        io.read_pattern(str(tmp_path / "r.cxi"))
    with pytest.raises(DataError, match="complex"):
        io.read_pattern(f"{tmp_path / 'r.cxi'}::/entry_1/image_1/data")


def test_reconstruction_arrays_round_trip(tmp_path):
    """write_reconstruction(arrays=) writes under /entry_1; read_reconstruction gives them back."""
    rng = np.random.default_rng(2)
    obj = (rng.random((8, 8)) * np.exp(1j * rng.random((8, 8)))).astype(np.complex64)
    arrays = {"mode_1": obj * 0.5, "mode_2": obj.conj(), "run_intensity": rng.random((8, 8)).astype(np.float32)}
    rec = Reconstruction(runs=[Run(obj=obj, support=np.abs(obj) > 0, metrics={"n_runs": 4})])
    io.write_reconstruction(str(tmp_path / "a.cxi"), rec, io.make_step("cxdi average"), arrays=arrays)
    back = io.read_reconstruction(str(tmp_path / "a.cxi"))
    assert sorted(back.arrays) == sorted(arrays)
    for k, v in arrays.items():
        assert back.arrays[k].dtype == v.dtype and np.array_equal(back.arrays[k], v)
    assert back.runs[0].metrics["n_runs"] == 4
    plain = io.read_reconstruction(str(tmp_path / "a.cxi") + "::/entry_1/image_1/data")
    assert np.array_equal(plain.arrays["run_intensity"], arrays["run_intensity"])
    runs = tmp_path / "r.cxi"
    io.write_reconstruction(str(runs), Reconstruction(runs=[Run(obj=obj, support=np.abs(obj) > 0)]),
                            io.make_step("cxdi phase"))
    assert io.read_reconstruction(str(runs)).arrays == {}


def test_complex_npy_or_tiff_is_not_a_pattern(tmp_path):
    """Found by fuzzing: a complex .npy read as a pattern lost its imaginary part silently."""
    import numpy as np

    from cxdi_cli.model import DataError

    np.save(tmp_path / "c.npy", np.ones((8, 8), np.complex64))
    with pytest.raises(DataError, match="c.npy: holds complex values"):
        io.read_pattern(str(tmp_path / "c.npy"))
