"""`cxdi simulate particle3d`: the tilt frames are the exact transform of the specimen on the Ewald sphere."""
import json

import h5py
import numpy as np
import pytest

from cxdi_cli import fft, geometry, io
from cxdi_cli.model import wavelength_from_kev
from cxdi_cli.sim.tilt3d import (
    _sphere_form,
    distance_for_curvature,
    edge_curvature_voxels,
    make_particle,
    simulate_particle3d,
)


@pytest.fixture(scope="module")
def bright(tmp_path_factory):
    """Noise-free (rounded) frames at a few tilts, bright enough that rounding is negligible."""
    d = tmp_path_factory.mktemp("p3d_bright")
    exp = simulate_particle3d(d, size=48, photons=1e10, noise=False, angles=(-60, 60, 30), seed=3)
    return d, exp


def _frames(d):
    with h5py.File(d / "tilts.h5", "r") as f:
        return f["/entry_0000/measurement/data"][()], f["/entry_0000/measurement/omega"][()]


def test_sphere_form_and_particle_transform_at_zero():
    x = np.array([0.0, 1e-3, 0.5, 2.0, 4.493409])      # 4.4934: first zero of the ball's transform
    f = _sphere_form(x)
    assert f[0] == 1.0 and abs(f[1] - 1) < 1e-6
    assert abs(f[4]) < 1e-6
    p = make_particle(50e-9, seed=1)
    # F(0) = integral of the density: body volume - pore volumes + 2 * helix volumes
    vols = 4 / 3 * np.pi * np.abs(np.linalg.det(p.axes))
    assert np.isclose(p.transform(np.zeros((3, 1)))[0].real, np.sum(vols * p.densities), rtol=1e-12)
    # Friedel: a real density gives F(-q) = conj F(q)
    q = np.random.default_rng(0).normal(size=(3, 20)) * 2e7
    assert np.allclose(p.transform(-q), np.conj(p.transform(q)), rtol=1e-10, atol=1e-30)
    assert p.kinds.count("pore") >= 5 and p.kinds.count("helix") == 12


