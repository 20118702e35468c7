"""cxdi simulate: the physics of the 2D kinds (far field, photon totals, truth, detector effects) and the CLI."""
import json
import math

import numpy as np
import pytest

from cxdi_cli import fft, geometry, io
from cxdi_cli.sim import pattern2d as sim
from cxdi_cli.sim.kinds import KINDS, simulate
from cxdi_cli.model import MASK_BITS, UsageError

BIT = MASK_BITS
LIMA = "::/entry_0000/measurement/data"


@pytest.fixture(scope="module")
def tungsten(tmp_path_factory):
    d = tmp_path_factory.mktemp("w")
    info = simulate("tungsten", d, seed=11, size=96)
    return d, info


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    d = tmp_path_factory.mktemp("c")
    info = simulate("cells", d, seed=12, size=96)
    return d, info


def _frames_tiff(folder, prefix):
    files = sorted(folder.glob(f"{prefix}_*.tif"))
    return np.stack([io.read_array(str(f)) for f in files])


# --------------------------------------------------------------------------- far field


def test_far_field_matches_fft_convention():
    """The direct DFT equals DESIGN §4's centred FFT of the zero-padded object at integer q (to 1e-10)."""
    rng = np.random.default_rng(0)
    rho = rng.standard_normal((20, 20)) + 1j * rng.standard_normal((20, 20))
    n, pitch = 64, 1.0
    padded = np.zeros((n, n), complex)
    padded[n // 2 - 10:n // 2 + 10, n // 2 - 10:n // 2 + 10] = rho
    ref = fft.cfftn(padded)
    q = (np.arange(n) - n // 2) / (n * pitch)
    got = sim.far_field(rho, pitch, q, q)
    assert np.abs(got - ref).max() < 1e-10 * np.abs(ref).max()


def test_tungsten_far_field_friedel_about_subpixel_centre():
    """A uniform-thickness single-material pattern is Friedel-symmetric about the true (sub-pixel) centre:
    |F(q)| = |F(-q)| at q = (i - ci) dq for the default fractional centre, to 1e-9 relative."""
    rho = sim.tungsten_object(1e-6, 2e-8, 150e-9, 8.0)
    dq = 1 / (64 * 2e-8) / 2
    qy = (np.arange(64) - 31.3) * dq
    qx = (np.arange(64) - 30.6) * dq
    a = np.abs(sim.far_field(rho, 2e-8, qy, qx)) ** 2
    b = np.abs(sim.far_field(rho, 2e-8, -qy, -qx)) ** 2
    assert np.abs(a - b).max() < 1e-9 * a.max()


def test_expected_friedel_symmetric_on_detector(tmp_path):
    """With the centre on a pixel corner (fraction 0.5), Friedel mates are pixels: I[i, j] = I[2ci - i, 2cj - j]."""
    info = simulate("tungsten", tmp_path, seed=1, size=64, beam_fraction=(0.5, 0.5))
    e = io.read_pattern(str(tmp_path / "expected.cxi")).intensity.astype(float)
    ci, cj = info["beam_centre"]
    i, j = np.indices(e.shape)
    mi, mj = np.rint(2 * ci - i).astype(int), np.rint(2 * cj - j).astype(int)
    ok = (mi >= 0) & (mi < 64) & (mj >= 0) & (mj < 64)
    assert ok.sum() > 1000
    diff = np.abs(e[ok] - e[mi[ok], mj[ok]])
    assert diff.max() < 1e-5 * e.max()


def test_cells_break_friedel_weakly(tmp_path):
    """Cells mix materials with different beta/delta: Friedel's law fails, but only weakly (weak absorption)."""
    rho = sim.cells_object(1e-6, 2e-8)
    dq = 1 / (64 * 2e-8) / 2
    q = (np.arange(64) - 32.0) * dq
    a = np.abs(sim.far_field(rho, 2e-8, q, q)) ** 2
    b = np.abs(sim.far_field(rho, 2e-8, -q, -q)) ** 2
    asym = np.abs(a - b).sum() / a.sum()
    assert 1e-5 < asym < 0.05


def test_tungsten_optical_constants():
    """delta, beta of W at 8 keV within 10 % of the tabulated ~4.6e-5 and ~4.0e-6; 150 nm shifts ~0.28 rad."""
    delta, beta = sim.tungsten_delta_beta(8.0)
    assert delta == pytest.approx(4.6e-5, rel=0.1)
    assert beta == pytest.approx(4.0e-6, rel=0.1)
    lam = 1.5498e-10
    assert 2 * math.pi * delta * 150e-9 / lam == pytest.approx(0.28, rel=0.1)


def test_specimens_are_what_they_claim():
    """Tungsten: one material, phase -2 pi delta t / lambda, amplitude exp(-2 pi beta t / lambda) where covered.
    Cells: weak phase objects (0.1-0.7 rad with inclusions), |T| > 0.97 everywhere (weak absorption)."""
    rho = sim.tungsten_object(2e-6, 2e-8, 150e-9, 8.0)
    t = rho + 1
    full = np.abs(rho) >= np.abs(rho).max() * (1 - 1e-9)
    delta, beta = sim.tungsten_delta_beta(8.0)
    lam = 1.5498e-10
    assert np.angle(t[full]) == pytest.approx(-2 * np.pi * delta * 150e-9 / lam, rel=1e-3)
    assert np.abs(t[full]) == pytest.approx(np.exp(-2 * np.pi * beta * 150e-9 / lam), rel=1e-3)
    assert 0.05 < full.mean() < 0.5  # letters cover part of their square, not all of it
    t = sim.cells_object(2e-6, 2e-8) + 1
    phase = -np.angle(t)
    assert 0.1 < np.quantile(phase[phase > 0.01], 0.5) < 0.3
    assert phase.max() < 0.8 and np.abs(t).min() > 0.97


# --------------------------------------------------------------------------- tungsten files


def test_tungsten_photon_totals(tungsten):
    """Expected photons on the whole detector = --photons; the frames' sum over good pixels matches the
    expected sum over the same pixels within 5 Poisson sigma."""
    d, info = tungsten
    p = io.read_pattern(str(d / "expected.cxi"))
    assert p.intensity.dtype == np.float32
    assert float(p.intensity.astype(float).sum()) == pytest.approx(info["photons_total"], rel=1e-5)
    frames = io.read_array(str(d / "frames.h5") + LIMA)
    assert frames.dtype == np.uint32 and frames.shape == (info["n_frames"], 96, 96)
    good = p.mask == 0
    got = frames[:, good].astype(float).sum()
    want = p.intensity[good].astype(float).sum()
    assert abs(got - want) < 5 * math.sqrt(want)
    # per pixel over frames: mean counts track the expectation (a Poisson dispersion check)
    lam = p.intensity[good].astype(float)
    counts = frames[:, good].astype(float).sum(axis=0)
    bright = lam > 100
    chi2 = np.mean((counts[bright] - lam[bright]) ** 2 / lam[bright])
    assert 0.8 < chi2 < 1.2


def test_truth_transform_matches_expected(tmp_path):
    """|cfftn(truth, ortho)|^2 averaged over each pixel's area (the sub-pixel q offsets of
    PIXEL_SUBSAMPLES, put in as phase ramps, with the beam centre's sub-pixel offset) = expected on the
    default crop to 1 % (L1); the point samples alone miss by more (pixels integrate |F|^2)."""
    for frac, tol in (((0.0, 0.0), 1e-2), ((0.3, 0.6), 1e-2)):
        info = simulate("tungsten", tmp_path, seed=2, size=96, beam_fraction=frac)
        e_full = io.read_pattern(str(tmp_path / "expected.cxi"))
        rec = io.read_reconstruction(str(tmp_path / "truth.cxi"))
        truth = rec.runs[0].obj.astype(np.complex128)
        n = info["crop"]
        assert truth.shape == (n, n) == (geometry.default_crop((96, 96), info["beam_centre"]),) * 2
        lam_d = info["wavelength_m"] * info["distance_m"]
        assert rec.pixel_size[0] == pytest.approx(lam_d / (n * info["pixel_m"]), rel=1e-6)
        c = info["beam_centre"]
        ci, cj = geometry.centre_pixel(c)
        k = np.arange(n) - n // 2
        ss = sim.PIXEL_SUBSAMPLES
        sub = (np.arange(ss) + 0.5) / ss - 0.5

        def sampled(sy, sx):
            ramp = np.exp(2j * np.pi * ((c[0] - ci + sy) * k[:, None] + (c[1] - cj + sx) * k[None, :]) / n)
            return np.abs(fft.cfftn(truth * ramp, norm="ortho")) ** 2

        model = np.mean([sampled(sy, sx) for sy in sub for sx in sub], axis=0)
        e = e_full.intensity[geometry.crop_window(c, n)].astype(float)
        assert np.abs(model - e).sum() / e.sum() < tol
        assert np.abs(sampled(0.0, 0.0) - e).sum() / e.sum() > 2 * np.abs(model - e).sum() / e.sum()
        assert e_full.geometry.centre == pytest.approx(tuple(c))


def test_truth_support_and_oversampling(tungsten):
    """The truth's energy lies in its support (dilated by the band-limit blur) and the specimen spans
    about N / sigma truth pixels."""
    from scipy.ndimage import binary_dilation

    d, info = tungsten
    run = io.read_reconstruction(str(d / "truth.cxi")).runs[0]
    sup = run.support.astype(bool)
    inside = np.abs(run.obj[binary_dilation(sup, iterations=3)]) ** 2
    assert inside.sum() > 0.99 * (np.abs(run.obj) ** 2).sum()
    rows, cols = np.nonzero(sup)
    extent = max(np.ptp(rows), np.ptp(cols)) + 1
    assert extent == pytest.approx(info["crop"] / info["oversampling"], abs=2.5)
    assert info["oversampling"] == pytest.approx(
        info["wavelength_m"] * info["distance_m"] / (info["pixel_m"] * info["specimen_size_m"]))


def test_tungsten_broken_pixels(tungsten):
    """Each broken pixel in experiment.json carries its bit in expected.cxi and behaves so in every frame."""
    d, info = tungsten
    saved = json.loads((d / "experiment.json").read_text())
    assert saved == json.loads(json.dumps(info))
    mask = io.read_pattern(str(d / "expected.cxi")).mask
    frames = io.read_array(str(d / "frames.h5") + LIMA).astype(np.int64)
    bp = info["broken_pixels"]
    assert len(bp["hot"]) >= 2 and len(bp["dead"]) >= 2 and bp["saturated"] == []
    normal = frames[:, mask == 0].max()
    for r, c in bp["hot"]:
        assert mask[r, c] & BIT["hot"]
        assert frames[:, r, c].min() > 5 * normal  # very high in every frame
    expected = io.read_pattern(str(d / "expected.cxi")).intensity / info["n_frames"]
    for r, c in bp["dead"]:
        assert mask[r, c] & BIT["dead"]
        assert (frames[:, r, c] == 0).all()
        assert expected[r, c] > 5.0  # a lit pixel (photons per frame): its silence is visible
    for r in info["gaps"]["rows"]:
        assert (mask[r, :] & BIT["gap"]).all() and (frames[:, r, :] == 0).all()
    for c in info["gaps"]["cols"]:
        assert (mask[:, c] & BIT["gap"]).all() and (frames[:, :, c] == 0).all()
    # beamstop: the disc around the true centre and the rod out to the detector edge, no counts behind it
    bs = (mask & BIT["beamstop"]) > 0
    cy, cx = info["beam_centre"]
    radius = info["beamstop"]["radius_px"]
    i, j = np.indices(mask.shape)
    disc = (i - cy) ** 2 + (j - cx) ** 2 <= radius ** 2
    assert bs[disc].all()
    assert (frames[:, bs] == 0).all()
    ur, uc = info["beamstop"]["rod_direction"]
    t = np.arange(0, 200)
    rr, cc = np.rint(cy + t * ur).astype(int), np.rint(cx + t * uc).astype(int)
    on = (rr >= 0) & (rr < 96) & (cc >= 0) & (cc < 96)
    assert bs[rr[on], cc[on]].all()
    assert min(rr[on].min(), cc[on].min()) == 0 or max(rr[on].max(), cc[on].max()) == 95  # reaches the edge
    # nothing else is broken
    gaps = (mask & BIT["gap"]) > 0
    assert np.count_nonzero(mask) == np.count_nonzero(bs | gaps) + len(bp["hot"]) + len(bp["dead"])


def test_gap_cross_near_beam(tmp_path):
    """--gap-cross-near-beam: the module-gap cross passes within a few pixels of the beam centre."""
    far = simulate("tungsten", tmp_path / "a", seed=1, size=256, frames=1)
    near = simulate("tungsten", tmp_path / "b", seed=1, size=256, frames=1, gap_cross_near_beam=True)

    def dist(info):
        cy, cx = info["beam_centre"]
        return min(abs(np.array(info["gaps"]["rows"]) - cy).min(), abs(np.array(info["gaps"]["cols"]) - cx).min())

    assert dist(near) <= 6 and dist(far) >= 15  # away: ~4 speckles and more
    # 516 pixels (Maxipix 2x2): two 256-pixel chips with a 4-pixel gap
    from cxdi_cli.sim.detector import module_gaps

    assert module_gaps(516) == (256, 4)


# --------------------------------------------------------------------------- cells files


def test_cells_integrating_detector(cells):
    """ADU = gain * photons + dark + read noise: darks give the dark level and the read noise, dark-subtracted
    frames / gain give the expected photons (slope within 1 %), dead pixels read the dark level, gaps 0."""
    d, info = cells
    frames = _frames_tiff(d / "frames", "frame").astype(float)
    darks = _frames_tiff(d / "darks", "dark").astype(float)
    assert io.read_array(str(d / "frames" / "frame_0000.tif")).dtype == np.uint16
    assert frames.shape == (info["n_frames"], 96, 96) and darks.shape[0] == info["n_darks"]
    p = io.read_pattern(str(d / "expected.cxi"))
    mask = p.mask
    good = mask == 0
    g, dark = info["adu_per_photon"], info["dark_adu"]
    assert darks[:, good].mean() == pytest.approx(dark, abs=5)
    assert darks[:, good].std(axis=0).mean() == pytest.approx(info["read_noise_adu"] * math.sqrt(
        (info["n_darks"] - 1) / info["n_darks"]), rel=0.1)
    offset = darks.mean(axis=0)
    photons = (frames - offset).sum(axis=0) / g
    lam = p.intensity.astype(float)
    sel = good & (lam > 50)
    slope = (photons[sel] * lam[sel]).sum() / (lam[sel] ** 2).sum()
    assert slope == pytest.approx(1.0, abs=0.01)
    assert photons[good].sum() == pytest.approx(lam[good].sum(), rel=0.01)
    for r, c in info["broken_pixels"]["dead"]:
        assert mask[r, c] & BIT["dead"]
        assert abs(frames[:, r, c].mean() - offset[r, c]) < 5 * info["read_noise_adu"]
        assert lam[r, c] / info["n_frames"] > 5.0
    signal = frames - offset
    assert len(info["broken_pixels"]["hot"]) >= 2
    for r, c in info["broken_pixels"]["hot"]:
        assert mask[r, c] & BIT["hot"]
        assert lam[r, c] / info["n_frames"] * g + dark < 2000  # drawn among dim pixels only
        near = signal[:, max(r - 3, 0):r + 4, max(c - 3, 0):c + 4].copy()
        near[:, min(r, 3), min(c, 3)] = 0
        assert signal[:, r, c].min() > 10000 and signal[:, r, c].min() > 10 * near.max()
    rows, cols = info["gaps"]["rows"], info["gaps"]["cols"]
    assert (frames[:, rows, :] == 0).all() and (frames[:, :, cols] == 0).all()
    assert (darks[:, rows, :] == 0).all()
    bs = (mask & BIT["beamstop"]) > 0
    assert np.abs(frames[:, bs & ~(mask & BIT["gap"]).astype(bool)] - dark).max() < 200


def test_cells_saturation(cells):
    """Some pixels near the beamstop hit the 16-bit ceiling in some frames; exactly those carry the saturated
    bit and are listed."""
    d, info = cells
    frames = _frames_tiff(d / "frames", "frame")
    mask = io.read_pattern(str(d / "expected.cxi")).mask
    sat = (frames == 65535).any(axis=0)
    assert info["saturation_adu"] == 65535
    assert sat.sum() >= 3
    listed = {tuple(p) for p in info["broken_pixels"]["saturated"]}
    assert listed == {(int(r), int(c)) for r, c in zip(*np.nonzero(sat))}
    assert (((mask & BIT["saturated"]) > 0) == sat).all()
    cy, cx = info["beam_centre"]
    r, c = np.nonzero(sat)
    assert np.hypot(r - cy, c - cx).max() < 6 * info["beamstop"]["radius_px"]  # near the beamstop


def test_cells_saturation_fluctuates_near_the_ceiling(tmp_path):
    """At a flux that puts the brightest pixels at the 16-bit ceiling, Poisson fluctuations saturate a pixel
    in some frames and not in others."""
    simulate("cells", tmp_path, seed=12, size=96, photons=8.5e7)
    some = (_frames_tiff(tmp_path / "frames", "frame") == 65535).sum(axis=0)
    assert ((some > 0) & (some < 10)).any()


# --------------------------------------------------------------------------- CLI


def test_cli_writes_files_and_seed_reproduces(cli, tmp_path):
    r = cli("simulate", "tungsten", "-o", tmp_path / "a", "--size", 64, "--seed", 5, "--frames", 3, "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["schema"] == "cxdi.simulate/1" and rep["n_frames"] == 3 and rep["seed"] == 5
    for name in ("frames.h5", "truth.cxi", "expected.cxi", "experiment.json"):
        assert (tmp_path / "a" / name).is_file()
    assert json.loads((tmp_path / "a" / "experiment.json").read_text()) == rep
    assert "cxdi preprocess" in rep["preprocess"] and "frames.h5" in rep["preprocess"]
    assert cli("simulate", "tungsten", "-o", tmp_path / "b", "--size", 64, "--seed", 5, "--frames", 3).exit_code == 0
    assert cli("simulate", "tungsten", "-o", tmp_path / "c", "--size", 64, "--seed", 6, "--frames", 3).exit_code == 0
    a, b, c = (io.read_array(str(tmp_path / x / "frames.h5") + LIMA) for x in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with io.open_h5(str(tmp_path / "a" / "frames.h5")) as f:  # LIMA: the same dataset at both paths
        assert f["/entry_0000/instrument/maxipix/data"].id == f["/entry_0000/measurement/data"].id


CONTRACT_KEYS = {"schema", "kind", "energy_kev", "distance_m", "pixel_m", "detector_shape", "beam_centre", "crop",
                 "n_frames", "photons_total", "oversampling", "specimen_size_m", "saturation_adu",
                 "adu_per_photon", "dark_adu", "broken_pixels", "beamstop", "gaps", "files", "preprocess", "seed"}


def test_cli_gap_cross_flag_and_contract_keys(cli, tmp_path):
    r = cli("simulate", "tungsten", "-o", tmp_path, "--size", 128, "--frames", 1, "--gap-cross-near-beam", "--json")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert CONTRACT_KEYS <= set(info)
    assert set(info["broken_pixels"]) == {"hot", "dead", "saturated"}
    assert {"radius_px", "rod_width_px", "rod_direction"} <= set(info["beamstop"])
    cy, cx = info["beam_centre"]
    assert min(abs(np.array(info["gaps"]["rows"]) - cy).min(), abs(np.array(info["gaps"]["cols"]) - cx).min()) <= 6
    assert cy % 1 != 0 and cx % 1 != 0  # not on a pixel centre


def test_cli_cells_files(cli, tmp_path):
    out = tmp_path / "new" / "cells"  # created if missing
    r = cli("simulate", "cells", "-o", out, "--size", 64, "--frames", 4, "--darks", 2, "--seed", 1)
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"frame_{k:04d}.tif" for k in range(4)]
    assert sorted(p.name for p in (out / "darks").iterdir()) == ["dark_0000.tif", "dark_0001.tif"]
    # a re-run with fewer frames leaves no stale frame behind
    assert cli("simulate", "cells", "-o", out, "--size", 64, "--frames", 2, "--darks", 1).exit_code == 0
    assert len(list((out / "frames").iterdir())) == 2 and len(list((out / "darks").iterdir())) == 1
    info = json.loads((out / "experiment.json").read_text())
    assert info["kind"] == "cells" and info["dark_adu"] > 0 and info["files"]["darks"]
    assert CONTRACT_KEYS <= set(info)


@pytest.mark.parametrize("args", [
    ["simulate", "nosuchkind", "-o", "{d}"],
    ["simulate", "tungsten", "-o", "{d}", "--size", "8"],
    ["simulate", "tungsten", "-o", "{d}", "--photons", "-1"],
    ["simulate", "tungsten", "-o", "{d}", "--frames", "0"],
    ["simulate", "tungsten", "-o", "{d}", "--darks", "3"],
    ["simulate", "cells", "-o", "{d}", "--thickness", "1e-7"],
    ["simulate", "cells", "-o", "{d}", "--oversampling", "1.5"],
    ["simulate", "tungsten", "-o", "{d}", "--size", "abc"],
    ["simulate", "tungsten"],
])
def test_cli_bad_options_exit_2(cli, tmp_path, args):
    d = tmp_path / "out"
    r = cli(*[a.format(d=d) for a in args])
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert not d.exists() or not any(d.iterdir())


def test_output_is_a_file_exit_1(cli, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = cli("simulate", "tungsten", "-o", f, "--size", 64)
    assert r.exit_code == 1 and "not a folder" in r.stderr
    assert f.read_text() == "x"


def test_library_rejects_unknown_options(tmp_path):
    with pytest.raises(UsageError):
        simulate("tungsten", tmp_path, size=64, darks=3)
    with pytest.raises(UsageError):
        simulate("nope", tmp_path)
    assert set(KINDS) >= {"tungsten", "cells", "particle3d"}


# --------------------------------------------------------------------------- hard cases (issue 12)


def test_gap_through_beam_puts_q0_in_the_cross(tmp_path):
    """--gap-through-beam: the beam centre lies inside both module gaps; the expected mask flags them."""
    info = simulate("tungsten", tmp_path, seed=3, size=96, gap_through_beam=True, beamstop=1.5)
    ci, cj = info["beam_centre"]
    rows, cols = info["gaps"]["rows"], info["gaps"]["cols"]
    assert min(rows) - 0.5 <= ci <= max(rows) + 0.5 and min(cols) - 0.5 <= cj <= max(cols) + 0.5
    m = io.read_pattern(str(tmp_path / "expected.cxi")).mask
    assert m[int(round(ci)), 5] & BIT["gap"] and m[5, int(round(cj))] & BIT["gap"]
    assert info["gap_through_beam"] is True and info["beamstop"]["radius_px"] == pytest.approx(1.5 * 4)
    with pytest.raises(UsageError, match="choose one"):
        simulate("tungsten", tmp_path / "x", size=96, gap_through_beam=True, gap_cross_near_beam=True)


def test_psf_is_a_photon_conserving_detector_plane_blur(tmp_path):
    """--psf F: the expected pattern is the coherent one convolved with a Gaussian of FWHM F px (photons kept
    to 1e-3); speckle contrast drops; experiment.json records the FWHM; the truth is the coherent object."""
    a = simulate("tungsten", tmp_path / "a", seed=2, size=96)
    b = simulate("tungsten", tmp_path / "b", seed=2, size=96, psf=2.0)
    assert a["psf"] is None and b["psf"] == {"kind": "gaussian", "fwhm_px": 2.0}
    ea = io.read_pattern(str(tmp_path / "a" / "expected.cxi")).intensity.astype(float)
    eb = io.read_pattern(str(tmp_path / "b" / "expected.cxi")).intensity.astype(float)
    from cxdi_cli.sim import hard2d

    assert np.allclose(eb, hard2d.partial_coherence(ea, 2.0), rtol=1e-5, atol=1e-3 * ea.max() * 1e-3)
    assert eb.sum() == pytest.approx(ea.sum(), rel=1e-3)
    # contrast between neighbours: the blur fills the speckle minima
    def rel_step(e):
        return np.median(np.abs(np.diff(e, axis=1)) / (0.5 * (e[:, 1:] + e[:, :-1]) + 1e-9))

    assert rel_step(eb) < 0.6 * rel_step(ea)
    ta = io.read_reconstruction(str(tmp_path / "a" / "truth.cxi")).runs[0].obj
    tb = io.read_reconstruction(str(tmp_path / "b" / "truth.cxi")).runs[0].obj
    assert np.array_equal(ta, tb)
    with pytest.raises(UsageError, match="--psf"):
        simulate("tungsten", tmp_path / "c", size=96, psf=-1.0)


def test_strong_phase_cells():
    """cells --phase-max 1.8: the largest phase shift is 1.8 rad (a strong phase object, range > 1 rad);
    absorption scales with it, so the object stays one of thicker cells."""
    t = sim.cells_object(2e-6, 2e-8, phase_max=1.8) + 1
    phase = -np.angle(t)
    assert 1.6 < phase.max() <= 1.8 + 1e-9
    assert np.ptp(phase) > 1.0
    weak = -np.angle(sim.cells_object(2e-6, 2e-8) + 1)
    assert np.corrcoef(phase.ravel(), weak.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("mode", ["subtracted", "symmetrised"])
def test_processed_pattern(tmp_path, mode):
    """--processed: processed.tif is background-subtracted (non-integer, >= 0, photons within 2 % of the
    expected ones on good pixels), ~4 % of the bright pixels are exact zeros (flagged 'zero' in the true
    mask), gaps and broken pixels read 0; 'symmetrised' is centro-symmetric about the (on-pixel) centre."""
    info = simulate("tungsten", tmp_path, seed=4, size=96, processed=mode, oversampling=3.0)
    p = info["processed"]
    assert p["mode"] == mode and info["files"]["processed"] == "processed.tif"
    assert "processed.tif" in info["preprocess"]
    data = io.read_array(str(tmp_path / "processed.tif")).astype(float)
    exp = io.read_pattern(str(tmp_path / "expected.cxi"))
    zeros = (exp.mask & BIT["zero"]) != 0
    assert 0.03 <= p["zeros_fraction_of_bright"] <= 0.05 and zeros.sum() == p["zeros_planted"]
    assert np.all(data[zeros] == 0) and data.min() >= 0
    assert (exp.intensity[zeros] >= 20).all()
    assert np.mean(data[data > 0] != np.round(data[data > 0])) > 0.9
    assert np.all(data[exp.mask & BIT["gap"] != 0][:10] == 0) or mode == "symmetrised"
    good = exp.mask == 0
    assert data[good].sum() == pytest.approx(exp.intensity[good].astype(float).sum(), rel=0.02)
    if mode == "symmetrised":
        ci, cj = info["beam_centre"]
        assert ci == int(ci) and cj == int(cj)
        i, j = np.indices(data.shape)
        mi, mj = (2 * int(ci) - i), (2 * int(cj) - j)
        ok = (mi >= 0) & (mi < 96) & (mj >= 0) & (mj < 96)
        assert np.array_equal(data[ok], data[mi[ok], mj[ok]])


def test_hard_case_family_is_valid():
    """Every named hard case is a kind with options that kind accepts (the harness relies on it)."""
    import inspect

    from cxdi_cli.sim.hard2d import HARD_CASES
    from cxdi_cli.sim.tilt3d import simulate_particle3d

    assert len([c for c in HARD_CASES.values() if c[0] != "particle3d"]) >= 5
    for name, (kind, opts, _) in HARD_CASES.items():
        fn = simulate_particle3d if kind == "particle3d" else KINDS[kind]
        assert set(opts) <= set(inspect.signature(fn).parameters), name
    # the 3D case's default tilt range leaves a 40 degree missing wedge
    start, stop, _ = inspect.signature(simulate_particle3d).parameters["angles"].default
    assert 180 - (stop - start) == 40


def test_pixel_samples_one_is_the_point_sampled_pattern(tmp_path):
    """--pixel-samples 1 samples |F|^2 at the pixel centres (the simulator before pixel integration); the
    default averages 3 x 3 points of each pixel, which fills the point zeros of |F|^2 (speckle vortices) a
    pixel cannot record: the dimmest bright-region pixel of the integrated pattern is far above the point
    sample's."""
    a = simulate("tungsten", tmp_path / "a", seed=2, size=96, pixel_samples=1, oversampling=3.0)
    b = simulate("tungsten", tmp_path / "b", seed=2, size=96, oversampling=3.0)
    assert a["pixel_samples"] == 1 and b["pixel_samples"] == sim.PIXEL_SUBSAMPLES == 3
    ea = io.read_pattern(str(tmp_path / "a" / "expected.cxi")).intensity.astype(float)
    eb = io.read_pattern(str(tmp_path / "b" / "expected.cxi")).intensity.astype(float)
    assert eb.sum() == pytest.approx(ea.sum(), rel=1e-6)
    from scipy.ndimage import maximum_filter

    bright = maximum_filter(ea, 3) > 1e3
    assert eb[bright].min() > 10 * ea[bright].min()
    with pytest.raises(UsageError, match="--pixel-samples"):
        simulate("tungsten", tmp_path / "c", size=96, pixel_samples=0)
