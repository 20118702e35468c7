"""The only module that runs FFTs: pyFFTW plans built once per (shape, dtype, axes), wisdom on disk.

Two interfaces:
- `fftn` / `ifftn` / `cfftn` / `icfftn`: convenience transforms that copy in and out of a cached plan's
  private buffers (a cached plan is never rebound to a caller's array, see DESIGN §2's pyFFTW trap);
- `FFTPair`: an in-place forward/inverse pair bound once to its own aligned buffer, for hot loops
  (phase retrieval) where even a copy per iteration would cost.

Normalisation: `norm="backward"` (default) matches numpy.fft; `norm="ortho"` is unitary.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import json
import os
import threading
from pathlib import Path

import numpy as np


def _import_pyfftw():
    """pyFFTW without its scipy.fftpack and dask interfaces: `import pyfftw` imports both when they are
    installed (0.7 s of every command's start-up on a 2-core host), and cxdi uses neither. They are
    hidden only while pyfftw's package loads; importing them later works as usual."""
    import sys

    hidden = [m for m in ("scipy.fftpack", "dask.array.fft") if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]  # an import of it raises ImportError: skipped
    try:
        import pyfftw as module  # noqa: PLC0415
    finally:
        for m in hidden:
            if m in sys.modules and sys.modules[m] is None:
                del sys.modules[m]
    return module


pyfftw = _import_pyfftw()

_LOCK = threading.Lock()
_THREADS: int | None = None
_WISDOM_LOADED = False


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


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def threads() -> int:
    """The thread count new plans use."""
    return _THREADS if _THREADS is not None else cores()


def threads_per_job(jobs: int, requested: int | None = None) -> int:
    """FFT threads for each of `jobs` concurrent runs, so that jobs x threads never exceeds the cores
    (oversubscribed FFTW threads wait on each other: a 2-core host ran 512^2 pairs 4-10x slower).
    `requested` (--threads) is an upper bound; at least 1."""
    per = max(1, cores() // max(1, int(jobs)))
    return per if requested is None else max(1, min(int(requested), per))


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
    path = path or wisdom_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps([w.decode("latin-1") for w in pyfftw.export_wisdom()]))
        os.replace(tmp, path)
    except OSError:
        pass  # wisdom is an optimisation: a read-only home must not fail a reconstruction


def _ensure_wisdom() -> None:
    if not _WISDOM_LOADED and _use_wisdom():
        load_wisdom()


def _use_wisdom() -> bool:
    return os.environ.get("CXDI_NO_WISDOM") != "1"


def _flags() -> tuple[str, ...]:
    return (os.environ.get("CXDI_FFTW_PLANNER", "FFTW_MEASURE"),)


@contextlib.contextmanager
def _wisdom_lock():
    """An exclusive lock on the wisdom file's folder (processes under make -j plan one at a time)."""
    path = wisdom_path()
    try:
        import fcntl  # noqa: PLC0415 - POSIX only
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o644)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _fftw(a: np.ndarray, b: np.ndarray, axes: tuple[int, ...], nthreads: int, direction: str,
          **kw: object) -> pyfftw.FFTW:
    """A plan whose algorithm is the same in every process on this machine: reproducible runs.

    FFTW_MEASURE times candidate algorithms and may pick another one in the next process, which
    changes the rounding (and, over hundreds of chaotic iterations, the reconstruction). So a plan
    is made from the on-disk wisdom when it holds this transform; otherwise, under a file lock, the
    wisdom is re-read (another process may have just planned it), and only if it still lacks the
    transform is it measured here and the wisdom saved at once. Every later process then builds the
    same plan. FFTW_ESTIMATE is deterministic by itself; CXDI_NO_WISDOM=1 gives up reproducibility."""
    flags = _flags()
    make = functools.partial(pyfftw.FFTW, a, b, axes=axes, threads=nthreads, direction=direction, **kw)
    if "FFTW_ESTIMATE" in flags or not _use_wisdom():
        return make(flags=flags)
    _ensure_wisdom()
    try:
        return make(flags=flags + ("FFTW_WISDOM_ONLY",))
    except RuntimeError:
        pass
    with _wisdom_lock():
        load_wisdom()
        try:
            return make(flags=flags + ("FFTW_WISDOM_ONLY",))
        except RuntimeError:
            plan = make(flags=flags)
            save_wisdom()
            return plan


