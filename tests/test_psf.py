"""Partial coherence (phasing/psf.py): the PSF models and their fitted width, the convolution, the
Richardson-Lucy refinement, the PSF-aware modulus projection and ML step, and whole runs on a
blurred pattern (synthetic discs of test_phasing, 64^2, the exact transform blurred by a Gaussian PSF).
"""
import numpy as np
import pytest
from scipy import ndimage
from test_phasing import state_at_truth, synthetic

from cxdi_cli import fft, model
from cxdi_cli.analysis import align
from cxdi_cli.model import UsageError
from cxdi_cli.phasing import algorithms as alg
from cxdi_cli.phasing import kernels
from cxdi_cli.phasing import psf as psfm
from cxdi_cli.phasing import runs as phasing


def blurred(pattern, truth, fwhm, seed=3, photons=1e8):
    """The pattern of `truth` blurred by a Gaussian PSF of `fwhm` pixels, Poisson noise, same mask."""
    spec = np.abs(fft.cfftn(truth, norm="ortho")) ** 2
    k = psfm.make_kernel(spec.shape, psfm.PsfSpec("gaussian", fwhm, 0.0))
    blur = np.fft.fftshift(np.real(np.fft.ifft2(np.fft.fft2(np.fft.ifftshift(spec)) * np.fft.fft2(k))))
    data = np.random.default_rng(seed).poisson(np.maximum(blur, 0)).astype(np.float32)
    data[pattern.mask != 0] = 0
    return model.Pattern(intensity=data, mask=pattern.mask, source="blurred")


def test_parse_psf():
    assert psfm.parse_psf("off") is None
    assert psfm.parse_psf("auto") == "auto"
    assert psfm.parse_psf("gaussian:2") == psfm.PsfSpec("gaussian", 2.0, 0.0)
    assert psfm.parse_psf("lorentzian:1.5") == psfm.PsfSpec("lorentzian", 1.5, 1.0)
    assert psfm.parse_psf("pseudo-voigt:2,0.3") == psfm.PsfSpec("pseudo-voigt", 2.0, 0.3)
    for bad in ("gauss:2", "gaussian", "gaussian:-1", "pseudo-voigt:2", "pseudo-voigt:2,1.5", "lorentzian:x"):
        with pytest.raises(UsageError):
            psfm.parse_psf(bad)


@pytest.mark.parametrize("spec", [psfm.PsfSpec("gaussian", 2.0, 0.0), psfm.PsfSpec("lorentzian", 1.5, 1.0),
                                  psfm.PsfSpec("pseudo-voigt", 3.0, 0.5)])
def test_kernel_is_unit_sum_and_its_width_is_fitted(spec):
    k = psfm.make_kernel((64, 64), spec)
    assert abs(k.sum() - 1) < 1e-5 and k.argmax() == 0          # centred at index 0 (FFT order)
    fwhm, eta = psfm.fit_fwhm(k)
    assert abs(fwhm - spec.fwhm) < 0.05 * spec.fwhm, (fwhm, eta)
    # the half maximum lies at FWHM/2 along an axis
    assert abs(psfm.profile(np.float32((spec.fwhm / 2) ** 2), spec.fwhm, spec.eta) - 0.5) < 1e-6


def test_blur_and_its_adjoint_match_a_direct_convolution():
    rng = np.random.default_rng(0)
    x = rng.random((24, 30)).astype(np.float32)
    y = rng.random((24, 30)).astype(np.float32)
    p = psfm.Psf((24, 30), psfm.PsfSpec("pseudo-voigt", 2.5, 0.4), update_every=0)
    k = p.kernel.astype(np.float64)
    direct = np.zeros_like(x, dtype=np.float64)
    for i in range(24):
        for j in range(30):
            direct += k[i, j] * np.roll(x, (i, j), axis=(0, 1))
    assert np.allclose(p.blur(x), direct, atol=1e-5)
    assert abs(np.vdot(p.blur(x), y) - np.vdot(x, p.correlate(y))) < 1e-3   # adjoint


