"""The only module that runs FFTs: pyFFTW plans built once per (shape, dtype, axes), wisdom on disk.

Two interfaces:
- `fftn` / `ifftn` / `cfftn` / `icfftn`: convenience transforms that copy in and out of a cached plan's
  private buffers (a cached plan is never rebound to a caller's array, see DESIGN §2's pyFFTW trap);
- `FFTPair`: an in-place forward/inverse pair bound once to its own aligned buffer, for hot loops
  (phase retrieval) where even a copy per iteration would cost.

Normalisation: `norm="backward"` (default) matches numpy.fft; `norm="ortho"` is unitary.
"""
from __future__ import annotations

import functools
import json
import os
import threading
from pathlib import Path

import numpy as np
import pyfftw

_LOCK = threading.Lock()
_THREADS: int | None = None
_WISDOM_LOADED = False
_WISDOM_DIRTY = False


def wisdom_path() -> Path:
    """Where FFTW wisdom lives: $CXDI_WISDOM, else the user's cache folder."""
    env = os.environ.get("CXDI_WISDOM")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cxdi" / "fftw-wisdom.json"


def set_threads(n: int | None) -> None:
    """Set the default thread count for new plans (None: all cores)."""
    global _THREADS
    _THREADS = None if n is None else max(1, int(n))


def threads() -> int:
    """The thread count new plans use."""
    if _THREADS is not None:
        return _THREADS
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def load_wisdom(path: Path | None = None) -> bool:
    """Import FFTW wisdom saved by an earlier process; False when there is none (or it is unreadable)."""
    global _WISDOM_LOADED
    _WISDOM_LOADED = True
    path = path or wisdom_path()
    try:
        words = json.loads(path.read_text())
        return any(pyfftw.import_wisdom(tuple(w.encode("latin-1") for w in words)))
    except (OSError, ValueError, TypeError):
        return False


def save_wisdom(path: Path | None = None) -> None:
    """Write the accumulated wisdom atomically (several cxdi processes may run at once under make -j)."""
    global _WISDOM_DIRTY
    path = path or wisdom_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps([w.decode("latin-1") for w in pyfftw.export_wisdom()]))
        os.replace(tmp, path)
        _WISDOM_DIRTY = False
    except OSError:
        pass  # wisdom is an optimisation: a read-only home must not fail a reconstruction


def _ensure_wisdom() -> None:
    if not _WISDOM_LOADED and os.environ.get("CXDI_NO_WISDOM") != "1":
        load_wisdom()


def _flags() -> tuple[str, ...]:
    return (os.environ.get("CXDI_FFTW_PLANNER", "FFTW_MEASURE"),)


def _normalise_axes(ndim: int, axes: tuple[int, ...] | None) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(ndim))
    return tuple(sorted(a % ndim for a in axes))


def _complex_dtype(x: np.ndarray) -> np.dtype:
    if x.dtype in (np.complex128, np.float64):
        return np.dtype(np.complex128)
    return np.dtype(np.complex64)


@functools.lru_cache(maxsize=16)  # a plan owns two full-size aligned buffers: keep few (3D!)
def _plan(shape: tuple[int, ...], dtype: str, axes: tuple[int, ...], inverse: bool, nthreads: int) -> pyfftw.FFTW:
    global _WISDOM_DIRTY
    _ensure_wisdom()
    a = pyfftw.empty_aligned(shape, dtype)
    b = pyfftw.empty_aligned(shape, dtype)
    _WISDOM_DIRTY = True
    return pyfftw.FFTW(a, b, axes=axes, threads=nthreads, flags=_flags(),
                       direction="FFTW_BACKWARD" if inverse else "FFTW_FORWARD")


def _transform(x: np.ndarray, inverse: bool, axes: tuple[int, ...] | None, norm: str) -> np.ndarray:
    x = np.asarray(x)
    dtype = _complex_dtype(x)
    ax = _normalise_axes(x.ndim, axes)
    n = int(np.prod([x.shape[a] for a in ax])) if ax else 1
    with _LOCK:
        # small arrays: threads only add synchronisation (10 ms per 64x64 transform on a loaded host)
        plan = _plan(x.shape, dtype.str, ax, inverse, threads() if x.size >= 65536 else 1)
        plan.input_array[...] = x  # never plan(x): that would rebind the shared plan to x
        plan.execute()             # raw, unnormalised FFTW transform; scaling is done below
        out = plan.output_array.copy()
    if norm == "ortho":
        out *= dtype.type(1.0 / np.sqrt(n))
    elif norm == "backward":
        if inverse:
            out *= dtype.type(1.0 / n)
    elif norm == "forward":
        if not inverse:
            out *= dtype.type(1.0 / n)
    else:
        raise ValueError(f"unknown norm {norm!r}")
    return out


