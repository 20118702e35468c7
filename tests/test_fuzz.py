"""Property-based fuzzing (hypothesis) of every reader, the recipe parser and the TOML config.

Inputs: valid small files of every format, then truncated at random offsets, with random bytes flipped
(mostly in the header), header numbers replaced by huge or zero values, wrong dtypes, NaN/Inf, zero-size
and one-pixel images. Property: a reader returns data consistent with what it announced or raises a
CxdiError (one line); the CLI exits 0, or 1/2 with one `cxdi CMD: error:` line, no traceback, no
"internal error" and no output file. No case may hang (a 30 s alarm per case guards the suite; it is
a hang detector, not a timing test).

The suite runs a short fixed-seed profile (derandomized, a few hundred cases); `make fuzz` sets
CXDI_FUZZ=N to run N examples per property with fresh random seeds.
"""
import contextlib
import os
import re
import signal

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cxdi_cli import io  # noqa: E402
from cxdi_cli.model import CxdiError, Pattern  # noqa: E402

LONG = int(os.environ.get("CXDI_FUZZ", "0") or 0)
settings.register_profile("suite", derandomize=True, deadline=None, database=None, print_blob=True,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("long", derandomize=False, deadline=None, database=None, print_blob=True,
                          suppress_health_check=list(HealthCheck))
PROFILE = "long" if LONG else "suite"


def examples(n: int) -> int:
    """Examples per property: n in the suite, CXDI_FUZZ under `make fuzz`."""
    return LONG or n


@contextlib.contextmanager
def no_hang(seconds: int = 30):
    """Fail (instead of hanging the suite) when one case runs past `seconds`."""
    def boom(*_):
        raise AssertionError(f"a case ran for more than {seconds} s: hang?")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# --------------------------------------------------------------------------- valid seed files


def _frames(n=3, shape=(16, 16), dtype=np.uint16, seed=0):
    return np.random.default_rng(seed).poisson(20, (n,) + shape).astype(dtype)


def _seed_files(folder):
    import fabio.cbfimage
    import fabio.edfimage
    import h5py
    import tifffile

    out = {}
    fr = _frames()
    e = fabio.edfimage.EdfImage(data=fr[0])
    for f in fr[1:]:
        e.append_frame(data=f)
    e.write(str(folder / "s.edf"))
    out["edf"] = "s.edf"
    img = _frames(1, (24, 24), np.int32)[0]
    img[2, 3], img[5, 6] = 40000, -3_000_000_000 % 2 ** 31
    fabio.cbfimage.CbfImage(data=img).write(str(folder / "s.cbf"))
    out["cbf"] = "s.cbf"
    tifffile.imwrite(folder / "s.tif", fr, photometric="minisblack")
    tifffile.imwrite(folder / "z.tif", fr, compression="zlib", photometric="minisblack")
    tifffile.imwrite(folder / "ij.tif", fr, imagej=True)
    out.update(tif="s.tif", tifz="z.tif", tifij="ij.tif")
    np.save(folder / "s.npy", fr.astype(np.float32))
    out["npy"] = "s.npy"
    io.write_lima(str(folder / "lima.h5"), fr.astype(np.uint32), compression=None)
    out["lima"] = "lima.h5"
    with h5py.File(folder / "data_000001.h5", "w") as f:
        f.create_dataset("/entry/data/data", data=fr.astype(np.uint32), chunks=(1, 16, 16), compression="gzip")
    with h5py.File(folder / "master.h5", "w") as f:
        f["/entry/data/data_000001"] = h5py.ExternalLink("data_000001.h5", "/entry/data/data")
        f["/entry/instrument/detector/x_pixel_size"] = 75e-6
    out["eiger"] = "master.h5"
    pat = fr.sum(0).astype(np.float32)
    io.write_pattern(str(folder / "p.cxi"), Pattern(pat, np.zeros(pat.shape, np.uint32)), io.make_step("seed"))
    out["cxi"] = "p.cxi"
    return out


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_seeds")
    names = _seed_files(folder)
    return folder, {k: (folder / v).read_bytes() for k, v in names.items()}, names


# --------------------------------------------------------------------------- mutations


@st.composite
def mutated(draw, raw: bytes):
    """A mutation of `raw`: truncated, bytes flipped (mostly in the first KiB, where headers are),
    a header number replaced, garbage appended, or several of these."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "number", "append", "zero"]))
        if kind == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif kind == "flip" and data:
            hi = min(len(data), 1024) if draw(st.booleans()) else len(data)
            for _ in range(draw(st.integers(1, 8))):
                k = draw(st.integers(0, hi - 1))
                data[k] ^= draw(st.integers(1, 255))
        elif kind == "number":
            nums = [m for m in re.finditer(rb"\d+", bytes(data[:4096]))]
            if nums:
                m = nums[draw(st.integers(0, len(nums) - 1))]
                new = draw(st.sampled_from([b"0", b"1", b"99999999", b"2147483648", b"-1", b"18446744073709551615"]))
                data[m.start():m.end()] = new
        elif kind == "append":
            data += draw(st.binary(min_size=1, max_size=64))
        elif kind == "zero" and data:
            k = draw(st.integers(0, len(data) - 1))
            n = draw(st.integers(1, 64))
            data[k:k + n] = bytes(len(data[k:k + n]))
    return bytes(data)


def _consume_frames(spec: str) -> None:
    with io.open_frames(spec) as stack:
        assert stack.n_frames >= 1 and min(stack.shape) >= 1
        seen = 0
        for start, block in stack.blocks():
            assert start == seen and block.shape[1:] == stack.shape
            seen += len(block)
        assert seen == stack.n_frames


def _check_reader(path: str, read) -> str:
    """Run one reader on one file: 'ok' or 'refused' (a CxdiError with a one-line message)."""
    with no_hang():
        try:
            read(path)
        except CxdiError as exc:
            assert str(exc) and "\n" not in str(exc), repr(str(exc))
            return "refused"
    return "ok"


FRAME_KINDS = ["edf", "cbf", "tif", "tifz", "tifij", "npy", "lima", "eiger"]


@pytest.mark.parametrize("kind", FRAME_KINDS)
def test_frame_readers_never_lie_crash_or_hang(seeds, tmp_path_factory, kind):
    folder, raws, names = seeds
    work = tmp_path_factory.mktemp(f"fuzz_{kind}")
    if kind == "eiger":  # the master's data file beside it, mutated; the master intact
        import shutil

        shutil.copy(folder / "master.h5", work / "master.h5")
        target, raw = work / "data_000001.h5", (folder / "data_000001.h5").read_bytes()
        spec = str(work / "master.h5")
    else:
        target = work / names[kind]
        raw, spec = raws[kind], str(work / names[kind])

    @settings(settings.get_profile(PROFILE), max_examples=examples(25))
    @given(mutated(raw))
    def prop(data):
        target.write_bytes(data)
        _check_reader(spec, _consume_frames)
        if kind not in ("lima", "eiger"):
            _check_reader(spec, io.read_array)

    prop()


def test_pattern_reader_on_mutated_cxi(seeds, tmp_path):
    _, raws, _ = seeds
    target = tmp_path / "p.cxi"

    @settings(settings.get_profile(PROFILE), max_examples=examples(25))
    @given(mutated(raws["cxi"]))
    def prop(data):
        target.write_bytes(data)
        _check_reader(str(target), io.read_pattern)
        _check_reader(str(target), io.read_reconstruction)

    prop()


@st.composite
def odd_arrays(draw):
    """Wrong dtypes, NaN/Inf, zero-size, one-pixel and 1D/4D arrays."""
    shape = draw(st.sampled_from([(0, 0), (0, 16), (1, 1), (1, 1, 1), (16,), (2, 1, 16, 16), (16, 16), (3, 16, 16)]))
    dtype = draw(st.sampled_from(["u1", "i2", "u4", "f4", "f8", "c8", "bool", "i8", ">u2"]))
    arr = np.asarray(np.random.default_rng(draw(st.integers(0, 9))).poisson(5, shape)).astype(dtype)
    if arr.dtype.kind in "fc" and arr.size:
        for value in draw(st.lists(st.sampled_from([np.nan, np.inf, -np.inf, -1.0]), max_size=2)):
            arr.flat[draw(st.integers(0, arr.size - 1))] = value
    return arr


def assert_clean_exit(r, command: str, out, folder) -> None:
    """The bad-input contract: exit 0, 1 or 2; on error one line `cxdi COMMAND: error: ...`, no traceback,
    no output; never a stray temporary file."""
    assert r.exit_code in (0, 1, 2), (r.exit_code, r.stderr, r.exception)
    if r.exit_code:
        assert r.stderr.startswith(f"cxdi {command}: error: ") and r.stderr.count("\n") == 1, r.stderr
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not out.exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_cli_on_odd_arrays_exits_cleanly_and_writes_nothing(cli, tmp_path):
    """Through the CLI: preprocess and mask on odd arrays in npy, TIFF and HDF5 containers."""
    import h5py
    import tifffile

    @settings(settings.get_profile(PROFILE), max_examples=examples(40))
    @given(odd_arrays(), st.sampled_from(["npy", "tif", "h5"]), st.sampled_from(["preprocess", "mask"]))
    def prop(arr, container, command):
        src = tmp_path / f"in.{container}"
        for p in tmp_path.iterdir():
            p.unlink()
        if container == "npy":
            np.save(src, arr)
        elif container == "tif":
            if arr.dtype.kind in "cb" or arr.size == 0:
                return
            tifffile.imwrite(src, arr)
        else:
            with h5py.File(src, "w") as f:
                f["/entry_1/instrument_1/detector_1/data"] = arr
        out = tmp_path / "out.cxi"
        args = [command, src, "-o", out, "--threads", 1]
        if command == "preprocess":
            args += ["--energy", 8, "--distance", 1, "--pixel", 75e-6]
        with no_hang():
            r = cli(*args)
        assert_clean_exit(r, command, out, tmp_path)

    prop()


def test_cli_preprocess_on_mutated_frames_writes_nothing_on_error(cli, seeds, tmp_path):
    _, raws, names = seeds

    @settings(settings.get_profile(PROFILE), max_examples=examples(30))
    @given(st.sampled_from(["edf", "cbf", "tif", "npy", "lima"]), st.data())
    def prop(kind, data):
        src = tmp_path / names[kind]
        src.write_bytes(data.draw(mutated(raws[kind])))
        out = tmp_path / "out.cxi"
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
        with no_hang():
            r = cli("preprocess", src, "-o", out, "--energy", 8, "--distance", 1, "--pixel", 75e-6, "--threads", 1,
                    "--crop", 8)
        assert_clean_exit(r, "preprocess", out, tmp_path)
        if r.exit_code == 0:  # a mutation the readers accept must still give a usable pattern
            pattern = io.read_pattern(str(out))
            assert pattern.intensity.shape == (8, 8) and np.all(np.isfinite(pattern.intensity))
            assert np.all(pattern.intensity >= 0)

    prop()


# --------------------------------------------------------------------------- recipe and config

RECIPE_TOKENS = ["er", "hio", "raar", "ml", "sup", "psf", "detwin", "nope", "(", ")", ",", "**", "*", "=", "beta",
                 "0.8", "10", "0", "-1", "1e9", "99999999999999999999", "nan", "inf", " ", "x", "__import__",
                 "'", "\"", "[", "]", ";", "\n", "é"]


def test_recipe_parser_fuzz():
    from cxdi_cli.model import UsageError
    from cxdi_cli.phasing import recipe

    registry = {"er": (), "hio": ("beta",), "raar": ("beta",), "ml": (), "sup": ("threshold",)}

    @settings(settings.get_profile(PROFILE), max_examples=examples(120))
    @given(st.one_of(st.lists(st.sampled_from(RECIPE_TOKENS), max_size=25).map("".join),
                     st.text(max_size=40)))
    def prop(text):
        with no_hang(10):
            try:
                items = recipe.parse(text, registry)
            except UsageError as exc:
                assert str(exc) and "\n" not in str(exc).strip("\n").split("\n")[0]
                return
        again = recipe.parse(recipe.format_recipe(items), registry)
        assert again == items

    prop()


TOML_VALUES = ['8', '8.0', '"eight"', '-1', '0', 'nan', 'inf', 'true', '[1, 2]', '{a = 1}', '1e400', '"1"',
               '99999999999999999999999', '2024-01-01']


def test_config_file_fuzz(cli, tmp_path):
    """Random TOML (valid or not) through `plan --config`: exit 0, or one error line with 1 or 2."""
    keys = ["energy", "distance", "pixel", "detector", "size", "dims", "json", "nonsense", "plan"]

    @settings(settings.get_profile(PROFILE), max_examples=examples(60))
    @given(st.lists(st.tuples(st.sampled_from(keys), st.sampled_from(TOML_VALUES)), max_size=5),
           st.booleans(), st.text(max_size=20))
    def prop(pairs, section, junk):
        lines = [f"{k} = {v}" for k, v in pairs]
        text = ("[plan]\n" if section else "") + "\n".join(lines) + ("\n" + junk if junk.strip() else "")
        cfg = tmp_path / "c.toml"
        cfg.write_text(text, encoding="utf-8")
        with no_hang(20):
            r = cli("plan", "--config", cfg, "--energy", 8, "--distance", 5, "--pixel", 75e-6)
        assert r.exit_code in (0, 1, 2), (text, r.exit_code, r.stderr, r.exception)
        if r.exit_code:
            assert r.stderr.strip() and "internal error" not in r.stderr, (text, r.stderr)
            assert "Traceback" not in r.stderr, (text, r.stderr)

    prop()


def test_what_the_long_fuzzing_found(tmp_path):
    """Regressions from `make fuzz`: a .npy header with a NUL byte (tokenize.TokenError from numpy's header
    parser) and an HDF5 file whose link name is not UTF-8 (h5py's visit then raised SystemError) were
    internal errors; both are one InputError line now."""
    np.save(tmp_path / "a.npy", np.zeros((3, 16, 16), np.float32))
    raw = bytearray((tmp_path / "a.npy").read_bytes())
    raw[10] = 0  # inside the header dictionary
    (tmp_path / "b.npy").write_bytes(bytes(raw))
    with pytest.raises(CxdiError, match="b.npy: cannot read .npy header"):
        io.read_array(str(tmp_path / "b.npy"))
    import h5py

    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["ok"] = np.ones((4, 4))
    raw = (tmp_path / "c.h5").read_bytes()
    k = raw.index(b"ok\x00")
    bad = raw[:k] + b"\xe3\xe3" + raw[k + 2:]
    (tmp_path / "d.h5").write_bytes(bad)
    with pytest.raises(CxdiError, match="d.h5"):
        io.read_pattern(str(tmp_path / "d.h5"))


def test_cli_info_and_show_on_mutated_files(cli, seeds, tmp_path):
    """`info` and `show` read HDF5 their own way: a damaged file is still one error line naming it."""
    _, raws, names = seeds

    @settings(settings.get_profile(PROFILE), max_examples=examples(12))
    @given(st.sampled_from(["lima", "cxi", "edf", "tif", "npy"]), st.sampled_from(["info", "show"]), st.data())
    def prop(kind, command, data):
        src = tmp_path / names[kind]
        src.write_bytes(data.draw(mutated(raws[kind])))
        out = tmp_path / "o.png"
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
        with no_hang():
            r = cli(command, src, *(["-o", out] if command == "show" else []))
        assert_clean_exit(r, command, out, tmp_path)

    prop()


def test_hdf5_string_heap_that_would_hang_hdf5(tmp_path):
    """Found by `make fuzz`: a CXI file whose global heap has an object of size 0 followed by zeros makes
    HDF5 1.14 loop forever reading the provenance strings (in C: no alarm can stop it). The heap is walked
    before HDF5 reads it and the file refused."""
    import struct

    data = np.random.default_rng(0).poisson(20, (16, 16)).astype(np.float32)
    io.write_pattern(str(tmp_path / "p.cxi"), Pattern(data, np.zeros(data.shape, np.uint32)), io.make_step("t"))
    raw = bytearray((tmp_path / "p.cxi").read_bytes())
    q = raw.index(b"GCOL") + 16
    while struct.unpack_from("<H", raw, q)[0] != 2:
        q += 16 + ((struct.unpack_from("<Q", raw, q + 8)[0] + 7) // 8) * 8
    struct.pack_into("<Q", raw, q + 8, 0)
    raw[q + 16:q + 32] = bytes(16)
    (tmp_path / "h.cxi").write_bytes(bytes(raw))
    with no_hang(30):
        with pytest.raises(CxdiError, match="h.cxi: corrupt HDF5 file .string heap"):
            io.read_pattern(str(tmp_path / "h.cxi"))