def test_frames_match_direct_sum_of_truth(bright):
    """Exact transform of the sampled truth (a direct sum over its voxels at the pixel's exact Ewald q,
    rotated by R_y(-omega), times the solid angle) against the simulated frame: the truth is the
    band-limited object (N^3 samples of F), so the two agree to the truncation of its transform: within
    5 % of the local intensity (5x5 mean, or the pixel's own if higher) at every tested pixel of the inner
    half of the detector, 1 % summed over them, and 1e-3 at the bright centre."""
    d, exp = bright
    frames, omegas = _frames(d)
    truth = io.read_reconstruction(str(d / "truth.cxi")).runs[0].obj.astype(np.complex128)
    n = truth.shape[0]
    dq, lam, dist = exp["q_pitch_m"], wavelength_from_kev(exp["energy_kev"]), exp["distance_m"]
    r = (np.arange(n) - n // 2) / (n * dq)
    qd = geometry.pixel_q(tuple(exp["detector_shape"]), tuple(exp["beam_centre"]), dist, exp["pixel_m"], lam)
    rng = np.random.default_rng(1)
    errs, bright_errs, diffs = [], [], []
    for k, w in enumerate(omegas):
        for _ in range(5):
            i, j = rng.integers(12, 36, 2)
            q = geometry.rotation_y(np.deg2rad(-w)) @ qd[:, i, j]
            ph = np.exp(-2j * np.pi * (q[2] * r[:, None, None] + q[1] * r[None, :, None] + q[0] * r[None, None, :]))
            amp = (truth * ph).sum() / np.sqrt(n ** 3)
            expected = abs(amp) ** 2 * (1 + lam * qd[2, i, j]) ** 3
            # relative to the local level (a pixel may sit in a deep minimum of the speckle)
            local = np.mean(frames[k, i - 2:i + 3, j - 2:j + 3].astype(float))
            errs.append(abs(expected - frames[k, i, j]) / max(float(frames[k, i, j]), local))
            diffs.append((abs(expected - frames[k, i, j]), float(frames[k, i, j])))
        q0 = geometry.rotation_y(np.deg2rad(-w)) @ qd[:, 24, 24]
        ph = np.exp(-2j * np.pi * (q0[2] * r[:, None, None] + q0[1] * r[None, :, None] + q0[0] * r[None, None, :]))
        expected = abs((truth * ph).sum()) ** 2 / n ** 3 * (1 + lam * qd[2, 24, 24]) ** 3
        bright_errs.append(abs(expected - frames[k, 24, 24]) / frames[k, 24, 24])
    assert max(errs) < 0.05, errs
    assert np.median(errs) < 0.015
    assert sum(dd for dd, _ in diffs) / sum(v for _, v in diffs) < 0.01
    assert max(bright_errs) < 1e-3, bright_errs


def test_truth_normalisation_and_pixel(bright):
    d, exp = bright
    rec = io.read_reconstruction(str(d / "truth.cxi"))
    n = exp["crop"]
    assert rec.runs[0].obj.shape == (n, n, n)
    assert np.allclose(rec.pixel_size, [1 / (n * exp["q_pitch_m"])] * 3)
    lam = wavelength_from_kev(8.0)
    assert np.isclose(exp["q_pitch_m"], 75e-6 / (lam * exp["distance_m"]))
    # |cfftn(truth, ortho)|^2 at q = 0 is the expected photons of a pixel at q = 0; the brightest frame
    # pixel (beam centre 0.3 px off) sees slightly less
    i0 = np.abs(fft.cfftn(rec.runs[0].obj.astype(np.complex128), norm="ortho")[n // 2, n // 2, n // 2]) ** 2
    frames, _ = _frames(d)
    assert 0.9 * i0 < frames.max() <= i0
    # support: the particle's extent matches the oversampling
    sup = rec.runs[0].support
    ext = np.ptp(np.argwhere(sup), axis=0).max() + 1
    assert abs(ext - n / exp["oversampling"]) <= 2


def test_photon_totals_and_poisson(tmp_path):
    exp = simulate_particle3d(tmp_path, size=32, photons=1e6, angles=(-70, 70, 5), seed=2)
    frames, omegas = _frames(tmp_path)
    assert frames.dtype == np.uint32 and frames.shape == (29, 32, 32)
    assert np.allclose(omegas, np.arange(-70, 71, 5))
    assert np.allclose(np.loadtxt(tmp_path / "angles.txt"), omegas)
    n = len(omegas)
    assert np.isclose(exp["photons_expected_total"], 1e6 * n)
    # Poisson: total within 5 sigma of its expectation
    assert abs(frames.sum(dtype=np.float64) - 1e6 * n) < 5 * np.sqrt(1e6 * n)
    assert exp["photons_total"] == frames.sum(dtype=np.float64)
    info = json.loads((tmp_path / "experiment.json").read_text())
    for key in ("schema", "kind", "energy_kev", "distance_m", "pixel_m", "detector_shape", "beam_centre", "crop",
                "n_frames", "photons_total", "oversampling", "specimen_size_m", "broken_pixels", "beamstop",
                "gaps", "files", "preprocess", "seed"):
        assert key in info
    assert info["kind"] == "particle3d" and info["n_frames"] == n and info["oversampling"] >= 3


def test_handedness_mirror_gives_different_frames(tmp_path):
    """The helix is chiral: the enantiomer's frames differ far beyond the noise (for a real density the
    mirror x -> -x equals a 180 deg turn about x, which a tilt series about y does not contain)."""
    a = simulate_particle3d(tmp_path / "a", size=32, photons=1e7, angles=(-60, 60, 20), seed=4)
    simulate_particle3d(tmp_path / "b", size=32, photons=1e7, angles=(-60, 60, 20), seed=4, mirror=True)
    simulate_particle3d(tmp_path / "c", size=32, photons=1e7, angles=(-60, 60, 20), seed=4, noise=False)
    fa, _ = _frames(tmp_path / "a")
    fb, _ = _frames(tmp_path / "b")
    fc, _ = _frames(tmp_path / "c")
    fa, fb, fc = (x.astype(float) for x in (fa, fb, fc))
    noise = np.abs(fa - fc).sum() / fc.sum()
    mirror = np.abs(fb - fc).sum() / fc.sum()
    assert noise < 0.02
    assert mirror > 10 * noise and mirror > 0.15
    assert a["particle"]["helix_handedness"] == "right"


def test_beamstop_and_curvature_helpers(tmp_path):
    exp = simulate_particle3d(tmp_path, size=32, photons=1e6, angles=(-10, 10, 10), beamstop=1.0)
    frames, _ = _frames(tmp_path)
    bs = io.read_array(str(tmp_path / "beamstop.tif")) > 0
    assert bs.sum() > 10 and np.all(frames[:, bs] == 0)
    assert exp["files"]["mask"] == "beamstop.tif" and "--mask beamstop.tif" in exp["preprocess"]
    d = distance_for_curvature(64, 75e-6, 4.0)
    assert abs(edge_curvature_voxels(64, 75e-6, d) - 4.0) < 0.2


def test_cli_simulate_particle3d(cli, tmp_path):
    r = cli("simulate", "particle3d", "-o", tmp_path / "s", "--size", 32, "--frames", 15, "--seed", 1, "--json")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["n_frames"] == 15 and info["detector_shape"] == [32, 32]
    assert (tmp_path / "s" / "tilts.h5").exists() and (tmp_path / "s" / "truth.cxi").exists()
    r = cli("simulate", "particle3d", "-o", tmp_path / "t", "--size", 32, "--darks", 3)
    assert r.exit_code == 2 and "--darks" in r.stderr


@pytest.mark.parametrize("kind", ["tungsten", "particle3d"])
def test_output_folder_errors_match_the_2d_kinds(cli, tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "file"
    f.write_text("x")
    r = cli("simulate", kind, "-o", f, "--size", 64)
    assert r.exit_code == 1 and "not a folder" in r.stderr
    assert f.read_text() == "x"
    r = cli("simulate", kind, "-o", "-", "--size", 64)
    assert r.exit_code == 2 and not (tmp_path / "-").exists()


def test_cli_angles_range_or_comma_list(cli, tmp_path):
    r = cli("simulate", "particle3d", "-o", tmp_path / "s", "--size", 32, "--angles", "-20,0,25", "-q")
    assert r.exit_code == 0, r.stderr
    assert np.allclose(np.loadtxt(tmp_path / "s" / "angles.txt"), [-20, 0, 25])
    for bad in ("1:2", "a,b", "10,5"):
        r = cli("simulate", "particle3d", "-o", tmp_path / "t", "--size", 32, "--angles", bad)
        assert r.exit_code == 2 and "angles" in r.stderr, (bad, r.stderr)