def test_richardson_lucy_recovers_the_width():
    """Noise-free blurred data of a known coherent intensity: from a 1-pixel Gaussian, the
    Richardson-Lucy updates reach the true 2.5-pixel PSF."""
    _, truth = synthetic(noise=False)
    ic = np.fft.ifftshift(np.abs(fft.cfftn(truth, norm="ortho")) ** 2).astype(np.float32)
    true = psfm.Psf(ic.shape, psfm.PsfSpec("gaussian", 2.5, 0.0), update_every=0)
    amp = np.sqrt(np.maximum(true.blur(ic), 0)).astype(np.float32)
    kind = np.full(ic.shape, alg.MEASURED, np.int8)
    p = psfm.Psf(ic.shape, psfm.PsfSpec("gaussian", 1.0, 0.0))
    for _ in range(200):
        p.ic[...] = ic
        p.blur(ic, p.model)
        p.richardson_lucy(amp, kind)
    assert abs(p.fwhm() - 2.5) < 0.1 * 2.5, p.fwhm()
    assert np.allclose(p.kernel, psfm._mirror(p.kernel), atol=1e-7)       # kept centro-symmetric


@pytest.mark.parametrize("name", ["er", "hio", "ml"])
def test_truth_is_a_fixed_point_of_the_blurred_model(name):
    """Noise-free data blurred by the PSF the run knows (no refinement): the truth stays put, and its
    metrics are those of a perfect fit."""
    pattern, truth = synthetic(noise=False)
    data = blurred(pattern, truth, 2.0)
    spec = np.abs(fft.cfftn(truth, norm="ortho")) ** 2
    k = psfm.make_kernel(spec.shape, psfm.PsfSpec("gaussian", 2.0, 0.0))
    exact = np.fft.fftshift(np.real(np.fft.ifft2(np.fft.fft2(np.fft.ifftshift(spec)) * np.fft.fft2(k))))
    data.intensity[...] = np.where(pattern.mask != 0, 0, np.maximum(exact, 0))
    state, _ = state_at_truth(data, truth, positivity=True)
    state.psf = psfm.Psf(state.rho.shape, psfm.PsfSpec("gaussian", 2.0, 0.0), update_every=0)
    step = alg.build(name, {})
    for _ in range(5):
        step(state)
    x = np.fft.fftshift(state.rho)
    assert np.linalg.norm(x - truth) / np.linalg.norm(truth) < 2e-3
    assert np.array_equal(state.buf, state.rho)


def test_ml_with_psf_descends_the_blurred_likelihood():
    pattern, truth = synthetic(seed=4)
    data = blurred(pattern, truth, 2.0)
    state, _ = state_at_truth(data, truth)
    rng = np.random.default_rng(1)
    state.rho *= np.float32(0.8)                                   # a start off the optimum, on the support
    state.rho += (0.1 * np.abs(truth).max() * rng.standard_normal(state.rho.shape) * state.support).astype(np.float32)
    state.buf[...] = state.rho
    state.psf = psfm.Psf(state.rho.shape, psfm.PsfSpec("gaussian", 2.0, 0.0), update_every=0)

    def llk():
        buf = state.buf
        buf[...] = state.rho
        state.pair.forward()
        ic = (np.abs(buf) ** 2).astype(np.float32)
        buf[...] = state.rho
        return psfm.metrics_of(state.psf.blur(ic), state.amp, state.kind)["llk"]

    before = llk()
    step = alg.build("ml", {})
    values = []
    for _ in range(3):
        for _ in range(5):
            step(state)
        values.append(llk())
    assert values[0] < before and values[-1] <= values[0] + 1e-6, (before, values)


@pytest.mark.slow
def test_psf_on_a_blurred_pattern_fits_the_width_and_lowers_the_error():
    """64^2 discs blurred by a 2-pixel Gaussian PSF: with the PSF switched on (from a 1-pixel start) the
    fitted width is within 25 % of the truth and the error well below that of the coherent model."""
    pattern, truth = synthetic(n=64, seed=1)
    data = blurred(pattern, truth, 2.0, seed=5)
    base = {"runs": 2, "seed": 3, "autocorrelation_threshold": 0.1, "support_threshold": 0.2, "threads": 1}
    off = phasing.phase(data, phasing.Options(psf="off", **base))
    on = phasing.phase(data, phasing.Options(psf="gaussian:1", psf_from=1 / 3, **base))  # in the search
    e_off = min(align.nrms_error(r.obj, truth) for r in off.runs)
    e_on = min(align.nrms_error(r.obj, truth) for r in on.runs)
    fwhm = on.runs[0].metrics["psf_fwhm_px"]
    assert abs(fwhm - 2.0) < 0.25 * 2.0, fwhm
    assert e_on < 0.7 * e_off, (e_on, e_off)
    fit = on.runs[0].params["psf_fit"]
    assert fit["start"] == "gaussian:1" and np.asarray(fit["kernel_centred"]).shape == (17, 17)
    assert "psf_fwhm_px" not in off.runs[0].metrics


