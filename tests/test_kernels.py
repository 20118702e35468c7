"""Every numba kernel against its plain-numpy twin (the fallback when numba cannot run), on random inputs."""
import numpy as np
import pytest

from cxdi_cli.phasing import algorithms as alg  # noqa: F401  (registers the kernels)
from cxdi_cli.phasing import kernels, support  # noqa: F401

N = 997  # odd: no vector-width luck


def _c(rng, n=N, scale=3.0):
    return (rng.normal(0, scale, n) + 1j * rng.normal(0, scale, n)).astype(np.complex64)


def _inputs(name, rng):
    """Arguments of kernel `name`: arrays and scalars as the library passes them."""
    amp = rng.uniform(0, 5, N).astype(np.float32)
    kind = rng.integers(0, 3, N).astype(np.int8)
    sup = rng.random(N) < 0.4
    s, s2, eps = np.float32(1 / np.sqrt(N)), np.float32(1 / N), np.float32(1e-2)
    a, b, pos = np.float32(1.0), np.float32(-0.9), np.float32(1.0)
    return {
        "_modulus": (_c(rng), amp, kind, s, s2),
        "_ratio_chunk": (_c(rng), amp, s2, np.zeros(N - 7, np.float32), 7),
        "_sums_chunk": (_c(rng), amp, kind, s2, np.log(rng.uniform(0.1, 3, N - 7)).astype(np.float32), 7),
        "_fourier_ratio_chunk": (_c(rng), amp, 1.0 / N, np.zeros(N - 7), 7),
        "_fourier_sums_chunk": (_c(rng), amp, kind, 1.0 / N, np.log(rng.uniform(0.1, 3, N - 7)), 7, np.arange(7.0)),
        "_update": (_c(rng), _c(rng), sup, a, b, pos),
        "_update_bounded": (_c(rng), _c(rng), sup, a, b, pos, np.float32(4.0)),
        "_update_sums": (_c(rng), _c(rng), sup, a, b, pos, np.float32(4.0)),
        "_outside_sums": (_c(rng), sup),
        "_scaled_copy": (np.zeros(N, np.complex64), _c(rng), s),
        "_ml_gradient": (np.zeros(N, np.complex64), _c(rng), amp, kind, s, eps),
        "ml_direction": (_c(rng), sup, _c(rng), _c(rng), False),
        "_ml_line_sums": (_c(rng), _c(rng), amp, kind, 0.1, s, eps),
        "_ml_ratio_chunk": (_c(rng), _c(rng), np.float32(0.1), s, eps, np.zeros(N - 7, np.float32), 7),
        "_ml_delta_chunk": (_c(rng), _c(rng), amp, kind, np.float32(0.1), s, eps,
                            np.log(rng.uniform(0.1, 3, N - 7)).astype(np.float32), 7, np.ones(1)),
        "_ml_apply": (_c(rng), _c(rng), _c(rng), _c(rng), np.float32(0.3), s),
        "_abs_into": (np.zeros(N, np.complex64), _c(rng)),
        "_gaussian_product": (_c(rng, 4 * 6 * 5).reshape(4, 6, 5), *(rng.uniform(0, 1, k).astype(np.float32)
                                                                     for k in (4, 6, 5))),
        "_max_real": (_c(rng),),
        "_count_above": (_c(rng), np.float32(0.5)),
        "_set_support": (_c(rng), _c(rng), np.zeros(N, bool), np.float32(0.5), True),
    }[name]


def _copy(args):
    return tuple(x.copy() if isinstance(x, np.ndarray) else x for x in args)


def _close(x, y):
    if isinstance(x, tuple):
        return all(_close(a, b) for a, b in zip(x, y))
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype == bool or np.issubdtype(x.dtype, np.integer):
        return np.array_equal(x, y)
    return np.allclose(x, y, rtol=2e-4, atol=2e-4 * max(1.0, float(np.max(np.abs(y)))))


OURS = sorted(n for n, k in kernels.KERNELS.items()
              if k.__module__ in ("cxdi_cli.phasing.algorithms", "cxdi_cli.phasing.support", "cxdi_cli.phasing.kernels"))


@pytest.mark.parametrize("name", OURS)
def test_kernel_matches_numpy_twin(name):
    """The kernels of algorithms.py, support.py and kernels.py (other modules test their own)."""
    if name not in {
            "_modulus", "_ratio_chunk", "_sums_chunk", "_fourier_ratio_chunk", "_fourier_sums_chunk", "_update",
            "_update_bounded", "_update_sums", "_outside_sums", "_scaled_copy", "_ml_gradient", "ml_direction",
            "_ml_line_sums", "_ml_ratio_chunk", "_ml_delta_chunk",
            "_ml_apply", "_abs_into", "_gaussian_product", "_max_real", "_count_above", "_set_support"}:
        pytest.fail(f"kernel {name} has no inputs in this test: add them to _inputs")
    k = kernels.KERNELS[name]
    if k.compiled is None:
        pytest.skip("numba is not available: only the numpy twins run")
    args = _inputs(name, np.random.default_rng(sorted(kernels.KERNELS).index(name)))
    a, b = _copy(args), _copy(args)
    ra, rb = k.compiled(*a), k.fallback(*b)
    if ra is not None:
        assert _close(ra, rb), name
    for x, y in zip(a, b):  # the arrays each one wrote
        if isinstance(x, np.ndarray):
            assert _close(x, y), name


