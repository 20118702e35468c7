"""The initial support from the autocorrelation against objects of known extent."""
import numpy as np

from cxdi_cli.phasing import support as sup
from test_sampling import _particle, _pattern


def _auto_support(obj, halve, photons=1e9):
    data, measured = _pattern(obj, photons)
    return sup.autocorrelation_support(np.fft.ifftshift(data), np.fft.ifftshift(measured), threshold=0.05,
                                       sigma=1.0, halve=halve)


def test_3d_support_tracks_the_object_volume():
    """A 15-voxel porous particle in 80^3 (967 voxels): the autocorrelation covers about 15 times its
    volume, the halved one (the default in 3D) between 1 and 2 times, and it is not larger than the
    object along any axis by more than a few voxels."""
    obj = _particle(80, 15)
    volume = int(np.count_nonzero(obj))
    full = _auto_support(obj, halve=False)
    half = _auto_support(obj, halve=True)
    assert np.count_nonzero(full) > 8 * volume
    assert volume <= np.count_nonzero(half) <= 2 * volume
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        span_obj = np.count_nonzero(np.any(obj != 0, axis=other))
        span_sup = np.count_nonzero(np.any(half, axis=other))
        assert span_obj - 2 <= span_sup <= span_obj + 3


def test_halving_is_exact_on_a_centred_box():
    m = np.zeros((16, 20), bool)
    m[np.ix_(np.r_[0:5, 12:16], np.r_[0:7, 14:20])] = True        # |y| <= 4, |x| <= 6 in FFT order
    h = np.fft.fftshift(sup.halve_about_origin(m))
    ys, xs = np.nonzero(h)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (8 - 2, 8 + 2, 10 - 3, 10 + 3)


def test_2d_support_contains_the_object_shifted_to_the_origin():
    """2D keeps the full autocorrelation support (tuned on the tungsten and cells simulations): it spans
    twice the object, so the object fits in it (but for its faintest edge pixels) wherever a run places it."""
    from test_phasing import synthetic

    pattern, truth = synthetic(n=64, seed=1)
    s = sup.autocorrelation_support(np.fft.ifftshift(pattern.intensity), np.fft.ifftshift(pattern.measured),
                                    threshold=0.05, sigma=1.0)
    obj = np.abs(truth) > 1e-3 * np.abs(truth).max()                  # centred array
    ys, xs = np.nonzero(obj)
    outside = []
    for y, x in zip(ys[::7], xs[::7]):      # S - S holds S - s for every point s of S
        at_origin = np.fft.ifftshift(np.roll(obj, (32 - y, 32 - x), axis=(0, 1)))
        outside.append(np.count_nonzero(at_origin & ~s))
    assert min(outside) <= 0.1 * np.count_nonzero(obj), min(outside)  # 9 of 149: the 0.05 cut trims the tails