def one_pass_sums(model, amp, kind):
    """The metric sums of a blurred model in one float64 pass (the reference of `psf._chunked_sums`):
    (llk_measured, n_measured, llk_free, n_free, chi2, sum Ic, sum I)."""
    ic = model.astype(np.float64)
    obs = amp.astype(np.float64) ** 2
    term = ic - obs + np.where(obs > 0, obs * np.log(np.maximum(obs, 1e-300) / np.maximum(ic, 1e-12)), 0.0)
    m, f = kind == 1, kind == 2
    return (term[m].sum(), m.sum(), term[f].sum(), f.sum(), np.sum((obs[m] - ic[m]) ** 2 / np.maximum(ic[m], 1.0)),
            ic[m].sum(), obs[m].sum())


def test_compiled_kernels_match_their_numpy_twins():
    rng = np.random.default_rng(2)
    n = 500
    buf = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
    model = (rng.random(n) * 10).astype(np.float32)
    model[:5] = 0
    amp = np.sqrt(rng.poisson(5, n)).astype(np.float32)
    kind = rng.integers(0, 3, n).astype(np.int8)
    ic = (np.abs(buf) ** 2).astype(np.float32)
    k = psfm._project
    if k.compiled is None:
        pytest.skip("numba is not available: only the numpy twins run")
    a, b = buf.copy(), buf.copy()
    ma, mb = model.copy(), model.copy()
    k.compiled(a, ma, ic, amp, kind, np.float32(1 / n), np.float32(0.3), np.float32(1e-12))
    k.fallback(b, mb, ic, amp, kind, np.float32(1 / n), np.float32(0.3), np.float32(1e-12))
    assert np.allclose(a, b, rtol=1e-5, atol=1e-7)
    assert np.allclose(ma, mb) and np.all(ma >= 0.3 * ic * (1 - 1e-6))   # Ic >= k0 |Psi|^2


def _cli(*args):
    from cxdi_cli.commands.main import app
    from typer.testing import CliRunner

    return CliRunner().invoke(app, [str(a) for a in args])


def test_phase_cli_psf_option_output_and_info(tmp_path):
    """`--psf` reaches the runs: psf_fwhm_px is a metric of every run (shown by `info`), the fitted
    kernel is in the run's parameters; a bad value is a usage error (exit 2)."""
    from cxdi_cli import io

    pattern, truth = synthetic(n=64, seed=1)
    data = blurred(pattern, truth, 2.0, seed=5)
    src = tmp_path / "blurred.cxi"
    io.write_pattern(str(src), data, io.make_step("test"))
    bad = _cli("phase", src, "-o", tmp_path / "x.cxi", "--psf", "gauss:2", "-q")
    assert bad.exit_code == 2 and "--psf" in bad.stderr
    out = tmp_path / "runs.cxi"
    res = _cli("phase", src, "-o", out, "--runs", 1, "--seed", 2, "--psf", "gaussian:1.5", "--recipe",
               "hio**150,psf,hio**150,er**60,ml**20", "--positivity", "--threads", 1, "-q")
    assert res.exit_code == 0, res.stderr
    run = io.read_reconstruction(str(out)).runs[0]
    assert 1.0 < run.metrics["psf_fwhm_px"] < 3.0
    assert run.params["psf_fit"]["start"] == "gaussian:1.5"
    info = _cli("info", out)
    assert info.exit_code == 0 and "psf_fwhm_px=" in info.stdout


