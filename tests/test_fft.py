"""The FFT module against numpy.fft, in 1D/2D/3D, and its plan/buffer safety."""
import numpy as np
import pytest

from cxdi_cli import fft


def _rand(shape, dtype=np.complex64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


@pytest.mark.parametrize("shape", [(60,), (32, 48), (8, 12, 10)])
@pytest.mark.parametrize("norm", ["backward", "ortho", "forward"])
def test_matches_numpy(shape, norm):
    x = _rand(shape)
    ref = np.fft.fftn(x.astype(np.complex128), norm=norm)
    got = fft.fftn(x, norm=norm)
    assert got.dtype == np.complex64
    assert np.max(np.abs(got - ref)) <= 1e-5 * np.max(np.abs(ref))
    back = fft.ifftn(got, norm=norm)
    assert np.max(np.abs(back - x)) <= 1e-5 * np.max(np.abs(x))


def test_complex128_on_request():
    x = _rand((16, 16), np.complex128)
    got = fft.fftn(x)
    assert got.dtype == np.complex128
    assert np.allclose(got, np.fft.fftn(x), atol=1e-10)


def test_centred_transform_convention():
    """DESIGN §4: F = fftshift(fftn(ifftshift(rho))); a centred delta has a flat, real transform."""
    rho = np.zeros((9, 10), np.complex64)
    rho[4, 5] = 1
    f = fft.cfftn(rho)
    assert np.allclose(f, 1, atol=1e-6)
    x = _rand((9, 10))
    ref = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(x)))
    assert np.allclose(fft.cfftn(x), ref, atol=1e-4)
    assert np.allclose(fft.icfftn(fft.cfftn(x)), x, atol=1e-5)


def test_shift_theorem_sign():
    """F(q) = sum rho(r) exp(-2 pi i q.r): a delta at +1 pixel gives phase exp(-2 pi i q / N)."""
    n = 16
    rho = np.zeros(n, np.complex64)
    rho[n // 2 + 1] = 1
    f = fft.cfftn(rho)
    q = np.arange(n) - n // 2
    assert np.allclose(f, np.exp(-2j * np.pi * q / n), atol=1e-6)


def test_cached_plan_never_aliases_caller_arrays():
    a = _rand((20, 20), seed=1)
    a_copy = a.copy()
    fa = fft.fftn(a)
    fb = fft.fftn(_rand((20, 20), seed=2))  # same plan, other data
    assert np.array_equal(a, a_copy)  # input untouched
    assert not np.shares_memory(fa, fb)
    assert np.allclose(fa, np.fft.fftn(a_copy), atol=1e-3)


def test_pair_is_unitary_and_in_place():
    x = _rand((24, 20))
    pair = fft.FFTPair(x.shape)
    pair.buffer[...] = x
    out = pair.forward()
    assert out is pair.buffer
    assert np.isclose(np.linalg.norm(out), np.linalg.norm(x), rtol=1e-5)  # Parseval
    assert np.allclose(out, np.fft.fftn(x, norm="ortho"), atol=1e-5)
    pair.inverse()
    assert np.allclose(pair.buffer, x, atol=1e-5)


def test_wisdom_round_trip(tmp_path):
    path = tmp_path / "w.json"
    fft.fftn(_rand((30, 14)))
    fft.save_wisdom(path)
    assert path.exists() and path.stat().st_size > 0
    assert fft.load_wisdom(path)
    assert not fft.load_wisdom(tmp_path / "missing.json")


def test_good_size():
    assert fft.good_size(1021) == 1008
    assert fft.good_size(1021, smaller=False) == 1024
    assert fft.good_size(210) == 210


def test_import_skips_pyfftw_interfaces_we_do_not_use():
    """`import pyfftw` loads its scipy.fftpack and dask interfaces (0.7 s of each command's start-up):
    cxdi_cli.fft imports it without them, and they import normally afterwards."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from cxdi_cli import fft\n"
            "assert 'scipy.fftpack' not in sys.modules and 'dask.array' not in sys.modules, 'loaded'\n"
            "import numpy as np\n"
            "x = np.arange(12, dtype=np.complex64).reshape(3, 4)\n"
            "assert np.allclose(fft.fftn(x), np.fft.fftn(x), atol=1e-4)\n"
            "import scipy.fftpack\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_plan_cache_stays_within_its_budget_and_evicted_plans_give_the_same_results(monkeypatch):
    """Registration transforms boxes of many shapes: the cached plans' buffers stay within
    `_CACHE_BUDGET`, and a plan made again after eviction (from the wisdom) gives bitwise the same result."""
    monkeypatch.setattr(fft, "_CACHE_BUDGET", 1 << 18)
    monkeypatch.setattr(fft, "_PLANS", type(fft._PLANS)())
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(60, 50)) + 1j * rng.normal(size=(60, 50))).astype(np.complex64)
    first = fft.fftn(x)
    key = ((60, 50), "<c8", (0, 1), False, 1)
    assert key in fft._PLANS
    for n in range(40, 72, 2):                 # other shapes push the first plan out
        fft.fftn(np.ones((n, n + 1), np.complex64))
    total = sum(p.input_array.nbytes + p.output_array.nbytes for p in fft._PLANS.values())
    assert total <= 1 << 18 and key not in fft._PLANS
    assert np.array_equal(fft.fftn(x), first)
