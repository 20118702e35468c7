"""Known answers for the regularised steps: gps, tv, cpower, oss (cxdi_cli/phasing/regularise.py)."""
import numpy as np
import pytest

from cxdi_cli import fft
from cxdi_cli.phasing import algorithms as alg
from cxdi_cli.phasing import missing_modes as mm
from cxdi_cli.phasing import recipe as rcp
from cxdi_cli.phasing import regularise as reg
from cxdi_cli.phasing import runs as phasing
from cxdi_cli.registration import nrms_error
from tests.test_phasing import synthetic


def _state(pattern, truth, start=None, positivity=False):
    """A run's state on the true support, rho = `start` (default: the truth), no shrink-wrap."""
    a = np.abs(truth)
    sup = a > 1e-3 * a.max()
    opts = phasing.Options(recipe="er", support_update=0, free_fraction=0.0, check_oversampling=False)
    prob = phasing.prepare(pattern, opts, support=sup)
    pair = fft.FFTPair(prob.shape)
    rho = np.fft.ifftshift(truth if start is None else start).astype(np.complex64)
    pair.buffer[...] = rho
    return alg.State(pair=pair, rho=rho, amp=prob.amp, kind=prob.kind, support=prob.support.copy(),
                     positivity=positivity, support_update=0, initial_support_size=int(sup.sum()))


def _run(state, recipe):
    for step in rcp.flatten(phasing.parse_recipe(recipe)):
        fn = alg.build(step.name, dict(step.params))
        for _ in range(step.count):
            fn(state)
    return np.fft.fftshift(state.rho * state.support)


def test_steps_in_the_recipe_language():
    items = phasing.parse_recipe("gps(t=1,s=0.9,sigma=1,eps=0)**3,tv(weight=0.02,beta=0,n=5)**2,"
                                 "cpower(kappa=2,beta=0.9)**2,oss(beta=0.9,n=10)**3")
    assert phasing.count_iterations(items) == 10
    pattern, truth = synthetic(n=32, seed=3)
    state = _state(pattern, truth)
    obj = _run(state, rcp.format_recipe(items))
    assert state.iteration == 10
    assert np.array_equal(state.buf, state.rho)          # the invariant every step keeps
    assert nrms_error(obj, truth) < 0.05                 # started at the solution: every step keeps it
    with pytest.raises(ValueError):
        alg.build("gps", {"t": -1.0})


def test_gps_with_unit_steps_is_hio_on_rho_minus_y():
    """s = t = 1 without smoothing: GPS is HIO (beta = 1) on u = rho - y (module docstring)."""
    pattern, truth = synthetic(n=48, seed=4, noise=False)
    rng = np.random.default_rng(0)
    start = truth * np.exp(1j * rng.uniform(-1, 1, truth.shape)).astype(np.complex64)
    a, b = _state(pattern, truth, start), _state(pattern, truth, start)
    _run(a, "hio(beta=1)**20")
    _run(b, "gps(t=1,s=1,sigma=0)**20")
    u = b.rho - b.ml["gps_y"]
    assert np.linalg.norm(u - a.rho) < 1e-4 * np.linalg.norm(a.rho)


def test_gps_converges_bright():
    pattern, truth = synthetic(n=64, photons=1e8, seed=1)
    opts = phasing.Options(recipe="gps**300,er**100", runs=3, seed=3, threads=1, positivity=True,
                           consensus=False, autocorrelation_threshold=0.1, support_threshold=0.2)
    rec = phasing.phase(pattern, opts)
    assert min(nrms_error(r.obj, truth) for r in rec.runs) < 0.02


def test_tv_denoise_known_answers():
    rng = np.random.default_rng(1)
    clean = np.zeros((40, 40), np.float32)
    clean[10:30, 12:28] = 1.0
    noisy = clean + rng.normal(0, 0.2, clean.shape).astype(np.float32)
    u, _ = reg.tv_denoise(noisy, 0.15, n=50)
    assert np.linalg.norm(u - clean) < 0.5 * np.linalg.norm(noisy - clean)
    flat = np.full((16, 16), 3.0, np.float32)
    assert np.allclose(reg.tv_denoise(flat, 1.0, n=20)[0], flat, atol=1e-5)   # TV of a constant is 0
    assert np.array_equal(reg.tv_denoise(noisy, 0.0)[0], noisy)


@pytest.mark.parametrize("photons", [1e4, 3e4])
def test_tv_lowers_the_error_photon_starved(photons):
    """From the truth, 100 iterations on a photon-starved pattern: ER fits the noise, TV keeps closer."""
    pattern, truth = synthetic(n=64, photons=photons, beamstop=2.5, seed=1)
    e_er = nrms_error(_run(_state(pattern, truth), "er**100"), truth)
    e_tv = nrms_error(_run(_state(pattern, truth), "tv(weight=0.02)**100"), truth)
    assert e_tv < 0.92 * e_er