def test_psf_survives_pickling_and_a_checkpoint():
    """A run with a PSF stopped at a checkpoint and continued (in this process or, pickled, in another)
    gives exactly the uninterrupted run."""
    import pickle

    pattern, truth = synthetic(n=64, seed=1)
    data = blurred(pattern, truth, 2.0, seed=5)
    opts = phasing.Options(runs=1, seed=4, recipe="hio**120,er**40", psf="gaussian:1", psf_from=0.25,
                           autocorrelation_threshold=0.1, support_threshold=0.2, positivity=True, threads=1)
    prob = phasing.prepare(data, opts)
    whole = phasing.run_one(prob, opts, 0)
    cp = phasing.run_one(prob, opts, 0, stop=100)
    cp = pickle.loads(pickle.dumps(cp))
    resumed = phasing.run_one(prob, opts, 0, start=cp)
    assert np.array_equal(whole.obj, resumed.obj)
    assert whole.metrics["psf_fwhm_px"] == resumed.metrics["psf_fwhm_px"]


def test_projection_stays_bounded_where_the_blurred_model_has_roundoff():
    """The float32 FFT blur of a pattern spanning nine decades leaves roundoff of ~1e-7 of its peak: a
    faint pixel's blurred model can come out near zero or negative (a 64^2 Gaussian speckle of 1e9
    photons: -27 under |Psi|^2 = 1e-3). The modulus step must keep |Psi'|^2 <= I / k0 there (k0: the
    kernel's centre weight; Ic >= k0 |Psi|^2 exactly) and finite; before, sqrt(I / 1e-12) scaled such
    pixels by up to 1e6 and 512^2 HIO runs with a PSF ran to NaN."""
    rng = np.random.default_rng(3)
    n = 400
    psi = (np.sqrt(1e-3) * np.exp(2j * np.pi * rng.random(n))).astype(np.complex64)   # unitary, faint
    ic = (np.abs(psi) ** 2).astype(np.float32)
    model = rng.uniform(-30, 1e-3, n).astype(np.float32)                 # roundoff-ridden blurred model
    amp = np.sqrt(rng.poisson(3.0, n)).astype(np.float32)
    kind = np.ones(n, np.int8)
    k0 = np.float32(0.6)
    for k in (psfm._project, psfm._project.fallback):
        buf, m = psi.copy(), model.copy()
        k(buf, m, ic, amp, kind, np.float32(1.0), k0, np.float32(1e-12))
        out2 = np.abs(buf.astype(np.complex128)) ** 2
        assert np.all(np.isfinite(out2)) and np.all(m >= k0 * ic * (1 - 1e-6))
        assert np.all(out2 <= amp.astype(np.float64) ** 2 / k0 * (1 + 1e-5) + 1e-9)


def test_default_auto_psf_refines_the_final_block_and_flags_blurred_data():
    """The default `--psf auto` (2D, bright data): the PSF goes on at the first ml step only. On the
    coherent, nearly noise-free discs it fits a sub-pixel width (0.84 px: the blur absorbs what the
    searched object still lacks) and costs about 0.01 of NRMSE (0.0015 without), below the 0.05-0.06
    that noise leaves on realistic data, and nothing is flagged; on the same discs blurred by a
    2.5-pixel PSF the final block fits a blur well beyond a pixel's and the output flags the data as
    partially coherent."""
    pattern, truth = synthetic(n=64, seed=1)
    base = {"runs": 1, "seed": 3, "recipe": "hio**200,er**50,ml**40", "autocorrelation_threshold": 0.1,
            "support_threshold": 0.2, "threads": 1, "positivity": True}
    prob = phasing.prepare(pattern, phasing.Options(**base))
    assert prob.info["psf"] == "gaussian:1" and prob.info["psf_from_iteration"] == 250
    coherent = phasing.phase(pattern, phasing.Options(**base), problem=prob)
    assert coherent.runs[0].metrics["psf_fwhm_px"] < 1.0 and "blurred_data" not in coherent.extra["phase"]
    assert align.nrms_error(coherent.runs[0].obj, truth) < 0.02
    # the coherent search stalls on these data (error 0.43-0.53), yet 100 ML iterations fit 1.6-1.9 px
    blurred_rec = phasing.phase(blurred(pattern, truth, 2.5), phasing.Options(**{**base, "recipe": "hio**200,er**50,ml**100"}))
    fwhm = blurred_rec.runs[0].metrics["psf_fwhm_px"]
    assert 1.5 < fwhm < 3.5, fwhm
    assert "partially coherent" in blurred_rec.extra["phase"]["blurred_data"]


