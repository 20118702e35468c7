"""estimate_oversampling against objects of known extent (sigma = array size / extent along an axis),
in 2D (square and non-square arrays, objects off the array's centre) and 3D (a porous particle)."""
import numpy as np
import pytest

from cxdi_cli import fft
from cxdi_cli.sampling import estimate_oversampling
from cxdi_cli.sim.tilt3d import make_particle


def _pattern(obj, photons, seed=0, noise=True, beamstop=3.0):
    """(intensity, measured) of a centred object: |F|^2 scaled to `photons`, Poisson counts (or the
    expected float intensities), a masked beamstop of `beamstop` pixels."""
    spec = np.abs(fft.cfftn(obj.astype(np.complex64), norm="ortho")) ** 2
    spec *= photons / spec.sum()
    data = np.random.default_rng(seed).poisson(spec).astype(np.float32) if noise else spec.astype(np.float32)
    g = np.meshgrid(*[np.arange(n) - n // 2 for n in obj.shape], indexing="ij", sparse=True)
    measured = sum(x.astype(float) ** 2 for x in g) >= beamstop ** 2
    return data, measured


def _extent(obj):
    a = np.abs(obj) > 0
    out = []
    for ax in range(obj.ndim):
        idx = np.flatnonzero(np.any(a, axis=tuple(i for i in range(obj.ndim) if i != ax)))
        out.append(idx[-1] - idx[0] + 1)
    return out


def _rough_box(shape, size, offset, seed=1):
    """A rough (random-phase) square of `size` pixels, shifted by `offset` from the array's centre."""
    rng = np.random.default_rng(seed)
    obj = np.zeros(shape, np.complex64)
    sl = tuple(slice(n // 2 + o - size // 2, n // 2 + o - size // 2 + size) for n, o in zip(shape, offset))
    obj[sl] = np.exp(2j * np.pi * rng.random((size,) * len(shape)))
    return obj


@pytest.mark.parametrize("shape,offset", [((96, 96), (0, 0)), ((96, 128), (0, 0)), ((96, 128), (17, -29))])
def test_2d_square_non_square_and_off_centre(shape, offset):
    obj = _rough_box(shape, 24, offset)
    truth = min(n / e for n, e in zip(shape, _extent(obj)))        # 96 / 24 = 4
    data, measured = _pattern(obj, 1e8)
    assert estimate_oversampling(data, measured) == pytest.approx(truth, rel=0.15)


def test_2d_compact_specimen_reads_low_but_close():
    """A real cluster of discs (a compact specimen, no random phase): the speckle correlation falls
    faster than a uniform box's of the same extent, so the estimate is low, by about a quarter."""
    from test_phasing import synthetic

    pattern, truth_obj = synthetic(n=128, extent=0.2, photons=1e9)
    truth = min(128 / e for e in _extent(np.where(np.abs(truth_obj) > 1e-6 * np.abs(truth_obj).max(), 1, 0)))
    est = estimate_oversampling(pattern.intensity, pattern.measured)
    assert 0.65 * truth < est < 1.05 * truth


def _particle(n, extent):
    p = make_particle(float(extent), seed=0)
    g = np.meshgrid(*[np.arange(n) - n // 2] * 3, indexing="ij")
    return p.density(np.stack([g[2], g[1], g[0]]).astype(float)).astype(np.complex64)  # (x, y, z) points


@pytest.mark.parametrize("noise", [True, False])
def test_3d_particle(noise):
    """A 15-voxel porous particle in an 80^3 volume, Poisson counts or the expected intensities (the
    noise-free case read 1814 for about 5 when the Poisson variance was subtracted from it)."""
    obj = _particle(80, 15)
    truth = min(80 / e for e in _extent(obj))
    data, measured = _pattern(obj, 1e9, noise=noise)
    assert estimate_oversampling(data, measured) == pytest.approx(truth, rel=0.15)


def test_too_few_pixels_gives_none():
    data = np.zeros((32, 32), np.float32)
    data[16, 16] = 5
    assert estimate_oversampling(data, np.ones_like(data, bool)) is None


@pytest.mark.parametrize("shape", [(160, 200), (48, 56, 64)])
def test_a_large_array_is_estimated_on_its_central_part(shape, monkeypatch):
    """Above MAX_PIXELS (2^24: a 512^3 volume took 26 s whole) the estimate comes from the centred crop
    of at most that many pixels: here MAX_PIXELS lowered to 64^2 (2D) and 32^3 (3D); the crop keeps
    q = 0 at its centre, and the estimate stays within 15 % of the object's sigma (4: a crop spans
    several speckles beyond the two the estimate skips)."""
    from cxdi_cli import sampling

    obj = _rough_box(shape, 40 if len(shape) == 2 else 12, (3,) * len(shape))
    truth = min(n / e for n, e in zip(shape, _extent(obj)))        # 4
    data, measured = _pattern(obj, 1e8 if len(shape) == 2 else 1e9, beamstop=2.0)
    whole = estimate_oversampling(data, measured)
    side = 64 if len(shape) == 2 else 32
    monkeypatch.setattr(sampling, "MAX_PIXELS", side ** len(shape))
    crop, cmeas = sampling._central_part(data, measured)
    assert crop.shape == (side,) * len(shape)
    assert crop[(side // 2,) * len(shape)] == data[tuple(n // 2 for n in shape)]     # q = 0 stays central
    est = estimate_oversampling(data, measured)
    assert est == estimate_oversampling(crop, cmeas)
    assert est == pytest.approx(truth, rel=0.15) and whole == pytest.approx(truth, rel=0.15), (est, whole, truth)
