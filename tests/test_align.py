"""Alignment: apply a known translation / twin / phase ramp / global phase to a copy, assert recovery."""
import numpy as np
import pytest

from cxdi_cli.analysis import align


def blob(shape=(64, 64), seed=0, radius=0.22):
    """A smooth complex object: an irregular, compact blob with a non-trivial phase, zero outside."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[(np.arange(n) - n // 2) / n for n in shape], indexing="ij")
    r2 = sum(g * g for g in grids)
    amp = np.zeros(shape)
    for _ in range(6):
        c = rng.uniform(-0.12, 0.12, len(shape))
        w = rng.uniform(0.04, 0.09)
        amp += rng.uniform(0.5, 1.0) * np.exp(-sum((g - ci) ** 2 for g, ci in zip(grids, c)) / (2 * w * w))
    amp *= r2 < radius ** 2
    phase = 1.5 * np.sin(2 * np.pi * (grids[0] * 2.3 + grids[-1] * 1.1)) + 2.0 * grids[-1]
    return (amp * np.exp(1j * phase)).astype(np.complex64)


def test_fourier_shift_integer_is_roll():
    x = blob()
    np.testing.assert_allclose(align.fourier_shift(x, (3, -5)), np.roll(x, (3, -5), axis=(0, 1)), atol=1e-5)


@pytest.mark.parametrize("shift", [(3.3, -7.6), (-0.45, 12.05), (0.0, 0.0)])
def test_register_translation_2d_subpixel(shift):
    x = blob()
    moved = align.fourier_shift(x, shift)
    found = align.register_translation(moved, x, upsample=20)
    np.testing.assert_allclose(found, shift, atol=0.1)
    # and back: registering the other way gives the opposite shift
    np.testing.assert_allclose(align.register_translation(x, moved, upsample=20), -np.array(shift), atol=0.1)


def test_register_translation_3d_subpixel():
    x = blob((24, 28, 32), seed=3, radius=0.3)
    shift = (1.35, -2.7, 4.15)
    found = align.register_translation(align.fourier_shift(x, shift), x, upsample=20)
    np.testing.assert_allclose(found, shift, atol=0.1)


def test_twin_involution_and_same_modulus():
    from cxdi_cli import fft
    for shape in [(32, 32), (31, 33), (8, 9, 10)]:
        x = blob(shape, seed=1)
        np.testing.assert_array_equal(align.twin_image(align.twin_image(x)), x)
        np.testing.assert_allclose(np.abs(fft.cfftn(align.twin_image(x))), np.abs(fft.cfftn(x)), rtol=1e-4,
                                   atol=1e-4 * np.abs(fft.cfftn(x)).max())


def test_align_recovers_shift_twin_ramp_phase():
    truth = blob(seed=2)
    shift, ramp, phase = (2.4, -3.7), (1.6, -2.3), 1.1
    copy = align.twin_image(truth)
    copy = align.fourier_shift(copy, shift) * align.phase_ramp(truth.shape, ramp) * np.exp(1j * phase)
    copy = 0.7 * copy
    aligned, info = align.align_to(copy, truth)
    assert info["twin"] is True
    assert info["residual"] < 1e-3
    assert info["correlation"] > 0.999
    assert align.nrms_error(copy, truth) < 1e-3
    np.testing.assert_allclose(np.abs(aligned) / 0.7, np.abs(truth), atol=2e-3 * np.abs(truth).max())


def test_align_known_ramp_and_shift_values():
    truth = blob(seed=4)
    shift, ramp, phase = (-1.3, 5.25), (0.8, 1.9), -2.0
    copy = truth * align.phase_ramp(truth.shape, ramp)  # ramp first, then translate
    copy = align.fourier_shift(copy, shift) * np.exp(1j * phase)
    aligned, info = align.align_to(copy, truth)
    assert info["twin"] is False
    # the copy was ramped then shifted: align_to removes the ramp first, so the shift it reports is -shift
    np.testing.assert_allclose(info["shift"], -np.array(shift), atol=0.1)
    np.testing.assert_allclose(info["ramp"], ramp, atol=0.05)
    # not 1e-3: the blob's hard edge puts power near Nyquist, where a sub-pixel Fourier shift of the
    # ramped (spectrum-moved) copy is not exactly a translation of the continuous object
    assert info["residual"] < 0.02


def test_align_3d_twin_and_shift():
    truth = blob((24, 24, 24), seed=5, radius=0.3)
    copy = align.fourier_shift(align.twin_image(truth), (1.2, -0.6, 2.5)) * np.exp(0.4j)
    _, info = align.align_to(copy, truth)
    assert info["twin"] is True
    # the twin of a copy moved by +d is the truth moved by -d: aligning it takes a shift of +d
    np.testing.assert_allclose(info["shift"], (1.2, -0.6, 2.5), atol=0.1)
    assert info["residual"] < 1e-3


def test_nrms_error_noise_level_and_no_twin_option():
    rng = np.random.default_rng(7)
    truth = blob(seed=6)
    noise = (rng.normal(size=truth.shape) + 1j * rng.normal(size=truth.shape)) / np.sqrt(2)
    level = 0.05 * np.linalg.norm(truth) / np.linalg.norm(noise)
    noisy = truth + level * noise
    err = align.nrms_error(align.fourier_shift(noisy, (0.5, 0.5)), truth)
    assert 0.035 < err < 0.06  # the noise level, not more: alignment adds (almost) nothing
    # with twin search off, a twin cannot be matched well
    assert align.nrms_error(align.twin_image(truth), truth, twin=False) > 0.3
    assert align.nrms_error(align.twin_image(truth), truth) < 1e-3


def test_optimal_scale_and_shape_error():
    from cxdi_cli.model import DataError
    x = blob()
    assert abs(align.optimal_scale(x, (2 - 1j) * x) - (2 - 1j)) < 1e-5
    with pytest.raises(DataError):
        align.align_to(x, x[:32])