def test_auto_psf_stays_off_in_3d_and_on_photon_limited_data():
    """`auto` is off for volumes and for patterns whose power is mostly photon noise (noise fraction > 1e-3)."""
    assert "3D volume" in phasing.auto_psf_veto(3, 0.0)
    assert "photon-limited" in phasing.auto_psf_veto(2, 5e-3)
    assert phasing.auto_psf_veto(2, 1e-4) == ""
    pattern, truth = synthetic(n=64, seed=1)
    dim = model.Pattern(intensity=np.random.default_rng(0).poisson(
        np.abs(fft.cfftn(truth, norm="ortho")) ** 2 * (3e3 / np.sum(np.abs(truth) ** 2))).astype(np.float32),
        mask=pattern.mask, source="dim")
    prob = phasing.prepare(dim, phasing.Options(runs=1, seed=1))
    assert prob.info["noise_fraction"] > 1e-3
    assert prob.info["psf"] is None and prob.info["psf_auto"].startswith("off: photon-limited")


def test_deconvolve_restores_the_coherent_pattern_under_a_mask():
    """Richardson-Lucy with a mask: the pattern of the discs blurred by a 2-px PSF and by the pixels'
    area is brought back to the coherent one (all pixels measured: error cut tenfold); with a beamstop
    masked, the pixels beyond 3 px of it come back (error halved at least) while the ring next to it,
    where the masked light spilled, does not."""
    pattern, truth = synthetic(n=64, seed=1)
    coherent = np.fft.ifftshift(np.abs(fft.cfftn(truth, norm="ortho")) ** 2).astype(np.float32)
    spec = psfm.PsfSpec("gaussian", 2.0, 0.0)
    k = psfm.make_kernel(coherent.shape, spec)      # the beam's blur, then the pixels' area
    transfer = np.fft.fft2(k) * psfm.pixel_area_transfer(coherent.shape)
    blurred_i = np.real(np.fft.ifft2(np.fft.fft2(coherent) * transfer)).astype(np.float32)
    def err(x, where):
        return np.linalg.norm((x - coherent)[where]) / np.linalg.norm(coherent[where])

    every = np.ones(coherent.shape, bool)
    j = psfm.deconvolve(blurred_i, every, spec)
    assert err(j, every) < 0.1 * err(blurred_i, every)
    measured = np.fft.ifftshift(pattern.mask == 0)
    assert np.count_nonzero(~measured) > 10
    j = psfm.deconvolve(blurred_i, measured, spec)
    far = ~np.fft.ifftshift(ndimage.binary_dilation(np.fft.fftshift(~measured), iterations=3))
    assert err(j, far) < 0.5 * err(blurred_i, far), (err(j, far), err(blurred_i, far))
    assert np.all(j > 0)


def test_a_given_psf_searches_the_deconvolved_data():
    """`--psf gaussian:2.5` on the 2.5-px-blurred discs: the search runs on the data deconvolved by the
    PSF and hands over to the measured data with the PSF at the ml step: the error falls from 0.55 (no
    PSF: the coherent search stalls) to about 0.25."""
    pattern, truth = synthetic(n=64, seed=1)
    data = blurred(pattern, truth, 2.5)
    base = {"runs": 2, "seed": 3, "recipe": "hio**200,er**50,ml**100", "autocorrelation_threshold": 0.1,
            "support_threshold": 0.2, "threads": 1, "positivity": True}
    off = phasing.phase(data, phasing.Options(psf="off", **base))
    on = phasing.phase(data, phasing.Options(psf="gaussian:2.5", **base))
    e_off = min(align.nrms_error(r.obj, truth) for r in off.runs)
    e_on = min(align.nrms_error(r.obj, truth) for r in on.runs)
    assert e_on < 0.35 and e_on < 0.6 * e_off, (e_on, e_off)
    dec = on.extra["phase"]["deconvolved"]
    assert dec["psf"] == "gaussian:2.5" and dec["handover"] == 250
    assert "partially coherent data" in on.extra["phase"]["blurred_data"]


