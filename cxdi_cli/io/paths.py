"""Input addressing and safe output: `file.h5::/path`, `-` for stdin/stdout, atomic writes."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from cxdi_cli.model import ComputeError, CxdiError, InputError, UsageError


class OutputError(CxdiError):
    """An output cannot be written (disk full, file-size limit, read-only or vanished folder); exit 1.
    Any earlier file under the output's name is left as it was."""

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

_STDIN_CACHE: dict[str, str] = {}


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


#: What third-party readers (h5py, tifffile, numpy, zlib) raise on a damaged file.
DAMAGED_FILE_ERRORS: tuple[type[BaseException], ...] = (OSError, KeyError, RuntimeError, ValueError, TypeError,
                                                         IndexError, ArithmeticError, UnicodeError, EOFError)


def corrupt_file_errors(fn):
    """Decorate a reader taking a file spec (or a list of them) first: an exception its libraries raise on
    a damaged file becomes one InputError line naming the file, instead of an internal error."""
    import functools  # noqa: PLC0415

    @functools.wraps(fn)
    def reader(spec, *args, **kwargs):
        try:
            return fn(spec, *args, **kwargs)
        except CxdiError:
            raise
        except DAMAGED_FILE_ERRORS as exc:
            name = spec if isinstance(spec, (str, os.PathLike)) else (list(spec) or ["?"])[0]
            name = split_url(str(name))[0]
            raise InputError(f"{name}: corrupt file ({type(exc).__name__}: {first_line(exc)})") from None

    return reader


def split_url(spec: str) -> tuple[str, str | None]:
    """Split `file.h5::/path/to/dataset` (silx convention) into (file, dataset); dataset None if absent."""
    spec = str(spec)
    if "::" in spec:
        name, _, dset = spec.partition("::")
        return name, (dset if dset.startswith("/") else "/" + dset) if dset else None
    return spec, None


def sniff(path: str) -> str:
    """File kind from its magic bytes: 'hdf5', 'tiff', 'npy', 'edf', 'cbf' or 'unknown'."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a file") from None
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head[:4] in TIFF_MAGICS:
        return "tiff"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.lstrip().startswith(b"{") and b"HeaderID" in head or b"EDF_" in head[:512]:
        return "edf"
    if b"_array_data" in head or head.startswith(b"###CBF") or b"CBF" in head[:64]:
        return "cbf"
    if head.lstrip().startswith(b"{"):
        return "edf"
    return "unknown"


def local_input(name: str) -> str:
    """A readable local path for `name`; `-` spools standard input to a temporary file once.

    HDF5 needs random access, so a pipe cannot be read in place (h5py's file-like objects need seek).
    """
    if name != "-":
        p = Path(name)
        if p.is_dir():
            raise InputError(f"{name}: is a directory, not a file")
        if not p.exists():
            raise InputError(f"{name}: no such file")
        return name
    if "-" in _STDIN_CACHE:
        return _STDIN_CACHE["-"]
    stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
    if hasattr(stream, "isatty") and stream.isatty():
        raise UsageError("-: standard input is a terminal; pipe a file into it")
    fd, tmp = tempfile.mkstemp(prefix="cxdi-stdin-")
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(stream, out, 1 << 20)
    if os.path.getsize(tmp) == 0:
        os.unlink(tmp)
        raise InputError("-: standard input is empty")
    _STDIN_CACHE["-"] = tmp
    return tmp


def release_stdin() -> None:
    """Remove the spooled copy of standard input (the CLI calls this when a command ends)."""
    tmp = _STDIN_CACHE.pop("-", None)
    if tmp:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


_WRITE_ERRORS = {
    errno.ENOSPC: "no space left on the device", errno.EFBIG: "file too large (file-size limit reached)",
    errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.ENOENT: "the folder vanished",
    errno.EIO: "input/output error",
}
_WRITE_TEXTS = (("No space left", errno.ENOSPC), ("File too large", errno.EFBIG), ("quota", errno.EDQUOT),
                ("Read-only file system", errno.EROFS), ("Permission denied", errno.EACCES),
                ("errno = 28", errno.ENOSPC), ("errno = 27", errno.EFBIG), ("errno = 30", errno.EROFS))


def write_failure(dest: str, exc: BaseException) -> OutputError:
    """An OutputError for a failed write, naming `dest` and the cause (h5py hides errno in its text)."""
    code = getattr(exc, "errno", None)
    if code not in _WRITE_ERRORS:
        text = str(exc)
        code = next((c for t, c in _WRITE_TEXTS if t.lower() in text.lower()), None)
    reason = _WRITE_ERRORS.get(code) or first_line(exc)
    return OutputError(f"{dest}: cannot write ({reason}); nothing written, an existing {dest} is unchanged")


@contextlib.contextmanager
def atomic_output(dest: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside `dest`; rename it onto `dest` only if the block succeeds.

    `dest == "-"` streams the finished file to standard output (refused on a terminal).
    A failure or interruption removes the temporary file, so no half-written output is left.
    """
    if dest == "-":
        out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
        if out is None or (hasattr(sys.stdout, "isatty") and sys.stdout.isatty()):
            raise UsageError("-o -: refusing to write binary data to a terminal; redirect or pipe it")
        fd, tmp = tempfile.mkstemp(prefix="cxdi-out-", suffix=suffix)
        os.close(fd)
        try:
            yield tmp
            with open(tmp, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
            out.flush()
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            raise write_failure("-", exc) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return
    target = Path(dest)
    if target.is_dir():
        raise InputError(f"{dest}: is a directory; give an output file name")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{dest}: folder {parent} does not exist")
    try:  # a unique name per writer: two commands writing the same output never share a temporary file
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise write_failure(dest, exc) from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)  # atomic: readers and concurrent writers see one whole file
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and "write" in str(exc).lower()):
            raise write_failure(dest, exc) from None
        raise


def available_memory() -> int | None:
    """Bytes of memory this process can still use (MemAvailable, bounded by RLIMIT_AS), or None."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    try:
        import resource  # noqa: PLC0415

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            avail = soft if avail is None else min(avail, soft)
    except (ImportError, ValueError, OSError):
        pass
    return avail


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_memory(nbytes: float, what: str, hint: str = "") -> None:
    """Refuse, before allocating, work whose estimated memory exceeds what the machine has left
    (ComputeError naming the figure, and `hint`: the option that reduces it)."""
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise ComputeError(f"{what} needs about {human_bytes(nbytes)} of memory, the machine has "
                           f"{human_bytes(avail)} free" + (f"; {hint}" if hint else ""))
