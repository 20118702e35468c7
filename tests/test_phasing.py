"""Phase-retrieval library: projections and steps, metrics, free pixels, supports, whole runs.

Synthetic objects: a cluster of discs (2D 64^2 or 3D 32^3), linear oversampling about 3, its exact
transform scaled to a photon budget, Poisson noise, and a masked beamstop over q = 0. Errors are
normalised RMS errors after removing translation, twin, global phase and phase ramp (align.nrms_error).
"""
import numpy as np
import pytest

from cxdi_cli.phasing import algorithms as alg
from cxdi_cli.analysis import align
from cxdi_cli import fft, model
from cxdi_cli.phasing import runs as phasing
from cxdi_cli.model import DataError, UsageError


def synthetic(n=64, ndim=2, seed=0, photons=1e8, beamstop=2.5, noise=True, extent=0.27):
    """(pattern, truth): truth in the units where |cfftn(truth, ortho)|^2 is the expected photons.

    The object spans about `extent` of the array (linear oversampling about 1/extent)."""
    rng = np.random.default_rng(seed)
    g = np.meshgrid(*[np.arange(n) - n // 2] * ndim, indexing="ij")
    obj = np.zeros((n,) * ndim)
    for _ in range(10 if ndim == 2 else 6):
        c = rng.uniform(-0.27 * extent * n, 0.27 * extent * n, ndim)
        rad = rng.uniform(0.115 * extent * n, 0.23 * extent * n)
        obj = np.maximum(obj, (np.sqrt(sum((x - ci) ** 2 for x, ci in zip(g, c))) < rad) * rng.uniform(0.6, 1.0))
    truth = (obj * np.exp(0.3j * obj)).astype(np.complex64)
    spec = fft.cfftn(truth, norm="ortho")
    k = np.sqrt(photons / np.sum(np.abs(spec) ** 2))
    truth *= np.float32(k)
    expected = (np.abs(spec) ** 2 * k * k).astype(np.float32)
    data = rng.poisson(expected).astype(np.float32) if noise else expected
    r = np.sqrt(sum(x.astype(float) ** 2 for x in g))
    mask = np.where(r < beamstop, model.MASK_BITS["beamstop"], 0).astype(np.uint32)
    data[mask != 0] = 0  # the beamstop shadow holds nothing: the code must leave it free
    return model.Pattern(intensity=data, mask=mask, source="synthetic"), truth


def state_at_truth(pattern, truth, **kw):
    a = np.abs(truth)
    opts = phasing.Options(recipe="er", support_update=0, free_fraction=0.0, check_oversampling=False)
    prob = phasing.prepare(pattern, opts, support=a > 1e-3 * a.max())
    pair = fft.FFTPair(prob.shape)
    rho = np.fft.ifftshift(truth).astype(np.complex64)
    pair.buffer[...] = rho
    return alg.State(pair=pair, rho=rho, amp=prob.amp, kind=prob.kind, support=prob.support.copy(),
                     support_update=0, **kw), prob


@pytest.mark.parametrize("name", ["er", "hio", "raar", "ml"])
def test_truth_is_a_fixed_point_with_masked_centre(name):
    """Noise-free data, beamstop masked (and zero in the file): the truth must stay put. A modulus
    projection that forced masked pixels to zero would move it at once."""
    pattern, truth = synthetic(noise=False)
    state, _ = state_at_truth(pattern, truth, positivity=True)
    step = alg.build(name, {})
    for _ in range(5):
        step(state)
    x = np.fft.fftshift(state.rho)
    assert np.linalg.norm(x - truth) / np.linalg.norm(truth) < 2e-4
    assert np.array_equal(state.buf, state.rho)  # invariant: the FFT buffer holds rho between steps


def test_update_rules_match_their_definitions():
    """One HIO / RAAR iteration equals the textbook formula computed with numpy."""
    pattern, truth = synthetic(n=32, noise=False)
    rng = np.random.default_rng(3)
    for name, beta in (("hio", 0.7), ("raar", 0.8)):
        state, prob = state_at_truth(pattern, truth)
        start = (state.rho + 0.3 * rng.standard_normal(state.rho.shape) * np.abs(state.rho).max()).astype(np.complex64)
        state.rho[...] = start
        state.buf[...] = start
        alg.build(name, {"beta": beta})(state)
        psi = fft.fftn(start.astype(np.complex128), norm="ortho")
        meas = prob.kind == alg.MEASURED
        psi = np.where(meas, prob.amp * np.exp(1j * np.angle(psi)), psi)
        p = fft.ifftn(psi, norm="ortho")
        out = start - beta * p if name == "hio" else beta * start + (1 - 2 * beta) * p
        expect = np.where(prob.support, p, out)
        assert np.abs(state.rho - expect).max() < 1e-4 * np.abs(expect).max()


def test_amplitude_bound_clips_the_support_only():
    """HIO with an amplitude bound: |rho| <= bound on the support, and off it the textbook feedback
    rho - beta P_M rho with the UNclipped projection."""
    pattern, truth = synthetic(n=32, noise=False)
    bound = 0.25 * float(np.abs(truth).max())
    state, prob = state_at_truth(pattern, truth, amplitude_bound=bound)
    start = (state.rho + 0.6 * np.random.default_rng(5).standard_normal(state.rho.shape)
             * np.abs(state.rho).max()).astype(np.complex64)
    state.rho[...] = start
    state.buf[...] = start
    alg.build("hio", {"beta": 0.7})(state)
    psi = fft.fftn(start.astype(np.complex128), norm="ortho")
    psi = np.where(prob.kind == alg.MEASURED, prob.amp * np.exp(1j * np.angle(psi)), psi)
    p = fft.ifftn(psi, norm="ortho")
    clipped = p * np.minimum(1.0, bound / np.maximum(np.abs(p), 1e-30))
    expect = np.where(prob.support, clipped, start - 0.7 * p)
    assert np.abs(p[~prob.support]).max() > bound  # the case the bound must leave alone exists
    assert np.abs(state.rho - expect).max() < 1e-4 * np.abs(expect).max()


def test_amplitude_bound_and_positivity():
    pattern, truth = synthetic(n=32, noise=False)
    bound = 0.5 * float(np.abs(truth).max())
    state, _ = state_at_truth(pattern, truth, positivity=True, amplitude_bound=bound)
    state.rho *= np.complex64(np.exp(2.5j))  # mostly negative real part now
    state.buf[...] = state.rho
    alg.build("er", {})(state)
    assert np.abs(state.rho).max() <= bound * (1 + 1e-5)
    assert state.rho.real.min() >= 0
    assert not np.any(state.rho[~state.support])


def test_ml_descends_the_poisson_likelihood():
    pattern, truth = synthetic(seed=4)
    opts = phasing.Options(recipe="er**1", runs=1, seed=2, support_update=0, free_fraction=0, check_oversampling=False)
    a = np.abs(truth)
    prob = phasing.prepare(pattern, opts, support=a > 1e-3 * a.max())
    pair = fft.FFTPair(prob.shape)
    rho = np.fft.ifftshift(truth * np.exp(0.4j * np.random.default_rng(0).standard_normal(truth.shape))).astype(np.complex64)
    rho *= prob.support
    pair.buffer[...] = rho
    llks = []
    state = alg.State(pair=pair, rho=rho, amp=prob.amp, kind=prob.kind, support=prob.support.copy(),
                      support_update=0, record_every=1, on_record=lambda s, n: llks.append(s.last["llk"]))
    step = alg.build("ml", {})
    for _ in range(15):
        step(state)
    assert all(b <= a * (1 + 1e-4) for a, b in zip(llks, llks[1:])), str([round(v, 3) for v in llks])
    assert llks[-1] < 0.5 * llks[0]


def test_free_pixels_are_islands_outside_the_central_speckle():
    pattern, _ = synthetic(n=64)
    opts = phasing.Options(seed=3, check_oversampling=False)
    prob = phasing.prepare(pattern, opts)
    free = prob.kind == alg.FREE
    measured = prob.kind != alg.MASKED
    frac = free.sum() / measured.sum()
    assert 0.04 < frac < 0.07
    assert np.array_equal(free, np.roll(np.flip(free), 1, axis=(0, 1)))  # centro-symmetric mates
    q = np.sqrt(sum(f ** 2 for f in np.meshgrid(*[np.fft.fftfreq(64, 1 / 64)] * 2, indexing="ij")))
    assert q[free].min() > prob.info["free_exclusion_radius_px"]
    # islands: most free pixels have free neighbours
    nb = sum(np.roll(free, s, axis=a) for a in (0, 1) for s in (1, -1))
    assert np.mean(nb[free] >= 2) > 0.8


@pytest.mark.parametrize("n", [64, 24])
def test_free_pixels_of_a_large_array_are_drawn_not_permuted(n, monkeypatch):
    """Above FREE_PERMUTE_MAX pixels (a 512^3 permutation took 15 s) the island centres are drawn at
    random: the same fraction, mates and exclusion radius as the permutation gives (here the limit
    lowered below a 64^2 and a 24^3 array)."""
    from cxdi_cli.phasing import problem

    shape = (n,) * (2 if n == 64 else 3)
    kind = np.full(shape, alg.MEASURED, np.int8)
    kind[(0,) * len(shape)] = alg.MASKED
    monkeypatch.setattr(problem, "FREE_PERMUTE_MAX", 100)

    class NoPermutation:                     # the draws alone must reach the fraction
        def __init__(self):
            self.rng = np.random.default_rng(1)

        def integers(self, *args, **kw):
            return self.rng.integers(*args, **kw)

        def permutation(self, x):
            raise AssertionError("fell back to the permutation")

    out = problem._free_islands(kind, 4.0, 0.05, 3, NoPermutation())
    free = out == alg.FREE
    assert 0.045 < free.sum() / (kind == alg.MEASURED).sum() < 0.07
    axes = tuple(range(len(shape)))
    assert np.array_equal(free, np.roll(np.flip(free), 1, axis=axes))      # centro-symmetric mates
    q = np.sqrt(sum(f ** 2 for f in np.meshgrid(*[np.fft.fftfreq(n, 1 / n)] * len(shape), indexing="ij")))
    assert q[free].min() > 4.0 and not free[(0,) * len(shape)]


def test_reconstruction_2d_reaches_the_truth_and_is_reproducible():
    pattern, truth = synthetic(n=64, seed=1)
    # a sparse cluster of discs: its autocorrelation spans ~10x its area (4x for a convex object),
    # so the settings advised for sparse objects: initial support at 0.1 of the autocorrelation's
    # maximum, shrink-wrap threshold 0.2
    opts = phasing.Options(runs=3, seed=7, autocorrelation_threshold=0.1, support_threshold=0.2)
    rec = phasing.phase(pattern, opts)
    errors = [align.nrms_error(r.obj, truth) for r in rec.runs]
    assert errors[0] < 0.10, errors
    assert sum(e < 0.2 for e in errors) >= 2, errors
    best = rec.runs[0]
    assert best.metrics["rank"] == 1 and not best.metrics["failed"]
    assert best.obj.dtype == np.complex64 and best.obj.shape == truth.shape
    assert len(best.history["llk"]) == phasing.count_iterations(phasing.parse_recipe(opts.recipe)) // 10
    # the same seed and run index give the same object
    prob = phasing.prepare(pattern, opts)
    again = phasing.run_one(prob, opts, best.params["run_index"])
    assert np.array_equal(again.obj, best.obj)


def test_free_llk_ranks_good_and_bad_runs():
    """Runs stopped early (bad) and converged runs (good): free LLK orders them as the true error."""
    pattern, truth = synthetic(n=64, seed=2)
    results = []
    for recipe in ("er**3", "hio**20", "hio**400,er**100", "hio**300,er**50,ml**20"):
        opts = phasing.Options(runs=1, seed=5, recipe=recipe, autocorrelation_threshold=0.1)
        run = phasing.phase(pattern, opts).runs[0]
        results.append((align.nrms_error(run.obj, truth), run.metrics["llk_free"]))
    good = [f for e, f in results if e < 0.1]
    bad = [f for e, f in results if e > 0.3]
    assert len(good) >= 1 and len(bad) >= 1, results
    assert max(good) < min(bad), results


def test_unusable_data_fail_clearly():
    pattern, _ = synthetic(n=32)
    opts = phasing.Options(check_oversampling=True)
    allmasked = model.Pattern(intensity=pattern.intensity, mask=np.ones_like(pattern.mask), source="x.cxi")
    with pytest.raises(DataError, match="x.cxi: every pixel is masked"):
        phasing.prepare(allmasked, opts)
    big = np.ones((32, 32), bool)
    with pytest.raises(DataError, match="more than half"):
        phasing.prepare(pattern, opts, support=big)
    # an object filling the whole array: speckles one pixel wide, oversampling about 1
    rng = np.random.default_rng(0)
    dense = 1e4 * np.abs(fft.cfftn(rng.standard_normal((64, 64)) + 0j, norm="ortho")) ** 2
    under = model.Pattern(intensity=dense.astype(np.float32), mask=np.zeros((64, 64), np.uint32), source="u.cxi")
    with pytest.raises(DataError, match="oversampling"):
        phasing.prepare(under, opts)
    with pytest.raises(UsageError, match="valid steps"):
        phasing.prepare(pattern, phasing.Options(recipe="hio**10,foo"))


def particle3d(n=32, extent=0.27, photons=1e9, seed=2, beamstop=2.0):
    """(pattern, truth): the porous particle with a helix of `cxdi simulate particle3d`, sampled on an
    n^3 grid (2^3 sub-samples per voxel), its exact |FFT|^2 scaled to `photons`, Poisson noise and a
    masked sphere over q = 0."""
    from cxdi_cli.sim import tilt3d as simulate3d

    particle = simulate3d.make_particle(extent * n, seed=seed)
    g = np.arange(n) - n // 2
    acc = np.zeros((n, n, n))
    for dz in (-0.25, 0.25):
        for dy in (-0.25, 0.25):
            for dx in (-0.25, 0.25):
                z, y, x = np.meshgrid(g + dz, g + dy, g + dx, indexing="ij")
                acc += particle.density(np.stack([x, y, z]))
    truth = (acc / 8).astype(np.complex64)
    spec = fft.cfftn(truth, norm="ortho")
    k = np.sqrt(photons / np.sum(np.abs(spec) ** 2))
    truth *= np.float32(k)
    rng = np.random.default_rng(0)
    data = rng.poisson(np.abs(spec) ** 2 * k * k).astype(np.float32)
    r = np.sqrt(sum(a.astype(float) ** 2 for a in np.meshgrid(g, g, g, indexing="ij")))
    mask = np.where(r < beamstop, model.MASK_BITS["beamstop"], 0).astype(np.uint32)
    data[mask != 0] = 0
    return model.Pattern(intensity=data, mask=mask, source="particle3d"), truth


@pytest.mark.slow
def test_reconstruction_3d_particle():
    """3D particle: |FFT|^2 of the truth with Poisson noise and a masked centre, default recipe."""
    pattern, truth = particle3d()
    rec = phasing.phase(pattern, phasing.Options(runs=3, seed=1))
    err = align.nrms_error(rec.runs[0].obj, truth)
    assert err < 0.10, err


def test_sup_step_and_support_schedule():
    """`sup(threshold=...)` updates the support at once; a higher threshold gives a smaller support."""
    pattern, truth = synthetic(n=64, seed=1)
    sizes = {}
    for thr in (0.1, 0.5):
        opts = phasing.Options(runs=1, seed=3, recipe=f"er**5,sup(threshold={thr},sigma=1)", support_update=0,
                               positivity=True)
        sizes[thr] = phasing.phase(pattern, opts).runs[0].metrics["support_size"]
    start = phasing.prepare(pattern, phasing.Options(seed=3)).info["initial_support_size"]
    assert sizes[0.5] < sizes[0.1] < start