def detected(pattern, truth, fwhm, photons=1e7, seed=2):
    """What a detector records of `truth` under a partially coherent beam: |F|^2 blurred by a Gaussian
    PSF of `fwhm` px (0: coherent) and by the pixels' area, `photons` in all (2400 per pixel on
    average at 64^2), Poisson noise, the pattern's mask."""
    coherent = np.fft.ifftshift(np.abs(fft.cfftn(truth, norm="ortho")) ** 2)
    transfer = psfm.pixel_area_transfer(coherent.shape)
    if fwhm:
        transfer = transfer * np.fft.fft2(psfm.make_kernel(coherent.shape, psfm.PsfSpec("gaussian", fwhm, 0.0)))
    expected = np.maximum(np.real(np.fft.ifft2(np.fft.fft2(coherent) * transfer)), 0)
    expected *= photons / expected.sum()
    data = np.random.default_rng(seed).poisson(np.fft.fftshift(expected)).astype(np.float32)
    data[pattern.mask != 0] = 0
    return model.Pattern(intensity=data, mask=pattern.mask, source="detected")


def test_blur_is_estimated_from_the_data_alone():
    """`psf.estimate_blur`: the widest PSF under which a non-negative coherent pattern still fits the
    bright pixels within Poisson noise. The 3-px-blurred discs read 3 px within 25 % (3.28; on these
    small patterns it reads high: 2.2, 2.6 and 3.1 for 1.5, 2 and 2.5 px, where 252^2 and 504^2
    tungsten read 1.94 and 2.10 for 2 px); the same discs' coherent pattern reads "under 1.5 px"
    (0). (At 24000 photons per pixel Richardson-Lucy's unconverged residual dominates and the
    blurred discs read "under 1.5": the safe side.)"""
    pattern, truth = synthetic(n=64, seed=1)

    def estimate(fwhm):
        data = detected(pattern, truth, fwhm)
        return psfm.estimate_blur(np.fft.ifftshift(data.intensity), np.fft.ifftshift(data.mask == 0))

    blurred_est, sharp_est = estimate(3.0), estimate(0.0)
    assert blurred_est["fwhm"] == pytest.approx(3.0, rel=0.25), blurred_est
    assert sharp_est["fwhm"] == 0.0, sharp_est


def test_auto_psf_deconvolves_the_search_when_the_data_are_blurred():
    """`--psf auto` on the 2.5-px-blurred discs: the data's estimated blur (over 1.5 px) sends the
    search to the deconvolved data, as a given PSF does, and the estimate is recorded; the error is
    as low as with the PSF given (without a PSF the coherent search stalls at 0.55, test above)."""
    pattern, truth = synthetic(n=64, seed=1)
    data = detected(pattern, truth, 2.5)
    base = {"runs": 2, "seed": 3, "recipe": "hio**200,er**50,ml**100", "autocorrelation_threshold": 0.1,
            "support_threshold": 0.2, "threads": 1, "positivity": True}
    rec = phasing.phase(data, phasing.Options(**base))
    est = rec.extra["phase"]["blur_estimate"]
    assert est["fwhm"] >= 1.5
    assert rec.extra["phase"]["deconvolved"]["psf"] == f"gaussian:{est['fwhm']:g}"
    e = min(align.nrms_error(r.obj, truth) for r in rec.runs)
    assert e < 0.35, e


