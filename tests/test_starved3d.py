"""Photon-starved 3D phasing (issue 15): the low-signal cut-off of the 3D default recipe."""

import numpy as np
import pytest

from cxdi_cli import io
from cxdi_cli.phasing import algorithms as alg, problem, regularise as reg, runs as phasing
from cxdi_cli.registration import nrms_error
from tests.test_phasing import state_at_truth, synthetic


def test_low_signal_shells_known_answer():
    """Shells 0-5 hold 4 photons per measured pixel, the rest 0.25: the masked pixels from shell 6 out
    are cut, never a measured one, never one behind the beamstop (shells 0-1, nothing measured)."""
    n = 24
    g = np.meshgrid(*[np.fft.fftfreq(n, 1.0 / n)] * 3, indexing="ij")
    r = np.rint(np.sqrt(sum(x * x for x in g))).astype(int)
    amp = np.where(r <= 5, 2.0, 0.5).astype(np.float32)
    kind = np.full(amp.shape, alg.MEASURED, np.int8)
    kind[g[0] > 2 * np.abs(g[2])] = alg.MASKED                # a wedge
    kind[r <= 1] = alg.MASKED                                 # a beamstop
    amp[kind == alg.MASKED] = 0
    idx = reg.low_signal_shells(amp, kind, photons=1.0)
    cut = np.zeros(amp.size, bool)
    cut[idx] = True
    cut = cut.reshape(amp.shape)
    assert np.array_equal(cut, (kind == alg.MASKED) & (r >= 6))
    assert reg.low_signal_shells(amp, kind, photons=0.1).size == 0   # every shell above 0.1 photons


def test_cut_step_zeroes_the_transform_there_and_nowhere_else():
    """One `cut` step on a 3D state at the truth (few photons, a beamstop and a missing wedge masked):
    the object's transform is 0 on the pixels `low_signal_shells` names, unchanged on every other
    pixel, and rho stays in the FFT buffer."""
    pattern, truth = synthetic(n=24, ndim=3, photons=2e4, seed=2)
    g = np.meshgrid(*[np.arange(24) - 12] * 3, indexing="ij")
    wedge = g[0] > 2 * np.abs(g[2])
    pattern.mask[wedge] |= np.uint32(1)
    pattern.intensity[wedge] = 0
    state, _ = state_at_truth(pattern, truth, positivity=False)
    before = np.fft.fftn(state.rho)
    idx = reg.low_signal_shells(state.amp, state.kind, photons=1.0)
    assert 0 < idx.size < before.size // 2
    reg.make_cut(photons=1.0)(state)
    after = np.fft.fftn(state.rho).reshape(-1)
    scale = np.abs(before).max()
    assert np.abs(after[idx]).max() < 1e-5 * scale
    keep = np.ones(after.size, bool)
    keep[idx] = False
    assert np.allclose(after[keep], before.reshape(-1)[keep], atol=1e-5 * scale)
    assert np.array_equal(state.buf, state.rho)


def test_default_recipe_3d_ends_with_the_cut():
    """3D volumes get the cut-off after the default recipe; 2D patterns and given recipes do not."""
    p3, _ = synthetic(n=24, ndim=3, photons=1e6, seed=1)
    prob = phasing.prepare(p3, phasing.Options(seed=1, check_oversampling=False))
    assert prob.info["recipe_3d"] == problem.DEFAULT_RECIPE_3D
    assert prob.steps[-1].name == "cut" and prob.n_iterations == 900
    own = phasing.prepare(p3, phasing.Options(seed=1, recipe="hio**10,er**5", check_oversampling=False))
    assert own.steps[-1].name == "er"
    p2, _ = synthetic(n=64, photons=1e6, seed=1)
    assert all(s.name != "cut" for s in phasing.prepare(p2, phasing.Options(seed=1, check_oversampling=False)).steps)


@pytest.mark.slow
def test_cut_lowers_the_error_of_a_photon_starved_tilt_series(assembled, tmp_path):
    """A 48^3 tilt series (+-70 deg, 2e4 photons per frame): the same runs (same seed) with and without
    the closing cut; every run closer to the truth with it (measured 0.54, 0.54 -> 0.34, 0.35)."""
    sim, vol = assembled(tmp_path, "--size", 48, "--photons", 2e4, "--angles", "-70:70:2", "--distance", 1,
                         "--seed", 0)
    pattern = io.read_pattern(str(vol))
    truth = io.read_reconstruction(str(sim / "truth.cxi")).runs[0].obj
    base = "hio**300,er**100,ml**50"
    errs = {}
    for recipe in (base, base + ",cut(photons=1)"):
        rec = phasing.phase(pattern, phasing.Options(recipe=recipe, runs=2, seed=1, threads=1))
        errs[recipe] = sorted((r.params["run_index"], nrms_error(r.obj, truth)) for r in rec.runs)
    print(errs)
    for (_, e0), (_, e1) in zip(errs[base], errs[base + ",cut(photons=1)"]):
        assert e1 < 0.9 * e0