def test_chunked_sums_equal_one_pass_formulas():
    """`_fourier_sums` and `_ml_delta` go through the array in chunks (a vectorised log between two passes):
    over several chunks they give the one-pass float64 formulas (the metrics' definitions)."""
    rng = np.random.default_rng(3)
    n = 3 * kernels.CHUNK + 11
    z, dd = _c(rng, n, 30.0), _c(rng, n, 3.0)
    amp = rng.uniform(0, 40, n).astype(np.float32)
    amp[rng.random(n) < 0.1] = 0
    kind = rng.integers(0, 3, n).astype(np.int8)
    s2 = 1.0 / n
    ic = np.abs(z.astype(np.complex128)) ** 2 * s2
    obs = amp.astype(np.float64) ** 2
    term = ic - obs + np.where(obs > 0, obs * np.log(np.where(obs > 0, obs, 1) / np.maximum(ic, 1e-12)), 0)
    m, f = kind == alg.MEASURED, kind == alg.FREE
    want = (term[m].sum(), m.sum(), term[f].sum(), f.sum(), np.sum((obs[m] - ic[m]) ** 2 / np.maximum(ic[m], 1)),
            ic[m].sum(), obs[m].sum())
    got = alg._fourier_sums(z, amp, kind, s2)
    assert np.allclose(got, want, rtol=1e-8, atol=0)  # float64 rounding of other summation orders
    s, eps, t = np.float32(1.0), np.float32(1e-2), 0.05
    psi = z * np.float32(np.sqrt(s2))
    p0, p1 = psi.astype(np.complex128), psi.astype(np.complex128) + t * dd.astype(np.complex128)
    f0, f1 = np.maximum(np.abs(p0) ** 2, eps), np.maximum(np.abs(p1) ** 2, eps)
    exact = float(np.sum((f1 - f0 - obs * np.log(f1 / f0))[m]))
    scale = float(np.sum(np.abs(f1 - f0)[m] + (obs * np.abs(np.log(f1 / f0)))[m]))
    assert abs(alg._ml_delta(psi, dd, amp, kind, t, s, eps) - exact) < 1e-5 * scale


def test_without_numba_the_twins_run_and_say_so(tmp_path):
    """A process where numba is unavailable (CXDI_NO_NUMBA=1) phases with the numpy kernels and warns once."""
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from cxdi_cli.phasing import kernels, runs\n"
            "from cxdi_cli import model\n"
            "assert kernels.numba is None\n"
            "rng = np.random.default_rng(0)\n"
            "obj = np.zeros((32, 32), np.complex64); obj[12:20, 13:19] = 1\n"
            "I = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(obj)))) ** 2 * 100\n"
            "p = model.Pattern(intensity=rng.poisson(I).astype(np.float32), mask=np.zeros((32, 32), np.uint32))\n"
            "opts = runs.Options(recipe='hio**20,er**10,ml**5', runs=1, seed=1, positivity=True)\n"
            "prob = runs.prepare(p, opts)\n"
            "print(prob.info['warnings'])\n"
            "rec = runs.phase(p, opts, problem=prob)\n"
            "from cxdi_cli.registration import nrms_error\n"
            "print('NRMSE', nrms_error(rec.runs[0].obj, obj))\n")
    env = {**__import__("os").environ, "CXDI_NO_NUMBA": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "numba unavailable" in out.stdout and "plain numpy" in out.stdout
    numpy_error = float(out.stdout.split("NRMSE")[1])
    assert numpy_error < 0.05                            # the 8x6 box is recovered with the numpy twins
    # ... and the same run with the compiled kernels (when numba is here) ends at the same error
    from cxdi_cli import model
    from cxdi_cli.phasing import kernels, runs
    from cxdi_cli.registration import nrms_error
    if kernels.numba is not None:
        rng = np.random.default_rng(0)
        obj = np.zeros((32, 32), np.complex64)
        obj[12:20, 13:19] = 1
        inten = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(obj)))) ** 2 * 100
        p = model.Pattern(intensity=rng.poisson(inten).astype(np.float32), mask=np.zeros((32, 32), np.uint32))
        rec = runs.phase(p, runs.Options(recipe="hio**20,er**10,ml**5", runs=1, seed=1, positivity=True))
        assert abs(nrms_error(rec.runs[0].obj, obj) - numpy_error) < 1e-4


@pytest.mark.parametrize("shape", [(40, 36), (16, 18, 20)])
def test_free_islands_kernel_matches_numpy_twin(shape):
    """The free-pixel islands (phasing.problem) placed by the compiled loop and by its numpy twin agree
    pixel for pixel (islands wrap round the edges; mates may overlap earlier islands)."""
    from cxdi_cli.phasing import problem  # noqa: F401  (registers the kernel)

    k = kernels.KERNELS["_mark_islands"]
    if k.compiled is None:
        pytest.skip("numba is not available: only the numpy twins run")
    rng = np.random.default_rng(5)
    measured = rng.random(shape) < 0.8
    freqs = np.meshgrid(*[np.fft.fftfreq(n, 1.0 / n) for n in shape], indexing="ij", sparse=True)
    radius = np.sqrt(sum(f.astype(np.float32) ** 2 for f in freqs))
    order = rng.permutation(np.flatnonzero(measured & (radius > 3.0)))
    offsets = np.stack(np.meshgrid(*[np.arange(-1, 2)] * len(shape), indexing="ij"), -1).reshape(-1, len(shape))
    target = 0.1 * measured.sum()
    results = []
    for fn in (k.compiled, k.fallback):
        free = np.zeros(shape, bool)
        count = fn(free.reshape(-1), measured.reshape(-1), radius.reshape(-1), order, offsets,
                   np.array(shape, np.int64), float(target), 3.0)
        results.append((count, free))
    assert results[0][0] == results[1][0] >= target
    assert np.array_equal(results[0][1], results[1][1])
    assert not np.any(results[0][1] & ~measured) and not np.any(results[0][1] & (radius <= 3.0))