def _normalise_axes(ndim: int, axes: tuple[int, ...] | None) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(ndim))
    return tuple(sorted(a % ndim for a in axes))


def _complex_dtype(x: np.ndarray) -> np.dtype:
    if x.dtype in (np.complex128, np.float64):
        return np.dtype(np.complex128)
    return np.dtype(np.complex64)


def _new_plan(shape: tuple[int, ...], dtype: str, axes: tuple[int, ...], inverse: bool, nthreads: int) -> pyfftw.FFTW:
    a = pyfftw.empty_aligned(shape, dtype)
    b = pyfftw.empty_aligned(shape, dtype)
    return _fftw(a, b, axes, nthreads, "FFTW_BACKWARD" if inverse else "FFTW_FORWARD")


#: The cached plans' buffers together (two per plan) stay below this: registration aligns support boxes
#: of a new shape for nearly every pair of runs, and 16 cached plans held 12 arrays of a 512^2 job's
#: size (64 MB at 128^3). An evicted plan is made again from the wisdom: the same algorithm, the same
#: results.
_CACHE_BUDGET = 1 << 23
_PLANS: "collections.OrderedDict[tuple, pyfftw.FFTW]" = collections.OrderedDict()


def _plan(shape: tuple[int, ...], dtype: str, axes: tuple[int, ...], inverse: bool, nthreads: int) -> pyfftw.FFTW:
    """A cached plan on its own buffers (least recently used ones dropped past `_CACHE_BUDGET`; under _LOCK)."""
    key = (shape, dtype, axes, inverse, nthreads)
    plan = _PLANS.get(key)
    if plan is not None:
        _PLANS.move_to_end(key)
        return plan
    plan = _PLANS[key] = _new_plan(shape, dtype, axes, inverse, nthreads)
    total = sum(p.input_array.nbytes + p.output_array.nbytes for p in _PLANS.values())
    while total > _CACHE_BUDGET and len(_PLANS) > 1:
        _, old = _PLANS.popitem(last=False)
        total -= old.input_array.nbytes + old.output_array.nbytes
    return plan


def _transform(x: np.ndarray, inverse: bool, axes: tuple[int, ...] | None, norm: str) -> np.ndarray:
    x = np.asarray(x)
    dtype = _complex_dtype(x)
    ax = _normalise_axes(x.ndim, axes)
    n = int(np.prod([x.shape[a] for a in ax])) if ax else 1
    with _LOCK:
        # small arrays: threads only add synchronisation (10 ms per 64x64 transform on a loaded host)
        nt = threads() if x.size >= 65536 else 1
        # a cached plan keeps two buffers of x's size: only plans that fit the cache's budget are cached
        # (a bigger one would evict every other plan and be evicted by the next)
        make = _plan if 2 * x.nbytes <= _CACHE_BUDGET else _new_plan
        plan = make(x.shape, dtype.str, ax, inverse, nt)
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
        self.dtype = np.dtype(dtype)
        self.buffer = pyfftw.empty_aligned(tuple(shape), self.dtype)
        nt = nthreads or (threads() if int(np.prod(shape)) >= 65536 else 1)  # small: threads only cost
        ax = tuple(range(len(shape)))
        self._fwd = _fftw(self.buffer, self.buffer, ax, nt, "FFTW_FORWARD", ortho=False, normalise_idft=False)
        self._inv = _fftw(self.buffer, self.buffer, ax, nt, "FFTW_BACKWARD", ortho=False, normalise_idft=False)
        self.buffer[...] = 0  # planning may have written into it

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