def fftn(x: np.ndarray, axes: tuple[int, ...] | None = None, norm: str = "backward") -> np.ndarray:
    """Forward n-D DFT, origin at index 0, numpy.fft conventions (complex64 unless x is 64-bit)."""
    return _transform(x, False, axes, norm)


def ifftn(x: np.ndarray, axes: tuple[int, ...] | None = None, norm: str = "backward") -> np.ndarray:
    """Inverse n-D DFT, numpy.fft conventions."""
    return _transform(x, True, axes, norm)


def cfftn(x: np.ndarray, axes: tuple[int, ...] | None = None, norm: str = "backward") -> np.ndarray:
    """Centred transform of DESIGN §4: F = fftshift(fftn(ifftshift(rho))), q = 0 at index n // 2."""
    ax = _normalise_axes(np.ndim(x), axes)
    return np.fft.fftshift(fftn(np.fft.ifftshift(x, axes=ax), ax, norm), axes=ax)


def icfftn(x: np.ndarray, axes: tuple[int, ...] | None = None, norm: str = "backward") -> np.ndarray:
    """Inverse of `cfftn`: rho = fftshift(ifftn(ifftshift(F)))."""
    ax = _normalise_axes(np.ndim(x), axes)
    return np.fft.fftshift(ifftn(np.fft.ifftshift(x, axes=ax), ax, norm), axes=ax)


class FFTPair:
    """In-place unitary forward/inverse transforms of one private aligned buffer (for hot loops).

    Use: `p = FFTPair(shape)`; fill `p.buffer`; `p.forward()`; modify; `p.inverse()`.
    Both directions are scaled by 1/sqrt(N), so Parseval holds and the pair is the identity.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | type = np.complex64,
                 nthreads: int | None = None) -> None:
        global _WISDOM_DIRTY
        _ensure_wisdom()
        self.dtype = np.dtype(dtype)
        self.buffer = pyfftw.empty_aligned(tuple(shape), self.dtype)
        self.buffer[...] = 0
        nt = nthreads or (threads() if int(np.prod(shape)) >= 65536 else 1)  # small: threads only cost
        ax = tuple(range(len(shape)))
        self._fwd = pyfftw.FFTW(self.buffer, self.buffer, axes=ax, threads=nt, flags=_flags(),
                                direction="FFTW_FORWARD", ortho=False, normalise_idft=False)
        self._inv = pyfftw.FFTW(self.buffer, self.buffer, axes=ax, threads=nt, flags=_flags(),
                                direction="FFTW_BACKWARD", ortho=False, normalise_idft=False)
        _WISDOM_DIRTY = True

    def forward(self, scale: bool = True) -> np.ndarray:
        """Transform `buffer` in place (forward; unitary unless scale=False) and return it.

        A hot loop may pass scale=False and fold `self.scale` into its own element-wise pass.
        """
        self._fwd.execute()
        if scale:
            self.buffer *= self.scale
        return self.buffer

    def inverse(self, scale: bool = True) -> np.ndarray:
        """Transform `buffer` in place (inverse; unitary unless scale=False) and return it."""
        self._inv.execute()
        if scale:
            self.buffer *= self.scale
        return self.buffer

    @functools.cached_property
    def scale(self) -> np.generic:
        return self.dtype.type(1.0 / np.sqrt(self.buffer.size))


def flush_wisdom() -> None:
    """Save wisdom if new plans were made in this process (the CLI calls this on exit)."""
    if _WISDOM_DIRTY and os.environ.get("CXDI_NO_WISDOM") != "1":
        save_wisdom()


def good_size(n: int, *, smaller: bool = True) -> int:
    """The nearest FFT-friendly size 2^a 3^b 5^c 7^d not above (or, smaller=False, not below) n."""
    def friendly(m: int) -> bool:
        for p in (2, 3, 5, 7):
            while m % p == 0 and m > 1:
                m //= p
        return m == 1
    m = n
    step = -1 if smaller else 1
    while m > 1 and not friendly(m):
        m += step
    return max(m, 1)
