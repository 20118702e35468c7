"""cxdi preprocess on simulated raw data with known truth: centre, mask, photon totals, crop/bin/pad,
half-data sets, and the bad inputs that must fail cleanly (one line, exit 1, no output)."""
import json

import numpy as np
import pytest

from cxdi_cli import io
from cxdi_cli.reduce import centring, pattern as pp
from cxdi_cli.model import MASK_BITS, measured_from_mask

GEOM = ["--energy", "8", "--distance", "5", "--pixel", "75e-6"]


@pytest.fixture(scope="module")
def tungsten(tmp_path_factory):
    from cxdi_cli.sim import simulate

    d = tmp_path_factory.mktemp("tungsten")
    e = simulate("tungsten", d, seed=5, size=128, gap_cross_near_beam=True)
    return d, e


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    from cxdi_cli.sim import simulate

    d = tmp_path_factory.mktemp("cells")
    e = simulate("cells", d, seed=2, size=128)
    return d, e


def _truth_in_window(d, e, start, n):
    """The simulation's true mask and expected counts cut to the output window."""
    exp = io.read_pattern(str(d / "expected.cxi"))
    sl = (slice(start[0], start[0] + n), slice(start[1], start[1] + n))
    return exp.mask[sl], exp.intensity[sl].astype(np.float64)


def _check_mask(out_mask, true_mask):
    good = measured_from_mask(out_mask)
    for name in ("beamstop", "gap", "hot", "dead", "saturated"):
        missed = ((true_mask & MASK_BITS[name]) != 0) & good
        assert not missed.any(), f"{name} pixels left unmasked: {np.argwhere(missed)[:5].tolist()}"
    # the beamstop and rod flagged with a margin of at most 2 pixels beyond the true shadow
    from scipy.ndimage import distance_transform_edt

    shadow = (true_mask & MASK_BITS["beamstop"]) != 0
    flagged = (out_mask & MASK_BITS["beamstop"]) != 0
    assert shadow.any() and distance_transform_edt(~shadow)[flagged].max() <= 2.0


