"""cxdi mask: automatic detection against the simulation's broken pixels, user masks and shapes, grow,
remove, the central-speckle report, and 3D volumes whose unmeasured voxels stay untouched."""
import json

import numpy as np
import pytest

from cxdi_cli import io
from cxdi_cli.reduce import masking
from cxdi_cli.model import MASK_BITS, Geometry, Pattern, measured_from_mask

GEOM = ["--energy", "8", "--distance", "5", "--pixel", "75e-6"]


@pytest.fixture(scope="module")
def raw_pattern(tmp_path_factory):
    """A tungsten pattern preprocessed WITHOUT automatic masking (only the truth centre given), and
    the simulation's true mask in the same window."""
    from typer.testing import CliRunner

    from cxdi_cli.commands.main import app
    from cxdi_cli.sim import simulate

    d = tmp_path_factory.mktemp("mask")
    e = simulate("tungsten", d, seed=10, size=128)  # 2 hot and 2 dead pixels inside the crop
    out = d / "raw.cxi"
    ty, tx = e["beam_centre"]
    r = CliRunner().invoke(app, ["preprocess", str(d / "frames.h5"), "-o", str(out), *GEOM,
                                 "--no-auto-mask", "--centre", f"{ty},{tx}"])
    assert r.exit_code == 0, r.stderr
    p = io.read_pattern(str(out))
    r0, c0 = p.provenance[-1]["parameters"]["window_start_px"]
    n = p.intensity.shape[0]
    truth = io.read_pattern(str(d / "expected.cxi")).mask[r0:r0 + n, c0:c0 + n]
    return out, p, truth, e