def test_ml_iteration_kernels_match_their_numpy_twins():
    """The fused passes of `ml_psf_iteration` and the chunked metric sums: compiled against their
    numpy twins (random inputs over more than one chunk), and the chunked sums, by either, against
    the one-pass float64 formulas."""
    rng = np.random.default_rng(4)
    n = kernels.CHUNK + 999
    c = lambda scale=3.0: (rng.normal(0, scale, n) + 1j * rng.normal(0, scale, n)).astype(np.complex64)  # noqa: E731
    a = rng.uniform(0, 50, n).astype(np.float32)
    a[:7] = 0
    amp = np.sqrt(rng.poisson(a)).astype(np.float32)
    kind = rng.integers(0, 3, n).astype(np.int8)
    sup = rng.random(n) < 0.4
    bc = (rng.normal(0, 1, n) + 1j * rng.uniform(0, 0.5, n)).astype(np.complex64)
    s, eps, t = np.float32(0.01), np.float32(1e-2), 0.3
    calls = {
        "_psf_weight": (np.zeros(n, np.complex64), a, amp, kind, eps),
        "_psf_times_otf": (c(), c(), True),
        "_psf_times_otf_plain": (c(), c(), False),
        "_psf_gradient": (np.zeros(n, np.complex64), c(), c(), s),
        "_psf_line_terms": (np.zeros(n, np.complex64), c(30.0), c(), s),
        "_psf_line_sums": (a, bc, amp, kind, t, eps),
        "_psf_apply": (c(), c(), c(), c(), a.copy(), bc, np.float32(t), s),
    }
    ms = np.abs(c()).astype(np.float32)
    logy = np.log(rng.uniform(0.1, 3, n - 7))
    calls.update({"_psf_ratio_chunk": (ms, amp, np.zeros(n - 7), 7),
                  "_psf_sums_chunk": (ms, amp, kind, logy, 7, np.arange(7.0)),
                  "_psf_step_ratio_chunk": (a, bc, np.float32(t), eps, np.zeros(n - 7, np.float32), 7),
                  "_psf_delta_chunk": (a, bc, amp, kind, np.float32(t), eps, logy.astype(np.float32), 7,
                                       np.ones(1))})
    compiled = getattr(psfm, "_psf_weight").compiled is not None
    for name, args in calls.items():
        k = getattr(psfm, name.replace("_plain", ""))
        x = tuple(v.copy() if isinstance(v, np.ndarray) else v for v in args)
        y = tuple(v.copy() if isinstance(v, np.ndarray) else v for v in args)
        if not compiled:
            break                       # numba missing: only the twins run (the formulas below still hold)
        rx, ry = k.compiled(*x), k.fallback(*y)
        if rx is not None:
            assert np.allclose(rx, ry, rtol=1e-4), name
        for u, v in zip(x, y):
            if isinstance(u, np.ndarray):
                assert np.allclose(u, v, rtol=1e-4, atol=1e-4 * float(np.abs(v).max())), name
    assert np.allclose(psfm._chunked_sums(a, amp, kind), one_pass_sums(a, amp, kind), rtol=1e-8)  # float64, other order
    # the safeguard's L(t) - L(0), as the whole-array float32 expression it replaces
    m = kind == 1
    m_t = np.maximum(a + np.float32(2 * t) * bc.real + np.float32(t * t) * bc.imag, eps)
    a0 = np.maximum(a, eps)
    direct = float(np.sum((m_t - a0 - amp * amp * np.log(m_t / a0))[m], dtype=np.float64))
    assert np.isclose(psfm._psf_delta(a, bc, amp, kind, t, eps), direct, rtol=1e-4)


@pytest.mark.parametrize("spec", [psfm.PsfSpec("gaussian", 2.3, 0.0), psfm.PsfSpec("pseudo-voigt", 1.7, 0.4)])
def test_width_search_blurs_as_the_kernel_does(spec):
    """`ml_width`'s trials (the transform of |Psi|^2 taken once, times each width's transfer function;
    a Gaussian's built from 1D transforms) give the blur `set_kernel` + `blur_model` give, on a 48 x 40
    array, and the search finds the width that made the data."""
    rng = np.random.default_rng(5)
    shape = (48, 40)
    psf = psfm.Psf(shape, spec, update_every=0)
    psf.ic[...] = rng.gamma(0.5, 200.0, shape).astype(np.float32)
    psf.blur_model()
    want = psf.model.copy()
    buf = psf.pair.buffer
    buf[...] = psf.ic
    psf.pair.forward(scale=False)
    spectrum = buf.copy()
    k0 = psf._trial_otf(spec.fwhm, spec.eta, spectrum, psfm._radius2(shape))
    psf.pair.inverse(scale=False)
    got = np.maximum(buf.real, k0 * psf.ic)
    assert np.isclose(k0, psf.kernel.flat[0], rtol=1e-5)
    assert np.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.max()))
    amp = np.sqrt(rng.poisson(want)).astype(np.float32)
    kind = np.ones(shape, np.int8)
    start = psfm.PsfSpec(spec.model, 1.0, spec.eta)
    fit = psfm.Psf(shape, start, update_every=0)
    fit.ic[...] = psf.ic
    fit.ml_width(amp, kind)
    assert abs(fit.fwhm() - spec.fwhm) < 0.1 * spec.fwhm, fit.fwhm()