@pytest.mark.parametrize("beamstop", [2.5, 5.0])
def test_power_bound_above_the_truth(beamstop):
    """kappa = 4 times the Porod bound holds the true intensity behind the beamstop; partly measured
    shells get no bound."""
    pattern, truth = synthetic(n=64, photons=1e8, beamstop=beamstop, seed=1, noise=False)
    a = np.abs(truth)
    sup = np.fft.ifftshift(a > 1e-3 * a.max())
    prob = phasing.prepare(pattern, phasing.Options(recipe="er", free_fraction=0, check_oversampling=False),
                           support=np.fft.fftshift(sup))
    bound = reg.power_bound(prob.amp, prob.kind, extent=float(sup.sum()) ** 0.5)
    true_i = np.fft.ifftshift(np.abs(fft.cfftn(truth, norm="ortho")) ** 2)
    masked = prob.kind == alg.MASKED
    assert np.all(np.isfinite(bound[masked]))            # a round beamstop: every masked shell is empty
    assert np.all(4 * bound[masked] >= true_i[masked])
    assert np.all(np.isinf(bound[~masked]))
    kind = prob.kind.copy()
    kind.reshape(-1)[::7] = alg.MASKED                   # sparse masked pixels in measured shells: no bound
    sparse = reg.power_bound(prob.amp, kind, extent=float(sup.sum()) ** 0.5)
    assert np.all(np.isinf(sparse[(kind == alg.MASKED) & ~masked]))
    ring = reg.power_bound(prob.amp, kind, extent=float(sup.sum()) ** 0.5, shells=True)
    r = np.rint(reg._radius(prob.amp.shape)).astype(int)
    shell = r == int(beamstop) + 3                       # shells=True: the shell's largest measured value
    assert ring[shell].max() == pytest.approx(float((prob.amp[shell & (kind != alg.MASKED)] ** 2).max()), rel=1e-5)


def test_cpower_restores_the_low_frequencies_hio_leaves_wrong():
    """Truth plus 3x its norm of the leading unconstrained mode of a 7-pixel beamstop: invisible to the
    data (ER keeps it), slowly drained by HIO, clipped by the power bound."""
    pattern, truth = synthetic(n=64, photons=1e8, beamstop=7, seed=1, noise=False)
    a = np.abs(truth)
    sup = a > 1e-3 * a.max()
    mode = mm.missing_modes(sup, pattern.mask != 0, k=2, n_modes=1).modes[0]
    start = truth + mode * np.float32(3 * np.linalg.norm(truth))
    out = {rec: _run(_state(pattern, truth, start), rec) for rec in ("er**100", "hio**100", "cpower**100")}
    err = {k: nrms_error(v, truth) for k, v in out.items()}
    assert err["er**100"] > 0.3                      # the mode is invisible to the constraints
    assert err["cpower**100"] < 0.5 * err["hio**100"]
    beam = pattern.mask != 0                          # the low frequencies behind the beamstop

    def low_error(obj):
        f, t = fft.cfftn(obj, norm="ortho"), fft.cfftn(truth, norm="ortho")
        return np.linalg.norm(np.abs(f[beam]) - np.abs(t[beam])) / np.linalg.norm(t[beam])

    assert low_error(out["cpower**100"]) < 0.5 * low_error(out["hio**100"])


def test_oss_converges_photon_starved():
    """OSS from random starts on a 1e5-photon pattern: the best start within 0.2 of the truth, and no
    worse than HIO's best start at the same budget (measured: OSS 0.06-0.15, HIO 0.13-0.16)."""
    pattern, truth = synthetic(n=64, photons=1e5, beamstop=2.5, seed=1)
    best = {}
    for recipe in ("oss**300,er**100", "hio**300,er**100"):
        opts = phasing.Options(recipe=recipe, runs=3, seed=3, threads=1, positivity=True, consensus=False,
                               autocorrelation_threshold=0.1, support_threshold=0.2)
        best[recipe] = min(nrms_error(r.obj, truth) for r in phasing.phase(pattern, opts).runs)
    assert best["oss**300,er**100"] < 0.2
    assert best["oss**300,er**100"] <= best["hio**300,er**100"] + 0.02


def test_checkpoint_keeps_the_dual_variables():
    """A run stopped inside a gps block and continued gives the uninterrupted run (state.ml carries y)."""
    pattern, _ = synthetic(n=32, seed=5, noise=False)
    opts = phasing.Options(recipe="gps**30,tv**10,er**5", runs=1, seed=2, threads=1, positivity=False,
                           free_fraction=0.0, check_oversampling=False, autocorrelation_threshold=0.1)
    prob = phasing.prepare(pattern, opts)
    whole = phasing.run_one(prob, opts, 0)
    part = phasing.run_one(prob, opts, 0, stop=17)
    rest = phasing.run_one(prob, opts, 0, start=part)
    part.ml.pop("gps_y")                              # a checkpoint that lost GPS's dual variable
    lost = phasing.run_one(prob, opts, 0, start=part)
    scale = np.linalg.norm(whole.obj)
    # FFT plans of a new process round differently (float32): not bitwise, but far closer than without y
    assert np.linalg.norm(whole.obj - rest.obj) < 2e-3 * scale
    assert np.linalg.norm(whole.obj - lost.obj) > 10 * np.linalg.norm(whole.obj - rest.obj)