def test_auto_detection_finds_what_the_simulation_broke(cli, raw_pattern, tmp_path):
    src, p, truth, e = raw_pattern
    assert measured_from_mask(p.mask).all()  # nothing flagged yet
    out = tmp_path / "m.cxi"
    r = cli("mask", src, "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["schema"] == "cxdi.mask/1"
    m = io.read_pattern(str(out)).mask
    good = measured_from_mask(m)
    for name in ("beamstop", "gap", "hot", "dead"):
        true = (truth & MASK_BITS[name]) != 0
        assert true.any(), name
        assert not (true & good).any(), f"{name}: {np.argwhere(true & good)[:5].tolist()}"
    # beamstop + rod flagged with at most 2 pixels of margin; the rod direction found
    from scipy.ndimage import distance_transform_edt

    shadow = (truth & MASK_BITS["beamstop"]) != 0
    flagged = (m & MASK_BITS["beamstop"]) != 0
    assert distance_transform_edt(~shadow)[flagged].max() <= 2.0
    dy, dx = e["beamstop"]["rod_direction"]
    assert rep["beamstop"]["rod_angle_deg"] == pytest.approx(np.degrees(np.arctan2(dy, dx)), abs=2.0)
    # few false alarms: flagged hot/dead pixels are at most a few per mille of the pattern
    assert (rep["mask_counts"]["hot"] + rep["mask_counts"]["dead"]) < 0.005 * m.size
    # the report agrees with the file, and it says how much of the central speckle is missing
    assert rep["mask_counts"] == {k: int(np.count_nonzero(m & v)) for k, v in MASK_BITS.items()}
    assert rep["masked_fraction"] == pytest.approx(1 - good.mean())
    cs = rep["central_speckle"]
    assert cs["beamstop_radius_px"] == pytest.approx(e["beamstop"]["radius_px"], abs=1.5)
    assert 0 < cs["central_speckle_missing_fraction"] <= 1
    # the simulation puts the beamstop beyond one speckle (sigma = 4 px): the user is warned
    assert cs["warning"] is not None
    assert (cs["beamstop_radius_px"] > rep["oversampling"]) == (cs["warning"] is not None)


def test_speckle_warning_follows_speckle_size(cli, raw_pattern, tmp_path):
    src, *_ = raw_pattern
    r = cli("mask", src, "-o", tmp_path / "a.cxi", "--oversampling", "2", "--json")
    assert r.exit_code == 0 and "larger than the central speckle" in r.stderr
    assert json.loads(r.stdout)["central_speckle"]["central_speckle_missing_fraction"] == 1.0
    r = cli("mask", src, "-o", tmp_path / "b.cxi", "--oversampling", "40", "--json")
    cs = json.loads(r.stdout)["central_speckle"]
    assert r.exit_code == 0 and cs["warning"] is None and cs["central_speckle_missing_fraction"] < 0.2


def test_user_shapes_files_grow_remove(cli, tmp_path):
    n = 40
    rng = np.random.default_rng(0)
    pat = Pattern(intensity=rng.poisson(50, (n, n)).astype(np.float32), mask=np.zeros((n, n), np.uint32),
                  geometry=Geometry(wavelength=1.5e-10, distance=5.0, pixel=(75e-6, 75e-6), centre=(20.0, 20.0)))
    pat.mask[3, 3] = MASK_BITS["hot"]
    src = tmp_path / "in.cxi"
    io.write_pattern(str(src), pat, io.make_step("test"))
    extra = np.zeros((n, n), np.uint8)
    extra[30, 5] = 1
    np.save(tmp_path / "extra.npy", extra)
    out = tmp_path / "out.cxi"
    r = cli("mask", src, "-o", out, "--no-auto", "--circle", "10,30,2", "--rect", "35,35,37,38",
            "--polygon", "0,20,0,24,4,22", "--add", tmp_path / "extra.npy")
    assert r.exit_code == 0, r.stderr
    m = io.read_pattern(str(out)).mask
    user = (m & MASK_BITS["user"]) != 0
    yy, xx = np.mgrid[:n, :n]
    expect = ((yy - 10) ** 2 + (xx - 30) ** 2 <= 4) | ((yy >= 35) & (yy <= 37) & (xx >= 35) & (xx <= 38))
    expect[30, 5] = True
    tri = np.zeros((n, n), bool)
    tri[0, 20:25] = True
    tri[1, 21:24] = tri[2, 21:24] = True
    tri[3, 22] = tri[4, 22] = True
    expect |= tri
    np.testing.assert_array_equal(user, expect)
    assert m[3, 3] == MASK_BITS["hot"]  # existing bits are kept
    r = cli("mask", out, "-o", tmp_path / "g.cxi", "--no-auto", "--grow", "1", "--remove", "hot")
    assert r.exit_code == 0, r.stderr
    g = io.read_pattern(str(tmp_path / "g.cxi")).mask
    assert not (g & MASK_BITS["hot"]).any()
    from scipy.ndimage import binary_dilation

    np.testing.assert_array_equal((g & MASK_BITS["user"]) != 0, binary_dilation(user, np.ones((3, 3))))
    # a mask file of the wrong shape: one line, exit 1, no output
    np.save(tmp_path / "wrong.npy", np.zeros((5, 5)))
    r = cli("mask", src, "-o", tmp_path / "w.cxi", "--add", tmp_path / "wrong.npy")
    assert r.exit_code == 1 and "does not match" in r.stderr and not (tmp_path / "w.cxi").exists()
    r = cli("mask", src, "-o", tmp_path / "w.cxi", "--remove", "nonsense")
    assert r.exit_code == 2 and not (tmp_path / "w.cxi").exists()


def test_3d_volume_keeps_unmeasured_bits(cli, tmp_path):
    n = 24
    rng = np.random.default_rng(2)
    z, y, x = np.mgrid[:n, :n, :n] - n // 2
    vol = rng.poisson(2000 * np.exp(-(x * x + y * y + z * z) / 60.0) + 5).astype(np.float32)
    mask = np.zeros(vol.shape, np.uint32)
    wedge = np.abs(x) < 0.4 * np.abs(z) - 2  # a missing wedge
    mask[wedge] = MASK_BITS["unmeasured"]
    vol[wedge] = 0
    vol[12, 5, 17] = 1e6  # a hot voxel among measured ones
    src = tmp_path / "vol.cxi"
    io.write_pattern(str(src), Pattern(intensity=vol, mask=mask, geometry=Geometry(q_pitch=(1e6, 1e6, 1e6))),
                     io.make_step("test"))
    out = tmp_path / "volm.cxi"
    r = cli("mask", src, "-o", out, "--grow", "1", "--json")
    assert r.exit_code == 0, r.stderr
    m = io.read_pattern(str(out)).mask
    np.testing.assert_array_equal((m & MASK_BITS["unmeasured"]) != 0, wedge)
    assert m[12, 5, 17] & MASK_BITS["hot"]
    assert np.count_nonzero(m & MASK_BITS["hot"]) == 27  # grown by one voxel in 3D
    assert not (m & MASK_BITS["dead"]).any()
    r = cli("mask", src, "-o", tmp_path / "x.cxi", "--remove", "unmeasured")
    assert r.exit_code == 2 and not (tmp_path / "x.cxi").exists()
    r = cli("mask", src, "-o", tmp_path / "x.cxi", "--circle", "1,2,3")
    assert r.exit_code == 2


def test_detector_model_gaps():
    g = masking.model_gaps("Pilatus 1M", (1043, 981))
    rows = np.flatnonzero(g.all(axis=1))
    cols = np.flatnonzero(g.all(axis=0))
    assert rows.tolist() == [r for k in range(4) for r in range(195 + k * 212, 212 + k * 212)]
    assert cols.tolist() == list(range(487, 494))
    with pytest.raises(Exception, match="1043x981"):
        masking.model_gaps("pilatus1m", (100, 100))


def test_detect_gaps_ignores_dark_edges():
    img = np.full((60, 60), 10.0)
    img[30:32, :] = 0        # a gap: two empty rows between lit ones
    img[:, 50:] = 0          # dark high-q columns at the edge: not a gap
    g = masking.detect_gaps(img)
    assert g[30:32].all() and g.sum() == 2 * 60


def test_user_mask_array_rules():
    """One loader rule for mask --add and assemble3d --mask: non-zero, NaN and inf are bad; leading
    length-1 axes dropped; a wrong shape is refused naming the file."""
    from cxdi_cli.model import DataError

    a = np.zeros((1, 4, 5))
    a[0, 1, 2] = 3.0
    a[0, 2, 3] = np.nan
    a[0, 3, 4] = -np.inf
    bad = masking.user_mask(a, (4, 5), "m.tif")
    assert bad.dtype == bool and bad.shape == (4, 5)
    assert set(zip(*np.nonzero(bad))) == {(1, 2), (2, 3), (3, 4)}
    assert masking.user_mask(np.eye(3, dtype=np.uint8), (3, 3), "e.npy").sum() == 3
    with pytest.raises(DataError, match="m.tif"):
        masking.user_mask(a, (5, 4), "m.tif")


# --------------------------------------------------------------------------- processed data (issue 12)


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """The family's processed case (tungsten, oversampling 3, background subtracted, 4 % zeros in bright
    regions, centro-symmetrised) preprocessed from processed.tif, and its true mask in the same window."""
    from typer.testing import CliRunner

    from cxdi_cli.commands.main import app
    from cxdi_cli.sim import simulate

    d = tmp_path_factory.mktemp("proc")
    e = simulate("tungsten", d, seed=5, size=160, processed="symmetrised", oversampling=3.0)
    out = d / "pre.cxi"
    r = CliRunner().invoke(app, ["preprocess", str(d / "processed.tif"), "-o", str(out), *GEOM, "-q"])
    assert r.exit_code == 0, r.stderr
    p = io.read_pattern(str(out))
    r0, c0 = p.provenance[-1]["parameters"]["window_start_px"]
    n = p.intensity.shape[0]
    truth = io.read_pattern(str(d / "expected.cxi")).mask[r0:r0 + n, c0:c0 + n]
    return out, truth, e


def test_mask_finds_planted_zeros_and_says_processed(cli, processed, tmp_path):
    """--zeros auto (default): >= 95 % of the planted zeros get the 'zero' bit, <= 0.01 % of the genuine pixels
    any zero/hot/dead bit; the data are reported non-integer and centro-symmetrised, in one stderr line and
    in the --json report; 'measured' flags no zero, 'masked' every exact zero."""
    src, truth, e = processed
    r = cli("mask", src, "-o", tmp_path / "m.cxi", "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    m = io.read_pattern(str(tmp_path / "m.cxi")).mask
    planted = (truth & MASK_BITS["zero"]) != 0
    genuine = truth == 0
    assert planted.sum() > 300
    assert ((m & MASK_BITS["zero"]) != 0)[planted].mean() >= 0.95
    flagged = (m & (MASK_BITS["zero"] | MASK_BITS["hot"] | MASK_BITS["dead"])) != 0
    assert (flagged & genuine).sum() <= 1e-4 * genuine.sum()
    data = rep["data"]
    assert data["non_integer"] and data["centro_symmetric"] and data["zeros_mode"] == "auto"
    assert data["zeros_flagged"] == rep["mask_counts"]["zero"]
    lines = [ln for ln in r.stderr.splitlines() if "processed data" in ln]
    assert len(lines) == 1 and "non-integer" in lines[0] and "centro-symmetrised" in lines[0]
    r = cli("mask", src, "-o", tmp_path / "meas.cxi", "--zeros", "measured", "--json")
    assert json.loads(r.stdout)["mask_counts"]["zero"] == 0
    r = cli("mask", src, "-o", tmp_path / "all.cxi", "--zeros", "masked", "--json")
    img = io.read_pattern(str(src)).intensity
    m_all = io.read_pattern(str(tmp_path / "all.cxi")).mask
    assert (m_all[img == 0] != 0).all()
    assert json.loads(r.stdout)["mask_counts"]["zero"] >= rep["mask_counts"]["zero"]
    assert cli("mask", src, "-o", tmp_path / "x.cxi", "--zeros", "sometimes").exit_code == 2


def test_raw_counts_are_not_processed(cli, raw_pattern, tmp_path):
    """Raw photon counts: integer, not symmetrised, no zero class; no 'processed data' line."""
    src, *_ = raw_pattern
    r = cli("mask", src, "-o", tmp_path / "m.cxi", "--json")
    rep = json.loads(r.stdout)
    assert not rep["data"]["non_integer"] and not rep["data"]["centro_symmetric"]
    assert rep["mask_counts"]["zero"] == 0 and "processed data" not in r.stderr


def test_detect_zeros_statistics():
    """A 2x2 zero block and a lone zero in a flat 50-photon field are flagged; zeros in a 2-photon field
    (Poisson zeros, e^-2 each) are not; a lone zero only with singles=True, or by default once ten zero blocks
    show an earlier program's footprint."""
    rng = np.random.default_rng(1)
    img = rng.poisson(50.0, (64, 64)).astype(float)
    img[:, 32:] = rng.poisson(2.0, (64, 32))
    img[10:12, 10:12] = 0
    img[30, 20] = 0
    z = masking.detect_zeros(img, singles=True)
    assert z[10:12, 10:12].all() and z[30, 20]
    assert not z[:, 32:].any()
    assert not masking.detect_zeros(img, singles=False)[30, 20]
    assert not masking.detect_zeros(img)[30, 20]  # one block: a lone zero is the dead detector's business
    for k in range(10):
        img[40 + 2 * (k % 5) * 2, 2 + 6 * (k // 5): 4 + 6 * (k // 5)] = 0
    assert masking.detect_zeros(img)[30, 20]
    assert masking.detect_zeros(img, mode="measured").sum() == 0
    assert masking.detect_zeros(img, mode="masked").sum() == (img == 0).sum()


def test_marker_values_are_gaps_not_saturated():
    """Eiger 2^32-1 / 2^16-1 and Pilatus -1 gap lines are gaps; isolated markers are invalid when the file
    states a lower saturation level; an integrating detector at its 16-bit ceiling stays saturated."""
    shape = (40, 50)
    raw_max = np.full(shape, 100.0)
    sat = np.zeros(shape, bool)
    raw_max[20:22, :] = 2.0 ** 32 - 1      # a gap band of an Eiger 32-bit frame
    raw_max[5, 7] = 2.0 ** 32 - 1          # a bad pixel marker
    raw_max[30, 30] = 5e5                  # above the stated count cutoff: saturated
    sat = raw_max >= 2e5
    m = masking.marker_bits(sat, np.zeros(shape, bool), raw_max, 2e5)
    assert np.all(m[20:22] == MASK_BITS["gap"])
    assert m[5, 7] == MASK_BITS["invalid"] and m[30, 30] == MASK_BITS["saturated"]
    # 16-bit: a gap column of 65535 among frames with no stated level (the default is the type's maximum)
    raw_max = np.full(shape, 100.0)
    raw_max[:, 25] = 65535.0
    raw_max[3:5, 3:5] = 65535.0            # a saturated blob (integrating detector)
    sat = raw_max >= 65535
    m = masking.marker_bits(sat, np.zeros(shape, bool), raw_max, 65535.0)
    assert np.all(m[:, 25] == MASK_BITS["gap"]) and np.all(m[3:5, 3:5] == MASK_BITS["saturated"])
    # Pilatus: -1 along module gaps, -2 on a bad pixel (both arrive as negative markers)
    neg = np.zeros(shape, bool)
    neg[:, 10:12] = True
    neg[33, 40] = True
    m = masking.marker_bits(np.zeros(shape, bool), neg, np.full(shape, 10.0), None)
    assert np.all(m[:, 10:12] == MASK_BITS["gap"]) and m[33, 40] == MASK_BITS["invalid"]
    assert np.count_nonzero(m) == 2 * 40 + 1


@pytest.mark.parametrize("dtype", [np.uint32, np.uint16])
def test_preprocess_classes_eiger_gap_markers_as_gaps(cli, tmp_path, dtype):
    """Eiger frames whose module gap reads 2^N - 1 in every frame: preprocess flags the gap rows 'gap', never
    'saturated'."""
    rng = np.random.default_rng(3)
    frames = rng.poisson(50.0, (3, 64, 64)).astype(dtype)
    frames[:, 40:42, :] = np.iinfo(dtype).max
    io.write_lima(str(tmp_path / "e.h5"), frames)
    r = cli("preprocess", tmp_path / "e.h5", "-o", tmp_path / "p.cxi", *GEOM, "--centre", "31.5,31.5",
            "--no-auto-mask", "-q")
    assert r.exit_code == 0, r.stderr
    p = io.read_pattern(str(tmp_path / "p.cxi"))
    r0 = p.provenance[-1]["parameters"]["window_start_px"][0]
    rows = np.arange(p.mask.shape[0]) + r0
    band = (rows >= 40) & (rows < 42)
    assert band.any()
    assert np.all(p.mask[band] & MASK_BITS["gap"]) and not np.any(p.mask & MASK_BITS["saturated"])
    assert not np.any(p.mask[~band])