def test_tungsten_hdf5_only_logbook_geometry(cli, tungsten, tmp_path):
    d, e = tungsten
    out = tmp_path / "p.cxi"
    r = cli("preprocess", d / "frames.h5", "-o", out, *GEOM, "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["schema"] == "cxdi.preprocess/1"
    cy, cx = rep["centre_px"]
    ty, tx = e["beam_centre"]
    assert np.hypot(cy - ty, cx - tx) < 0.5
    n = e["crop"]
    p = io.read_pattern(str(out))
    assert p.intensity.shape == (n, n) and rep["crop_px"] == n
    assert p.geometry.pixel == pytest.approx((75e-6, 75e-6))
    # q = 0 at N // 2 + the sub-pixel residual of the found centre
    res = rep["centre_residual_px"]
    assert p.geometry.centre == pytest.approx((n // 2 + res[0], n // 2 + res[1]))
    assert abs(res[0]) <= 0.5 and abs(res[1]) <= 0.5
    start = (int(np.floor(cy + 0.5)) - n // 2, int(np.floor(cx + 0.5)) - n // 2)
    true_mask, _ = _truth_in_window(d, e, start, n)
    _check_mask(p.mask, true_mask)
    # photons: the output over its good pixels equals the raw frames' sum over the same pixels
    frames = io.read_array(str(d / "frames.h5") + "::/entry_0000/measurement/data").astype(np.float64).sum(0)
    good = measured_from_mask(p.mask)
    raw = frames[start[0]:start[0] + n, start[1]:start[1] + n][good].sum()
    assert p.intensity[good].sum() == pytest.approx(raw, rel=1e-3)
    assert rep["photons_total"] == pytest.approx(raw, rel=1e-3)
    assert rep["mask_counts"]["gap"] > 0 and 0 < rep["masked_fraction"] < 0.2
    # oversampling estimate from the speckle size: the simulation's sigma = 4
    assert rep["oversampling"] == pytest.approx(e["oversampling"], rel=0.25)
    # provenance keeps the centre and its residual
    step = p.provenance[-1]
    assert step["parameters"]["centre_detector_px"] == pytest.approx([cy, cx])


def test_cells_tiff_dark_gain(cli, cells, tmp_path):
    d, e = cells
    out = tmp_path / "c.cxi"
    r = cli("preprocess", d / "frames" / "frame_*.tif", "--dark", d / "darks" / "dark_*.tif",
            "--adu-per-photon", "2", "-o", out, *GEOM, "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    cy, cx = rep["centre_px"]
    assert np.hypot(cy - e["beam_centre"][0], cx - e["beam_centre"][1]) < 0.5
    p = io.read_pattern(str(out))
    n = p.intensity.shape[0]
    start = (int(np.floor(cy + 0.5)) - n // 2, int(np.floor(cx + 0.5)) - n // 2)
    true_mask, expected = _truth_in_window(d, e, start, n)
    _check_mask(p.mask, true_mask)
    assert e["broken_pixels"]["saturated"], "the simulation should saturate some pixels"
    # every pixel that hit 65535 ADU in any frame is flagged (checked in the window by _check_mask;
    # here on the full list, those inside the window)
    inside = [(r - start[0], c - start[1]) for r, c in e["broken_pixels"]["saturated"]
              if 0 <= r - start[0] < n and 0 <= c - start[1] < n]
    assert inside and all(p.mask[i, j] & MASK_BITS["saturated"] for i, j in inside)
    good = measured_from_mask(p.mask)
    assert p.intensity[good].sum() == pytest.approx(expected[good].sum(), rel=0.01)
    assert rep["saturation_adu"] == 65535


def test_bin_pad_and_given_centre(cli, tungsten, tmp_path):
    d, e = tungsten
    ty, tx = e["beam_centre"]
    out = tmp_path / "b.cxi"
    r = cli("preprocess", d / "frames.h5", "-o", out, *GEOM, "--centre", f"{ty},{tx}", "--crop", "64",
            "--bin", "2", "--pad", "48", "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["centre_method"] == "given" and rep["centre_px"] == pytest.approx([ty, tx])
    p = io.read_pattern(str(out))
    assert p.intensity.shape == (48, 48) and p.geometry.pixel == pytest.approx((150e-6, 150e-6))
    # q = 0 lands at 48 // 2 (+ residual in output pixels)
    start = rep["output_centre_px"]
    assert p.geometry.centre == pytest.approx(tuple(start))
    assert all(abs(v - 24) <= 0.25 + 1e-9 for v in p.geometry.centre)
    unmeasured = (p.mask & MASK_BITS["unmeasured"]) != 0
    assert unmeasured.sum() == 48 * 48 - 32 * 32 and not unmeasured[8:40, 8:40].any()
    # the binned window holds the raw frames' photons, pixel for pixel
    r0, c0 = p.provenance[-1]["parameters"]["window_start_px"]
    frames = io.read_array(str(d / "frames.h5")).astype(np.float64).sum(0)
    win = frames[r0:r0 + 64, c0:c0 + 64].reshape(32, 2, 32, 2).sum(axis=(1, 3))
    good = measured_from_mask(p.mask[8:40, 8:40])
    np.testing.assert_allclose(p.intensity[8:40, 8:40][good], win[good], rtol=1e-6)
    # the window is placed so that the beam centre falls at output pixel 16 of the 32 binned ones
    assert (ty - r0 - 0.5) / 2 == pytest.approx(p.geometry.centre[0] - 8)


def test_split_half_even_odd_frames(cli, tungsten, tmp_path):
    d, _ = tungsten
    out = tmp_path / "s.cxi"
    r = cli("preprocess", d / "frames.h5", "-o", out, *GEOM, "--split-half", "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["halves"] == [str(tmp_path / "s_a.cxi"), str(tmp_path / "s_b.cxi")]
    full = io.read_pattern(str(out))
    a = io.read_pattern(str(tmp_path / "s_a.cxi"))
    b = io.read_pattern(str(tmp_path / "s_b.cxi"))
    good = measured_from_mask(full.mask)
    np.testing.assert_array_equal(a.mask, full.mask)
    np.testing.assert_allclose(a.intensity + b.intensity, full.intensity, rtol=1e-5, atol=1e-3)
    # independent Poisson halves (5 frames each): the difference has variance ~ the total
    diff = (a.intensity - b.intensity)[good].astype(float)
    tot = full.intensity[good].astype(float)
    bright = tot > 100
    assert np.var(diff[bright] / np.sqrt(tot[bright])) == pytest.approx(1.0, abs=0.3)


def test_split_half_binomial_single_frame(tmp_path):
    import tifffile

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    lam = 400 * np.exp(-((yy - 31.6) ** 2 + (xx - 30.2) ** 2) / 50) * (1 + np.cos(0.9 * (xx - 30.2)) ** 2)
    tifffile.imwrite(tmp_path / "one.tif", rng.poisson(lam).astype(np.uint16))
    res = pp.preprocess([str(tmp_path / "one.tif")], energy_kev=8, distance=5, pixel=75e-6, split_half=True,
                        seed=3)
    assert res.report["mask_counts"]["beamstop"] == 0  # no beamstop in this pattern: none invented
    assert np.hypot(*(np.array(res.report["centre_px"]) - (31.6, 30.2))) < 0.3
    a, b = res.halves
    assert res.report["split_half"] == "binomial thinning p=0.5"
    np.testing.assert_array_equal(a.intensity + b.intensity, res.pattern.intensity)
    good = res.pattern.intensity > 50
    ratio = a.intensity[good].sum() / res.pattern.intensity[good].sum()
    assert ratio == pytest.approx(0.5, abs=0.01)


def test_find_centre_synthetic_subpixel():
    """A centro-symmetric speckle pattern with a beamstop, hot pixels and a gap: centre to < 0.1 px."""
    rng = np.random.default_rng(1)
    n = 96
    obj = np.zeros((n, n))
    obj[40:56, 38:60] = rng.random((16, 22))  # a real object: I(q) = I(-q)
    true = (47.3, 52.8)
    ky = np.fft.fftfreq(n)[:, None]
    kx = np.fft.fftfreq(n)[None, :]
    img = np.fft.fftshift(np.abs(np.fft.fft2(obj)) ** 2)  # centre at (48, 48)
    # move the centre to `true` by Fourier interpolation of the band-limited intensity
    spec = np.fft.fft2(img) * np.exp(-2j * np.pi * (ky * (true[0] - 48) + kx * (true[1] - 48)))
    img = np.abs(np.fft.ifft2(spec).real) * 50
    img = rng.poisson(img).astype(float)
    mask = np.zeros((n, n), np.uint32)
    yy, xx = np.mgrid[:n, :n]
    mask[(yy - true[0]) ** 2 + (xx - true[1]) ** 2 < 16] = MASK_BITS["beamstop"]
    img[mask > 0] = 0
    img[20, :] = 0
    mask[20, :] |= MASK_BITS["gap"]
    img[70, 30] = img[10, 80] = 1e7  # hot pixels, not in the mask: suspect-screened by preprocess only
    hot = np.zeros((n, n), bool)
    hot[70, 30] = hot[10, 80] = True
    cy, cx = centring.find_centre(img, (mask > 0) | hot)
    assert abs(cy - true[0]) < 0.1 and abs(cx - true[1]) < 0.1
    # the refinement from a guess (no FFT map, a local downhill walk) lands on the same centre
    ry, rx = centring.find_centre(img, (mask > 0) | hot, guess=(cy + 1.3, cx - 0.8), search=4.0)
    assert abs(ry - cy) < 0.02 and abs(rx - cx) < 0.02


def test_calibrate_threshold():
    raw = np.array([[100.0, 101.0, 103.0, 106.1]])
    dark = np.full((1, 4), 100.0)
    np.testing.assert_allclose(pp.calibrate(raw, dark, gain=2.0), [[0, 0.5, 1.5, 3.05]])
    np.testing.assert_allclose(pp.calibrate(raw, dark, gain=2.0, threshold=0.6), [[0, 0, 2, 3]])


# --------------------------------------------------------------------------- bad inputs


def _fails(cli, tmp_path, *args, match):
    out = tmp_path / "never.cxi"
    r = cli("preprocess", *args, "-o", out, *GEOM)
    assert r.exit_code == 1, (r.exit_code, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cxdi preprocess: error:"), r.stderr
    assert match in lines[0], lines[0]
    assert not out.exists() and not list(tmp_path.glob(".never*"))
    return lines[0]


def test_bad_inputs_fail_cleanly(cli, tmp_path):
    import h5py
    import tifffile

    rng = np.random.default_rng(0)
    good = rng.poisson(20, (4, 32, 32)).astype(np.uint32)
    io.write_lima(str(tmp_path / "ok.h5"), good)
    line = _fails(cli, tmp_path, f"{tmp_path / 'ok.h5'}::/entry_0000/nothing", match="no dataset /entry_0000/nothing")
    assert "/entry_0000/" in line and "/data" in line  # the message lists what the file holds
    tifffile.imwrite(tmp_path / "a.tif", good[0].astype(np.uint16))
    tifffile.imwrite(tmp_path / "b.tif", good[0, :30].astype(np.uint16))
    _fails(cli, tmp_path, tmp_path / "a.tif", tmp_path / "b.tif", match="frames of different shapes")
    nan = good.astype(np.float32)
    nan[2, 5, 5] = np.nan
    with h5py.File(tmp_path / "nan.h5", "w") as f:
        f["data"] = nan
    _fails(cli, tmp_path, tmp_path / "nan.h5", match="frame 2 holds NaN")
    neg = good.astype(np.int32)
    neg[1, 3, 3] = -7
    io.write_lima(str(tmp_path / "neg.h5"), neg)
    _fails(cli, tmp_path, tmp_path / "neg.h5", match="frame 1 holds negative values")
    io.write_lima(str(tmp_path / "zero.h5"), np.zeros((3, 32, 32), np.uint16))
    _fails(cli, tmp_path, tmp_path / "zero.h5", match="all selected frames are zero")
    tifffile.imwrite(tmp_path / "dark.tif", np.zeros((16, 16), np.uint16))
    _fails(cli, tmp_path, tmp_path / "ok.h5", "--dark", tmp_path / "dark.tif", match="dark frames are 16x16")
    io.write_lima(str(tmp_path / "big.h5"), rng.poisson(20, (16, 64, 64)).astype(np.uint32), compression=None)
    raw = (tmp_path / "big.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(raw[: len(raw) // 2])
    _fails(cli, tmp_path, tmp_path / "cut.h5", match="truncated")
    _fails(cli, tmp_path, tmp_path / "missing.h5", match="no such file")


def test_usage_errors(cli, tmp_path):
    io.write_lima(str(tmp_path / "ok.h5"), np.ones((2, 32, 32), np.uint32))
    r = cli("preprocess", tmp_path / "ok.h5", "-o", tmp_path / "x.cxi", "--energy", "8")
    assert r.exit_code == 2 and "--distance, --pixel needed" in r.stderr
    r = cli("preprocess", tmp_path / "ok.h5", "-o", tmp_path / "x.cxi", *GEOM, "--frames", "a:b")
    assert r.exit_code == 2
    r = cli("preprocess", tmp_path / "ok.h5", "-o", "-", *GEOM, "--split-half")
    assert r.exit_code == 2
    assert not (tmp_path / "x.cxi").exists()


def test_flat_zingers_and_markers(tmp_path):
    """Flat-field division (bad flat pixels flagged dead), a one-frame zinger flagged hot from the time
    series, Pilatus-style -1 gap markers flagged as a gap (masking.marker_bits), and photons conserved otherwise."""
    import tifffile

    rng = np.random.default_rng(4)
    frames = rng.poisson(50, (6, 32, 32)).astype(np.int32)
    frames[3, 10, 12] += 5000          # a zinger in one frame only
    frames[:, 20, :] = -1              # a module gap marked -1
    io.write_lima(str(tmp_path / "f.h5"), frames)
    flat = rng.uniform(1.0, 3.0, (32, 32))  # non-uniform: dividing by it shows in the sum
    flat[5, 5] = 0.0
    tifffile.imwrite(tmp_path / "flat.tif", flat.astype(np.float32))
    from cxdi_cli.io.frames import open_frames

    fl, bad = pp.load_flat(str(tmp_path / "flat.tif"), (32, 32))
    assert bad[5, 5] and bad.sum() == 1 and fl[~bad].mean() == pytest.approx(1.0)
    with open_frames(str(tmp_path / "f.h5")) as st:
        stats = pp.accumulate(st, flat=fl)
    m = pp.pixel_flags(stats)
    assert m[10, 12] & MASK_BITS["hot"] and np.count_nonzero(m & MASK_BITS["hot"]) == 1
    assert (m[20] & MASK_BITS["gap"]).all() and np.count_nonzero(m & MASK_BITS["gap"]) == 32
    # every frame divided by the normalised flat (markers count 0)
    assert np.ptp(fl[~bad]) > 0.5
    expected = (np.where(frames < 0, 0, frames) / fl).sum(0)
    np.testing.assert_allclose(stats.total[0], expected[0])
    np.testing.assert_allclose(stats.total, expected)


def test_centre_and_mask_one_chain_for_patterns_and_tilt_sums():
    """The chain `preprocess` and `assemble_files` share: the beamstop's zeros (never counted) kept out
    of the first centring, the beamstop found, a dead pixel flagged whether it never counted (photon
    counting) or reads a dark level (integrating: not empty), and a centro-symmetric pair of dark
    pixels (zeros of the transform, as along a tilt axis) left alone."""
    from cxdi_cli import fft

    n, c = 96, 48
    rng = np.random.default_rng(7)
    yy, xx = np.indices((n, n))
    obj = np.where((yy - c) ** 2 + (xx - c) ** 2 <= 11 ** 2, rng.uniform(0.0, 1.0, (n, n)), 0.0)
    ideal = np.abs(fft.cfftn(obj.astype(np.complex64), norm="ortho")) ** 2
    ideal *= 2e6 / ideal.sum()
    img = rng.poisson(ideal).astype(np.float64)
    img[(yy - c) ** 2 + (xx - c) ** 2 <= 4 ** 2] = 0.0          # beamstop shadow: never counts
    from scipy.ndimage import median_filter

    lit = np.argwhere((median_filter(ideal, 5) > 500) & ((yy - c) ** 2 + (xx - c) ** 2 > 8 ** 2))
    assert len(lit) >= 4
    dead_empty, dead_dark = (tuple(int(v) for v in lit[k]) for k in (0, len(lit) // 2))
    # the pair sits where a lone dark pixel would be dead, but the neighbourhood is not so bright that
    # a zero there is dead whatever its mate says (`masking.detect_outliers`)
    med = median_filter(ideal, 5)
    mid = np.argwhere((med > 150) & (med < 300) & (ideal > 150) & (yy > 0) & (xx > 0)
                       & (np.abs(yy - c) > 3) & (np.abs(xx - c) > 3))
    pair = tuple(int(v) for v in mid[0])
    img[dead_empty] = 0.0
    img[dead_dark] = 0.0                                         # reads its dark level: counts, but 0 photons
    mate = (2 * c - pair[0], 2 * c - pair[1])
    ideal_pair = min(ideal[pair], ideal[mate])
    img[pair] = img[mate] = 0.0                                  # a zero of |F|^2 and its Friedel mate
    empty = img <= 0
    empty[dead_dark] = False
    cm = centring.centre_and_mask(img, np.zeros((n, n), np.uint32), empty=empty)
    assert cm.found and abs(cm.centre[0] - c) < 0.1 and abs(cm.centre[1] - c) < 0.1, cm.centre
    bs = (cm.mask & MASK_BITS["beamstop"]) != 0
    assert bs[c, c] and bs.sum() >= 0.8 * np.pi * 16
    for p in (dead_empty, dead_dark):
        assert cm.mask[p] & MASK_BITS["dead"], p
    assert not cm.mask[pair] and not cm.mask[mate], (pair, ideal_pair)
    # without its dark mate, the same dark pixel is dead
    img[mate] = ideal[mate]
    lone = centring.centre_and_mask(img, np.zeros((n, n), np.uint32), empty=img <= 0, centre=cm.centre)
    assert lone.mask[pair] & MASK_BITS["dead"]
    # a given centre is kept as given, and no auto mask means no new bits but the detector's gaps
    given = centring.centre_and_mask(img, np.zeros((n, n), np.uint32), empty=empty, centre=(48.2, 47.9),
                                     auto_mask=False)
    assert not given.found and given.centre == (48.2, 47.9) and not given.mask.any()
