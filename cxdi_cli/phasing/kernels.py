"""Element-wise kernels compiled by numba, each with a plain-numpy twin used when numba is missing.

`@kernel(fallback)` turns a loop over flat arrays into a numba function (serial, cached on disk) and
pairs it with `fallback`, a vectorised numpy function of the same arguments and results. The numpy
twins run whenever numba cannot be imported (or `CXDI_NO_NUMBA=1`) or fails to compile: cxdi still
runs, slower, and `warning()` says so in one line for the caller's list of warnings (the library
never prints). A test compares every kernel with its twin on random inputs (`KERNELS`).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import numpy as np

_WARNING: str | None = None
try:
    if os.environ.get("CXDI_NO_NUMBA") == "1":
        raise ImportError("CXDI_NO_NUMBA=1")
    import numba
    from numba.core.errors import NumbaError, TypingError
except Exception as exc:  # noqa: BLE001 - any failure to import numba means: run the numpy twins
    numba = None
    NumbaError = TypingError = RuntimeError  # type: ignore[assignment,misc]
    _WARNING = f"numba unavailable ({exc}): element-wise kernels run in plain numpy (slower)"

#: compile options: fastmath and numpy's error model let the loops vectorise; cached on disk
FAST = dict(fastmath=True, error_model="numpy", cache=True, nogil=True)
#: for float64 sums that must not be reassociated (metrics)
EXACT = dict(cache=True, nogil=True)

#: name -> Kernel, every kernel of the library (for the fallback test)
KERNELS: dict[str, "Kernel"] = {}


class Kernel:
    """A numba kernel and its numpy twin; calls go to the compiled one unless it cannot be used."""

    def __init__(self, fn: Callable[..., Any], fallback: Callable[..., Any], options: dict[str, Any]) -> None:
        self.__name__ = fn.__name__
        self.__module__ = fn.__module__
        self.__doc__ = fn.__doc__
        self.fallback = fallback
        self.compiled = numba.njit(**options)(fn) if numba is not None else None
        self._impl = self.compiled if self.compiled is not None else fallback

    def __call__(self, *args: Any) -> Any:
        try:
            return self._impl(*args)
        except TypingError:  # a kernel called with the wrong types: a bug to see, not to hide
            raise
        except (NumbaError, OSError) as exc:  # numba could not compile: numpy from now on
            if self._impl is self.fallback:
                raise
            _use_fallback(f"numba could not compile {self.__name__} ({type(exc).__name__}): "
                          "element-wise kernels run in plain numpy (slower)")
            return self.fallback(*args)


def kernel(fallback: Callable[..., Any], options: dict[str, Any] | None = None) -> Callable[[Callable[..., Any]], Kernel]:
    """Decorator: compile the loop with numba (`options`, default FAST), `fallback` when that fails."""

    def wrap(fn: Callable[..., Any]) -> Kernel:
        k = Kernel(fn, fallback, FAST if options is None else options)
        KERNELS[fn.__name__] = k
        return k

    return wrap


def _use_fallback(message: str) -> None:
    global _WARNING
    if _WARNING is None:
        _WARNING = message
    for k in KERNELS.values():
        k._impl = k.fallback


def warning() -> str | None:
    """One line when the kernels run in plain numpy (numba missing or not compiling), else None.

    Runs one small kernel first, so that a numba that imports but cannot compile is found here,
    before any run starts, rather than in the middle of one."""
    if _WARNING is None and KERNELS:
        probe = next(iter(KERNELS.values()))
        if probe.compiled is not None and probe._impl is probe.compiled:
            try:
                _probe()
            except (NumbaError, OSError) as exc:
                _use_fallback(f"numba could not compile the kernels ({type(exc).__name__}): "
                              "element-wise kernels run in plain numpy (slower)")
    return _WARNING


def _probe_loop(x):  # pragma: no cover - compiled
    for i in range(x.size):
        x[i] = x[i] + np.float32(1.0)


_PROBE = numba.njit(cache=True)(_probe_loop) if numba is not None else None


def _probe() -> None:
    if _PROBE is not None:
        _PROBE(np.zeros(4, np.float32))


#: Pixels per chunk of the passes that take a logarithm or a sum over a whole array through a
#: cache-sized scratch (256 kB of float32).
CHUNK = 1 << 16


def chunk_bounds(n: int, size: int = CHUNK) -> Iterator[tuple[int, int]]:
    """(start, stop) of the consecutive chunks that cover range(n)."""
    for start in range(0, n, size):
        yield start, min(n, start + size)


def log_pass(n: int, dtype: Any, ratio: Callable[[np.ndarray, int], Any],
             accumulate: Callable[[np.ndarray, int], Any]) -> None:
    """Chunk by chunk of range(n): `ratio(y, start)` fills the scratch y, y <- ln y (numpy's vectorised
    log: numba's scalar one cost as much as an FFT pair per pass), then `accumulate(y, start)`."""
    scratch = np.empty(min(n, CHUNK), dtype)
    for start, stop in chunk_bounds(n):
        y = scratch[: stop - start]
        ratio(y, start)
        np.log(y, out=y)
        accumulate(y, start)


def metrics_from_sums(sums: tuple) -> dict[str, float]:
    """llk, llk_free, chi2 (per pixel) and scale from the sums (llk_measured, n_measured, llk_free, n_free,
    chi2, sum Ic, sum I) that the metric kernels of `algorithms` (coherent) and `psf` (blurred) return."""
    llk, nm, llkf, nf, chi2, sic, si = sums
    nan = float("nan")
    return {
        "llk": llk / nm if nm else nan,
        "llk_free": llkf / nf if nf else nan,
        "chi2": chi2 / nm if nm else nan,
        "scale": sic / si if si > 0 else nan,
    }


def _np_ml_direction(buf, support, d, gprev, first):
    g = buf * support.astype(np.float32)
    num = float(np.sum(g.real.astype(np.float64) * (g.real - gprev.real) + g.imag.astype(np.float64) * (g.imag - gprev.imag)))
    den = float(np.sum(gprev.real.astype(np.float64) ** 2 + gprev.imag.astype(np.float64) ** 2))
    gamma = 0.0 if (first or den <= 0.0) else max(0.0, num / den)
    d[:] = -g + np.float32(gamma) * d
    gprev[:] = g
    buf[:] = d
    return gamma


@kernel(_np_ml_direction)
def ml_direction(buf, support, d, gprev, first):  # pragma: no cover - compiled
    """G = P_S buf (the gradient on rho); Polak-Ribiere+: d <- -G + gamma d; gprev <- G; buf <- d.
    Returns gamma (0 on the first iteration of a block, or when PR+ restarts). The one conjugate
    direction of the ML steps, coherent (algorithms) and with a PSF (psf)."""
    num = 0.0
    den = 0.0
    for i in range(buf.size):
        g = buf[i] * np.float32(support[i])
        gp = gprev[i]
        num += float((g.real * (g.real - gp.real) + g.imag * (g.imag - gp.imag)))
        den += float(gp.real * gp.real + gp.imag * gp.imag)
    gamma = 0.0 if (first or den <= 0.0) else max(0.0, num / den)
    gm = np.float32(gamma)
    for i in range(buf.size):
        g = buf[i] * np.float32(support[i])
        v = -g + gm * d[i]
        d[i] = v
        gprev[i] = g
        buf[i] = v
    return gamma
