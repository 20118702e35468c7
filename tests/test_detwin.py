"""Detwinning (phasing/detwin.py and the `detwin` recipe step): the half-support cut, the block that
runs HIO on it and restores the full support, and whole runs with the step in the recipe."""
import numpy as np
from test_phasing import state_at_truth, synthetic

from cxdi_cli.analysis import align
from cxdi_cli.phasing import algorithms as alg
from cxdi_cli.phasing import runs as phasing
from cxdi_cli.phasing.detwin import half_support


def _disc(n=32, r=6.0, centre=(0.0, 0.0)):
    """A disc support in FFT order (centred on index 0 plus `centre`)."""
    f = np.fft.fftfreq(n, 1.0 / n)
    y, x = np.meshgrid(f, f, indexing="ij")
    return (y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= r * r


def _mirror(x):
    return np.roll(x[::-1, ::-1], 1, axis=(0, 1))


def test_half_support_cuts_a_symmetric_support_into_a_non_symmetric_half():
    sup = _disc()
    assert np.array_equal(sup, _mirror(sup))
    for axis in (0, 1):
        half = half_support(sup, axis)
        assert not np.array_equal(half, _mirror(half))       # no centro-symmetric partner any more
        assert np.array_equal(half | _mirror(half), sup)     # the half and its mirror cover the support
        assert abs(half.sum() - sup.sum() / 2) <= 2 * 6 + 1  # about half (the cut row counts once)
        assert not np.any(half & ~sup)
    # the cut follows the centre of mass: a disc off the origin keeps the low side of its own centre
    shifted = _disc(centre=(5.0, 0.0))
    half = half_support(shifted, 0)
    rows = np.nonzero(half.any(axis=1))[0]
    rows = (rows + 16) % 32 - 16
    assert rows.max() <= 5 and rows.min() == -1


def test_half_support_weights_move_the_cut():
    sup = _disc()
    w = np.zeros(sup.shape)
    w[sup] = 1.0
    w[3:7, :] *= 20.0  # bright rows at +3..+6: the weighted centre moves towards them
    assert half_support(sup, 0, w).sum() > half_support(sup, 0).sum()


def test_detwin_block_runs_on_the_half_and_restores_the_support():
    pattern, truth = synthetic(noise=False)
    state, _ = state_at_truth(pattern, truth, positivity=True)
    state.support_update = 5                 # shrink-wrap must stay off during the block
    state.total = 100
    full = state.support.copy()
    expected = half_support(full, 1, state.rho)  # the cut made at the block's start (centre of mass of |rho|)
    assert 0 < expected.sum() < full.sum()
    step = alg.build("detwin", {"axis": 1})
    for _ in range(12):
        step(state)
        assert np.array_equal(state.support, expected)
    assert state.iteration == 12
    step.end(state)
    assert np.array_equal(state.support, full) and state.detwin_saved is None
    assert np.array_equal(state.buf, state.rho)


def test_recipe_with_detwin_counts_its_iterations_and_runs():
    steps = phasing.parse_recipe("detwin(axis=1)**20,hio**30,er**10")
    assert phasing.count_iterations(steps) == 60
    pattern, truth = synthetic(n=64, seed=1)
    opts = phasing.Options(runs=2, seed=7, recipe="detwin**30,hio**470,er**150,ml**50",
                           autocorrelation_threshold=0.1, support_threshold=0.2, threads=1)
    rec = phasing.phase(pattern, opts)
    errors = [align.nrms_error(r.obj, truth) for r in rec.runs]
    assert min(errors) < 0.1, errors
    assert rec.runs[0].metrics["iterations"] == 700


def test_detwin_breaks_a_twin_mixed_start_that_hio_cannot():
    """Start from the object and its twin superposed (support and iterate centro-symmetric): HIO and ER
    keep the symmetry (equal overlap with object and twin, stuck), a detwin block first ends on one of
    the two exactly (noise-free data)."""
    pattern, truth = synthetic(noise=False)

    def overlaps(use_detwin):
        state, _ = state_at_truth(pattern, truth, positivity=True)
        t = state.rho.copy()
        twin = np.conj(_mirror(t))
        state.rho[...] = 0.5 * (t + twin)
        state.support[...] = state.support | _mirror(state.support)
        state.buf[...] = state.rho
        state.total = 300
        for name, n in ([("detwin", 30)] if use_detwin else []) + [("hio", 200), ("er", 50)]:
            step = alg.build(name, {})
            for _ in range(n):
                step(state)
            if hasattr(step, "end"):
                step.end(state)
        rho = state.rho

        def c(a):
            return abs(np.vdot(a, rho)) / (np.linalg.norm(a) * np.linalg.norm(rho))
        return c(t), c(twin)

    same, same_twin = overlaps(False)
    assert abs(same - same_twin) < 1e-4 and same < 0.97          # stuck between object and twin
    got, got_twin = overlaps(True)
    assert max(got, got_twin) > 0.999 and min(got, got_twin) < 0.9  # one of them, exactly
