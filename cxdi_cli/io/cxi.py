"""CXI files: diffraction patterns and reconstructions as DESIGN §3 lays them out, plus generic arrays.

Readers accept what cxdi writes, what PyNX writes (mask non-zero = bad, energy in J) and cxidb files;
`FILE::/path` picks a dataset, `-` reads standard input. Writers are atomic (temporary file + rename).

One module on purpose (it is long): the CXI layout — entries, NeXus default/NXdata attributes, the
provenance chain, the mask-bit translation — is shared by every reader and writer of the format.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import re
from typing import Any, Iterable, Iterator

import numpy as np

from cxdi_cli import __version__
from cxdi_cli.io.paths import (
    atomic_output,
    check_memory,
    corrupt_file_errors,
    first_line,
    local_input,
    sniff,
    split_url,
)
from cxdi_cli.model import (
    CxdiError,
    DataError,
    EV_J,
    Geometry,
    InputError,
    Pattern,
    Reconstruction,
    Run,
    kev_from_wavelength,
    wavelength_from_kev,
)

DET = "/entry_1/instrument_1/detector_1"
SRC = "/entry_1/instrument_1/source_1"


def _h5py():
    import h5py  # noqa: PLC0415 - heavy import, only when a file is touched

    try:
        import hdf5plugin  # noqa: F401  registers bitshuffle/LZ4/Blosc filters for detector files
    except ImportError:  # pragma: no cover - optional at run time
        pass
    return h5py


def open_h5(name: str):
    """Open an HDF5 file read-only with one-line errors (missing, directory, truncated, not HDF5)."""
    h5py = _h5py()
    path = local_input(name)
    kind = sniff(path)
    if kind != "hdf5":
        raise InputError(f"{name}: not an HDF5 file (looks like {kind})")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        msg = str(exc)
        if "truncated" in msg or "eof" in msg.lower() or "signature" in msg:
            raise InputError(f"{name}: HDF5 file is truncated or corrupt") from None
        raise InputError(f"{name}: cannot open as HDF5 ({msg.splitlines()[0]})") from None
    try:
        check_links(f, path, name)
    except BaseException:
        f.close()
        raise
    return f


def _inside(target: str, folder: str) -> bool:
    import os  # noqa: PLC0415

    real = os.path.realpath(target)
    return os.path.commonpath([real, folder]) == folder


def check_links(f, path: str, name: str, _seen: set[str] | None = None) -> None:
    """Refuse an HDF5 file whose external links, virtual datasets or external raw storage point outside
    its own folder (a crafted file must not make cxdi read arbitrary files). Linked files inside the
    folder are checked the same way; targets that do not exist are left to the readers (dangling)."""
    import os  # noqa: PLC0415

    h5py = _h5py()
    folder = os.path.dirname(os.path.realpath(path))
    seen = _seen if _seen is not None else {os.path.realpath(path)}
    linked: list[str] = []
    refused: list[str] = []  # raising inside an h5py visit callback breaks h5py: collect, raise after
    heap_refs: list[tuple[str, int, int]] = []  # variable-length string datasets: (path, offset, count)

    def target_of(fname: str, what: str, where: str, base: str = folder) -> str | None:
        if fname in (".", ""):
            return None
        cand = fname if os.path.isabs(fname) else os.path.join(base, fname)
        if not _inside(cand, folder):
            refused.append(f"{name}: {where} is {what} to {fname}, outside the file's folder; refused "
                           "(copy the target beside the file)")
            return None
        return os.path.realpath(cand)

    def visit(obj_path: str, link) -> None:
        if isinstance(link, h5py.ExternalLink) and not refused:
            t = target_of(link.filename, "an external link", "/" + obj_path)
            if t and os.path.isfile(t) and t not in seen:
                linked.append(t)

    def visit_obj(obj_path: str, obj) -> None:
        if not isinstance(obj, h5py.Dataset) or refused:
            return
        try:
            dcpl = obj.id.get_create_plist()
            externals = [dcpl.get_external(k)[0] for k in range(dcpl.get_external_count())]
            sources = [src.file_name for src in obj.virtual_sources()] if obj.is_virtual else []
            if obj.dtype.kind == "O" and obj.id.get_offset() is not None and 0 < obj.size <= 4096:
                heap_refs.append((obj_path, obj.id.get_offset(), int(obj.size)))
        except Exception:  # noqa: BLE001 - never raise inside h5py's visit; the readers report it
            return
        for ext in externals:
            ext = ext.decode() if isinstance(ext, bytes) else str(ext)
            target_of(ext, "stored in an external raw file", "/" + obj_path, os.getcwd())
        for fname in sources:
            t = target_of(fname, "a virtual dataset mapping", "/" + obj_path)
            if t and os.path.isfile(t) and t not in seen:
                linked.append(t)

    try:
        f.visititems_links(visit)
        f.visititems(visit_obj)
    except (KeyError, OSError, RuntimeError) as exc:  # the object tree itself is damaged
        raise InputError(f"{name}: corrupt HDF5 file ({first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - e.g. undecodable link names: the links cannot be checked
        raise InputError(f"{name}: corrupt HDF5 file; its links cannot be checked ({type(exc).__name__})") from None
    if refused:
        raise InputError(refused[0])
    _check_global_heaps(path, name, heap_refs)
    for t in linked:
        if t in seen or len(seen) > 10000:
            continue
        seen.add(t)
        try:
            g = h5py.File(t, "r")
        except OSError:
            continue
        with g:
            check_links(g, t, f"{name} -> {os.path.basename(t)}", seen)


@contextlib.contextmanager
def new_h5(path: str) -> Iterator[Any]:
    """A new HDF5 file built in memory and written to `path` in one plain write when the block succeeds.

    Why: when the disk fills or a file-size limit is hit, HDF5 writing straight to disk fails inside
    its own bookkeeping (tracebacks from object deallocation, then a crash at exit). Built in memory, a
    failed write is one clean OSError (ENOSPC, EFBIG) for `atomic_output` to report; the memory cost
    is the (compressed) file itself."""
    h5py = _h5py()
    f = h5py.File(f"{path}.in-memory", "w", driver="core", backing_store=False)
    try:
        yield f
        f.flush()
        image = f.id.get_file_image()
    finally:
        f.close()
    with open(path, "wb") as fh:
        fh.write(image)


def list_datasets(f, min_ndim: int = 0) -> list[str]:
    """Paths of the numeric datasets in an open file (external links followed where they resolve)."""
    h5py = _h5py()
    out: list[str] = []
    seen: set[int] = set()  # hard links (LIMA's measurement/data) name one dataset twice: list it once

    def visit(group, prefix: str, depth: int) -> None:
        if depth > 12:
            return
        for key in group:
            path = f"{prefix}/{key}"
            try:
                obj = group[key]
            except (KeyError, OSError):
                continue  # dangling external link
            if isinstance(obj, h5py.Dataset):
                if obj.dtype.kind in "biufc" and obj.ndim >= min_ndim and hash(obj.id) not in seen:
                    seen.add(hash(obj.id))
                    out.append(path)
            elif isinstance(obj, h5py.Group):
                visit(obj, path, depth + 1)

    visit(f, "", 0)
    return out


def _get_dataset(f, path: str, name: str):
    h5py = _h5py()
    try:
        obj = f[path]
    except (KeyError, OSError):
        holds = ", ".join(list_datasets(f, 2)[:12]) or "no image datasets"
        raise InputError(f"{name}: no dataset {path} (the file holds: {holds})") from None
    if not isinstance(obj, h5py.Dataset):
        holds = ", ".join(p for p in list_datasets(f, 2) if p.startswith(path))[:400] or "nothing numeric"
        raise InputError(f"{name}: {path} is a group, not a dataset (under it: {holds})")
    return obj


def _check_global_heaps(path: str, name: str, refs: list[tuple[str, int, int]]) -> None:
    """Walk the HDF5 global heap collections that variable-length strings (provenance, NeXus names) point
    into, as HDF5 will, and refuse a collection whose objects do not advance or run past its end: HDF5
    1.14 loops forever on such a heap (found by fuzzing), and a loop in C cannot be interrupted."""
    import os  # noqa: PLC0415
    import struct  # noqa: PLC0415

    if not refs:
        return
    size = os.path.getsize(path)
    wanted: dict[int, dict[int, int]] = {}
    with open(path, "rb") as fh:
        for where, offset, count in refs:
            fh.seek(offset)
            raw = fh.read(16 * count)
            if len(raw) < 16 * count:
                raise InputError(f"{name}: /{where}: data past the end of the file; truncated or corrupt")
            for k in range(count):
                length, addr, index = struct.unpack_from("<IQI", raw, 16 * k)
                if length:
                    wanted.setdefault(addr, {})[index] = max(length, wanted.get(addr, {}).get(index, 0))
        for addr, objects in wanted.items():
            fh.seek(addr)
            head = fh.read(16)
            if addr + 16 > size or head[:4] != b"GCOL":
                raise InputError(f"{name}: corrupt HDF5 file (a string heap at byte {addr} is missing)")
            total = struct.unpack_from("<Q", head, 8)[0]
            if total < 16 or addr + total > size:
                raise InputError(f"{name}: corrupt HDF5 file (the string heap at byte {addr} runs past the end)")
            body = head + fh.read(total - 16)
            seen: dict[int, int] = {}
            q = 16
            while q + 16 <= total:
                index, _, _, length = struct.unpack_from("<HHIQ", body, q)
                if index == 0:
                    break
                step = 16 + ((length + 7) // 8) * 8
                if length == 0 or q + step > total:
                    raise InputError(f"{name}: corrupt HDF5 file (string heap at byte {addr}, object {index})")
                seen[index] = length
                q += step
            for index, length in objects.items():
                if seen.get(index, -1) < length:
                    raise InputError(f"{name}: corrupt HDF5 file (a string is missing from the heap at byte {addr})")


def unwritten_frames(ds) -> list[int] | None:
    """Indices along axis 0 of a chunked dataset whose chunks were never written (a file still being
    written, or cut short), or None when every chunk is there (contiguous: None unless unallocated)."""
    h5py = _h5py()
    dcpl = ds.id.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        return list(range(ds.shape[0] if ds.ndim else 1)) if ds.id.get_offset() is None and ds.size else None
    if layout != h5py.h5d.CHUNKED or not ds.size:
        return None
    chunks = ds.chunks
    per_axis = [-(-int(n) // int(c)) for n, c in zip(ds.shape, chunks)]
    expected = int(np.prod(per_axis))
    have = ds.id.get_num_chunks()
    if have >= expected:
        return None
    if ds.ndim == 0:
        return [0]
    counts: dict[int, int] = {}
    for k in range(have):
        off = ds.id.get_chunk_info(k).chunk_offset
        counts[off[0] // chunks[0]] = counts.get(off[0] // chunks[0], 0) + 1
    full = expected // per_axis[0]
    missing = []
    for j in range(per_axis[0]):
        if counts.get(j, 0) < full:
            missing.extend(range(j * chunks[0], min(ds.shape[0], (j + 1) * chunks[0])))
    return missing or None


def check_dataset(ds, name: str, path: str, what: str = "data") -> None:
    """Before reading `ds` whole: refuse an empty dataset, one too large for the machine's memory, and
    one whose chunks were not all written (its missing part would read as zeros)."""
    if ds.size == 0:
        raise DataError(f"{name}: {path} is empty (shape {tuple(ds.shape)})")
    check_memory(float(ds.size) * max(4, ds.dtype.itemsize), f"{name}: reading {path} "
                 f"({'x'.join(str(int(n)) for n in ds.shape)} {ds.dtype})", "name a smaller dataset")
    missing = unwritten_frames(ds)
    if missing:
        k = len(missing)
        lead = ds.shape[0] if ds.ndim else 1
        raise InputError(f"{name}: {path} is incomplete: {k} of {lead} entries along its first axis were never "
                         f"written (first: {missing[0]}); is the file still being written?")


def nexus_default(f) -> str | None:
    """Follow NeXus `default` / `signal` attributes from the root to the dataset a viewer would show."""
    h5py = _h5py()
    group = f
    path = ""
    for _ in range(6):
        default = group.attrs.get("default")
        if default is None:
            break
        default = default.decode() if isinstance(default, bytes) else str(default)
        path = f"{path}/{default}"
        obj = f.get(path)
        if obj is None:
            return None
        if isinstance(obj, h5py.Dataset):
            return path
        group = obj
    signal = group.attrs.get("signal") if group is not f else None
    if signal is not None:
        signal = signal.decode() if isinstance(signal, bytes) else str(signal)
        if isinstance(group.get(signal), h5py.Dataset):
            return f"{path}/{signal}"
    return None


def _scalar(f, path: str) -> float | None:
    if path in f:
        try:
            v = np.asarray(f[path][()]).ravel()
            return float(v[0]) if v.size else None
        except (TypeError, ValueError):
            return None
    return None


def as_text(value: Any) -> str:
    """An HDF5 string (bytes, numpy scalar or 1-element array) as Python text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return as_text(value.ravel()[0]) if value.size else ""
    return str(value)


# --------------------------------------------------------------------------- geometry / provenance


def read_geometry(f, entry: str = "/entry_1") -> Geometry:
    """Geometry stored in a CXI entry (cxdi, PyNX or cxidb layout); missing values stay None."""
    det = f"{entry}/instrument_1/detector_1"
    src = f"{entry}/instrument_1/source_1"
    wl = _scalar(f, f"{src}/wavelength")
    energy = _scalar(f, f"{src}/energy")
    if wl is None and energy:
        wl = wavelength_from_kev(_energy_kev(energy))
    dist = _scalar(f, f"{det}/distance")
    px = _scalar(f, f"{det}/x_pixel_size")
    py = _scalar(f, f"{det}/y_pixel_size") or px
    centre = None
    if f"{det}/beam_center" in f:
        centre = tuple(float(v) for v in np.ravel(f[f"{det}/beam_center"][()]))
    qp = None
    if f"{entry}/data_1/q_pitch" in f:
        qp = tuple(float(v) for v in np.ravel(f[f"{entry}/data_1/q_pitch"][()]))
    return Geometry(wavelength=wl, distance=dist, pixel=(py, px) if px else None, centre=centre, q_pitch=qp)


def _energy_kev(value: float) -> float:
    """Energy in keV from a stored value in J (CXI), eV or keV, told apart by magnitude."""
    if value < 1e-10:
        return value / EV_J / 1e3
    return value / 1e3 if value > 200 else value


def read_provenance(f) -> list[dict[str, Any]]:
    """The provenance chain stored in `/entry_1/process_K/json` (oldest step first)."""
    steps = []
    entry = f.get("/entry_1")
    if entry is None:
        return steps
    keys = sorted((k for k in entry if re.fullmatch(r"process_\d+", k)), key=lambda k: int(k.split("_")[1]))
    for k in keys:
        g = entry[k]
        if "json" in g:
            try:
                steps.append(json.loads(as_text(g["json"][()])))
                continue
            except ValueError:
                pass
        steps.append({k2: as_text(g[k2][()]) for k2 in g if hasattr(g[k2], "shape")})
    return steps


def make_step(command: str, parameters: dict[str, Any] | None = None,
              inputs: Iterable[str] = ()) -> dict[str, Any]:
    """A provenance step for this program run."""
    return {
        "program": "cxdi",
        "version": __version__,
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "parameters": _jsonable(parameters or {}),
        "inputs": list(inputs),
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist() if obj.size <= 64 else f"<array {obj.shape} {obj.dtype}>"
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _write_provenance(f, chain: list[dict[str, Any]]) -> None:
    entry = f.require_group("/entry_1")
    for k, step in enumerate(chain, start=1):
        g = entry.create_group(f"process_{k}")
        g.attrs["NX_class"] = "NXprocess"
        for key in ("program", "version", "command", "date"):
            g.create_dataset(key, data=str(step.get(key, "")))
        g.create_dataset("json", data=json.dumps(_jsonable(step)))


def _root(f) -> None:
    f.create_dataset("cxi_version", data=160)
    f.attrs["default"] = "entry_1"
    f.attrs["creator"] = f"cxdi {__version__}"
    f.attrs["HDF5_Version"] = _h5py().version.hdf5_version


def _write_geometry(f, geometry: Geometry) -> None:
    det = f.require_group(DET)
    det.attrs["NX_class"] = "NXdetector"
    src = f.require_group(SRC)
    src.attrs["NX_class"] = "NXsource"
    if geometry.distance is not None:
        det.create_dataset("distance", data=float(geometry.distance)).attrs["units"] = "m"
    if geometry.pixel is not None:
        det.create_dataset("y_pixel_size", data=float(geometry.pixel[0])).attrs["units"] = "m"
        det.create_dataset("x_pixel_size", data=float(geometry.pixel[1])).attrs["units"] = "m"
    if geometry.centre is not None:
        det.create_dataset("beam_center", data=np.asarray(geometry.centre, float)).attrs["units"] = "pixel"
    if geometry.wavelength is not None:
        src.create_dataset("wavelength", data=float(geometry.wavelength)).attrs["units"] = "m"
        energy = kev_from_wavelength(geometry.wavelength) * 1e3 * EV_J
        src.create_dataset("energy", data=float(energy)).attrs["units"] = "J"


# --------------------------------------------------------------------------- arrays


@corrupt_file_errors
def read_array(spec: str, what: str = "image") -> np.ndarray:
    """Read one array from TIFF, npy, EDF/CBF or HDF5 (`file.h5` via NeXus default, or `file.h5::/path`)."""
    name, dset = split_url(spec)
    path = local_input(name)
    kind = sniff(path)
    if kind == "tiff":
        import tifffile  # noqa: PLC0415

        from cxdi_cli.io.imagefiles import tiff_check  # noqa: PLC0415

        try:
            tf = tifffile.TiffFile(path)
        except Exception as exc:  # tifffile raises many types for damaged files
            raise InputError(f"{name}: cannot read TIFF ({first_line(exc)})") from None
        with tf:
            tiff_check(tf, path, name)
            try:
                series = tf.series[0]
                check_memory(float(np.prod(series.shape, dtype=float)) * np.dtype(series.dtype).itemsize,
                             f"{name}: reading a TIFF of shape {tuple(series.shape)}")
                return np.asarray(series.asarray())
            except CxdiError:
                raise
            except Exception as exc:  # tifffile raises many types for damaged files
                raise InputError(f"{name}: cannot read TIFF ({first_line(exc)})") from None
    if kind == "npy":
        from cxdi_cli.io.imagefiles import npy_header  # noqa: PLC0415

        shape, dtype, _ = npy_header(path, name)
        check_memory(float(np.prod(shape, dtype=float)) * dtype.itemsize, f"{name}: reading an array of shape {shape}")
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"{name}: cannot read .npy ({first_line(exc)})") from None
    if kind == "edf":
        from cxdi_cli.io.imagefiles import edf_frames, read_edf_frames  # noqa: PLC0415

        frames = edf_frames(path, name)
        out = read_edf_frames(path, name, frames, 0, len(frames))
        return out[0] if len(frames) == 1 else out
    if kind == "cbf":
        from cxdi_cli.io.imagefiles import read_cbf  # noqa: PLC0415

        return read_cbf(path, name)
    if kind != "hdf5":
        raise InputError(f"{name}: unknown file format (expected HDF5, TIFF, npy, EDF or CBF)")
    with open_h5(name) as f:
        if dset is None:
            dset = nexus_default(f)
            if dset is None:
                cands = list_datasets(f, 2)
                if len(cands) != 1:
                    raise InputError(f"{name}: cannot tell which dataset holds the {what}; "
                                     f"name one as {name}::/path (candidates: {', '.join(cands[:12]) or 'none'})")
                dset = cands[0]
        ds = _get_dataset(f, dset, name)
        check_dataset(ds, name, dset, what)
        try:
            return np.asarray(ds[()])
        except OSError as exc:
            raise InputError(f"{name}: cannot read {dset} ({str(exc).splitlines()[0]}); truncated file?") from None


def write_tiff(dest: str, array: np.ndarray, pixel_size: float | Iterable[float] | None = None,
               axes: str | None = None) -> None:
    """Write a float32 ImageJ-readable TIFF (a 3D array becomes a stack), atomically.

    `axes` in ImageJ order (e.g. "CYX" for amplitude and phase channels); `pixel_size` in metres: one
    number, or one per spatial axis, (y, x) or (z, y, x) (ImageJ's x/y resolution and z spacing)."""
    import tifffile  # noqa: PLC0415

    arr = np.asarray(array)
    if np.iscomplexobj(arr):
        arr = np.abs(arr)
    arr = arr.astype(np.float32)
    axes = axes or ("ZYX" if arr.ndim == 3 else "YX")
    kw: dict[str, Any] = {"imagej": True, "metadata": {"axes": axes}}
    sizes = [float(p) * 1e6 for p in np.atleast_1d(pixel_size if pixel_size is not None else [])]
    if sizes and all(sizes):
        kw["resolution"] = (1.0 / sizes[-1], 1.0 / sizes[-2 if len(sizes) > 1 else -1])  # (x, y), px per µm
        kw["metadata"].update(unit="um", spacing=sizes[0] if len(sizes) == 3 else sizes[-1])
    with atomic_output(dest, ".tif") as tmp:
        tifffile.imwrite(tmp, arr, **kw)


def write_tiff_raw(dest: str, array: np.ndarray) -> None:
    """Write an array as a TIFF keeping its dtype (e.g. uint16 detector frames), atomically."""
    import tifffile  # noqa: PLC0415

    with atomic_output(dest, ".tif") as tmp:
        tifffile.imwrite(tmp, np.asarray(array))


# --------------------------------------------------------------------------- patterns


def _pattern_dataset(f, name: str, dset: str | None) -> str:
    if dset is not None:
        return dset
    for cand in (f"{DET}/data", "/entry_1/data_1/data"):
        if cand in f and isinstance(f[cand], _h5py().Dataset):
            return cand
    if "/entry_1/image_1/data" in f:
        raise DataError(f"{name}: holds a reconstruction (/entry_1/image_1), not diffraction data")
    default = nexus_default(f)
    if default:
        return default
    cands = list_datasets(f, 2)
    if len(cands) == 1:
        return cands[0]
    raise InputError(f"{name}: no diffraction data at {DET}/data; name the dataset as {name}::/path "
                     f"(candidates: {', '.join(cands[:12]) or 'none'})")


@corrupt_file_errors
def read_pattern(spec: str, h5file: Any = None) -> Pattern:
    """Read a centred diffraction pattern (2D) or volume (3D) with its mask and geometry.

    Accepts cxdi/PyNX/cxidb CXI files, any `file.h5::/path` dataset, TIFF and npy. Leading axes of
    length 1 are dropped (cxidb stores single frames as 1×ny×nx). NaN or negative data are refused.
    `h5file`: the HDF5 file of `spec` already open (a caller that looked inside reads without a second open).
    """
    name, dset = split_url(spec)
    path = local_input(name)
    kind = sniff(path)
    geometry = Geometry()
    provenance: list[dict[str, Any]] = []
    extra: dict[str, np.ndarray] = {}
    mask = None
    if kind == "hdf5":
        with open_h5(name) if h5file is None else contextlib.nullcontext(h5file) as f:
            dpath = _pattern_dataset(f, name, dset)
            ds = _get_dataset(f, dpath, name)
            if ds.dtype.kind == "c":
                raise DataError(f"{name}: {dpath} holds complex values (a reconstruction?), "
                                "not diffraction intensities")
            if dset is None and ds.ndim == 3 and not dpath.startswith("/entry_1/"):
                raise DataError(f"{name}: {dpath} is a stack of {ds.shape[0]} raw frames, not a pattern: "
                                "run cxdi preprocess (2D) or cxdi assemble3d (tilt series) first, or name "
                                f"the dataset as {name}::{dpath} if it really is a 3D volume")
            if dset is None and ds.ndim == 3 and as_text(ds.attrs.get("interpretation", "")) == "image":
                raise DataError(f"{name}: a time series of {ds.shape[0]} 2D frames: phase it with --series")
            check_dataset(ds, name, dpath)
            try:
                data = np.asarray(ds[()], dtype=np.float32)
            except OSError as exc:
                raise InputError(f"{name}: cannot read {dpath} ({str(exc).splitlines()[0]}); truncated file?") from None
            entry = "/" + dpath.strip("/").split("/")[0]
            geometry = read_geometry(f, entry if entry.startswith("/entry") else "/entry_1")
            for mpath in (f"{entry}/instrument_1/detector_1/mask", f"{entry}/instrument_1/detector_1/mask_shared",
                          f"{entry}/data_1/mask", f"{entry}/mask"):
                if mpath in f and isinstance(f[mpath], _h5py().Dataset) and mpath != dpath:
                    mask = np.asarray(f[mpath][()])
                    break
            if f"{entry}/data_1/weight" in f:
                extra["weight"] = np.asarray(f[f"{entry}/data_1/weight"][()], dtype=np.float32)
            provenance = read_provenance(f)
    else:
        data = read_array(spec, "diffraction pattern")
        if np.iscomplexobj(data):
            raise DataError(f"{name}: holds complex values (a reconstruction?), not diffraction intensities")
        data = data.astype(np.float32)
    while data.ndim > 2 and data.shape[0] == 1:
        data = data[0]
    if data.ndim not in (2, 3):
        raise DataError(f"{name}: diffraction data must be 2D or 3D, got shape {data.shape}")
    if mask is None:
        mask = np.zeros(data.shape, np.uint32)
    else:
        mask = np.asarray(mask)
        while mask.ndim > data.ndim and mask.shape[0] == 1:
            mask = mask[0]
        if mask.shape != data.shape:
            raise DataError(f"{name}: mask shape {mask.shape} does not match data shape {data.shape}")
        mask = mask.astype(np.uint32)
    if not np.all(np.isfinite(data[mask == 0])):
        raise DataError(f"{name}: data hold NaN or infinite values in unmasked pixels")
    if np.any(data[mask == 0] < 0):
        raise DataError(f"{name}: data hold negative values in unmasked pixels; subtract the dark "
                        "with preprocess or mask them")
    data = np.where(np.isfinite(data), data, 0).astype(np.float32)
    if not np.any(data[mask == 0] > 0):
        raise DataError(f"{name}: all unmasked pixels are zero")
    return Pattern(intensity=data, mask=mask, geometry=geometry, provenance=provenance, extra=extra,
                   source=spec)


def _pattern_entry(f: Any, geometry: Geometry | None) -> tuple[Any, Any]:
    """The root attributes, /entry_1 (its NXdata default) and the geometry of a new pattern file:
    (entry, detector group) for the data and mask to go into."""
    _root(f)
    entry = f.create_group("entry_1")
    entry.attrs["NX_class"] = "NXentry"
    entry.attrs["default"] = "data_1"
    _write_geometry(f, geometry)
    return entry, f[DET]


def write_pattern(dest: str, pattern: Pattern, step: dict[str, Any]) -> None:
    """Write a diffraction pattern as CXI (data, mask, geometry, NXdata link, provenance), atomically."""
    data = np.asarray(pattern.intensity, np.float32)
    mask = np.asarray(pattern.mask, np.uint32)
    if mask.shape != data.shape:
        raise DataError(f"{dest}: mask shape {mask.shape} does not match data shape {data.shape}")
    with atomic_output(dest, ".cxi") as tmp:
        with new_h5(tmp) as f:
            entry, det = _pattern_entry(f, pattern.geometry)
            d = det.create_dataset("data", data=data, chunks=True, compression="gzip", compression_opts=1)
            d.attrs["units"] = "photons"
            d.attrs["interpretation"] = "image" if data.ndim == 2 else "volume"
            det.create_dataset("mask", data=mask, chunks=True, compression="gzip", compression_opts=1)
            data_1 = entry.create_group("data_1")
            data_1.attrs["NX_class"] = "NXdata"
            data_1.attrs["signal"] = "data"
            data_1["data"] = d  # hard link: viewers and PyNX find it at either path
            if pattern.geometry.q_pitch is not None:
                data_1.create_dataset("q_pitch", data=np.asarray(pattern.geometry.q_pitch, float)).attrs["units"] = "1/m"
            for key, arr in pattern.extra.items():
                data_1.create_dataset(key, data=np.asarray(arr), chunks=True, compression="gzip", compression_opts=1)
            _write_provenance(f, list(pattern.provenance) + [step])


# --------------------------------------------------------------------------- reconstructions


def reconstruction_entries(f) -> list[str]:
    """The entries holding a reconstruction (`entry_N` with an `image_1`), in numerical order."""
    keys = [k for k in f if re.fullmatch(r"entry_\d+", k) and "image_1" in f[k]]
    return sorted(keys, key=lambda k: int(k.split("_")[1]))


def _read_group_dict(g) -> dict[str, Any]:
    h5py = _h5py()
    out: dict[str, Any] = {}
    for key in g:
        obj = g[key]
        if isinstance(obj, h5py.Dataset):
            v = obj[()]
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            elif isinstance(v, np.ndarray) and v.ndim == 0:
                v = v.item()
            elif isinstance(v, np.generic):
                v = v.item()
            out[key] = v
    return out


@corrupt_file_errors
def read_reconstruction(spec: str, h5file: Any = None) -> Reconstruction:
    """Read every run (`/entry_N/image_1`) of a cxdi or PyNX reconstruction file; TIFF/npy give one run.

    `h5file`: the HDF5 file of `spec` already open (a caller that looked inside reads without a second open)."""
    name, dset = split_url(spec)
    path = local_input(name)
    kind = sniff(path)
    if kind != "hdf5":
        obj = read_array(spec, "object").astype(np.complex64)
        return Reconstruction(runs=[Run(obj=obj, support=np.abs(obj) > 0)], source=spec)
    runs: list[Run] = []
    pixel = None
    with open_h5(name) if h5file is None else contextlib.nullcontext(h5file) as f:
        entries = reconstruction_entries(f) if dset is None else ["/" + dset.strip("/").split("/")[0]]
        if not entries:
            raise InputError(f"{name}: no reconstruction (/entry_N/image_1/data) in this file")
        for e in entries:
            img = f"/{e.strip('/')}/image_1"
            ds = _get_dataset(f, dset or f"{img}/data", name)
            check_dataset(ds, name, ds.name)
            try:
                obj = np.asarray(ds[()]).astype(np.complex64)
            except OSError:
                raise InputError(f"{name}: cannot read {ds.name}; truncated file?") from None
            while obj.ndim > 2 and obj.shape[0] == 1:
                obj = obj[0]
            support = np.asarray(f[f"{img}/mask"][()]).astype(bool) if f"{img}/mask" in f else np.abs(obj) > 0
            if support.shape != obj.shape:
                support = np.abs(obj) > 0
            metrics = _read_group_dict(f[f"{img}/process_1/results"]) if f"{img}/process_1/results" in f else {}
            params: dict[str, Any] = {}
            if f"{img}/process_1/parameters" in f:
                try:
                    params = json.loads(as_text(f[f"{img}/process_1/parameters"][()]))
                except ValueError:
                    params = {}
            history = {}
            if f"{img}/process_1/history" in f:
                history = {k: np.asarray(v) for k, v in _read_group_dict(f[f"{img}/process_1/history"]).items()}
            runs.append(Run(obj=obj, support=support, metrics=metrics, params=params, history=history))
            if pixel is None:
                sizes = [_scalar(f, f"{img}/{ax}_pixel_size") for ax in ("z", "y", "x")]
                sizes = [s for s in sizes if s is not None]
                if len(sizes) >= obj.ndim:
                    pixel = tuple(sizes[-obj.ndim:])
        geometry = read_geometry(f)
        provenance = read_provenance(f)
        extra = {}
        if "/entry_1/cxdi_extra" in f:
            try:
                extra = json.loads(as_text(f["/entry_1/cxdi_extra"][()]))
            except ValueError:
                extra = {}
        arrays = _entry_arrays(f)
    return Reconstruction(runs=runs, pixel_size=pixel, geometry=geometry, provenance=provenance,
                          extra=extra, source=spec, arrays=arrays)


def _entry_arrays(f) -> dict[str, np.ndarray]:
    """The numeric datasets directly under /entry_1 (what write_reconstruction(arrays=) wrote)."""
    h5py = _h5py()
    out: dict[str, np.ndarray] = {}
    if "/entry_1" not in f:
        return out
    for key in f["/entry_1"]:
        ds = f["/entry_1"].get(key)
        if isinstance(ds, h5py.Dataset) and ds.ndim >= 1 and ds.dtype.kind in "biufc":
            out[key] = np.asarray(ds[()])
    return out


def write_reconstruction(dest: str, rec: Reconstruction, step: dict[str, Any],
                         arrays: dict[str, np.ndarray] | None = None) -> None:
    """Write runs as `/entry_N/image_1` (complex64 object, support mask, metrics, parameters, pixel size).

    `arrays` are extra datasets written under `/entry_1/` (e.g. mode images); `rec.extra` is stored as
    JSON in `/entry_1/cxdi_extra` (e.g. the alignment table of `average`).
    """
    if not rec.runs:
        raise DataError(f"{dest}: nothing to write (no runs)")
    with atomic_output(dest, ".cxi") as tmp:
        with new_h5(tmp) as f:
            _root(f)
            for n, run in enumerate(rec.runs, start=1):
                entry = f.create_group(f"entry_{n}")
                entry.attrs["NX_class"] = "NXentry"
                entry.attrs["default"] = "image_1"
                img = entry.create_group("image_1")
                img.attrs["NX_class"] = "NXdata"
                img.attrs["signal"] = "data"
                obj = np.asarray(run.obj, np.complex64)
                img.create_dataset("data", data=obj, chunks=True, compression="gzip", compression_opts=1)
                img.create_dataset("mask", data=np.asarray(run.support, np.uint8), chunks=True,
                                   compression="gzip", compression_opts=1)
                img.create_dataset("is_fft_shifted", data=0)
                if rec.pixel_size is not None:
                    for ax, size in zip(("z", "y", "x")[-obj.ndim:], rec.pixel_size):
                        img.create_dataset(f"{ax}_pixel_size", data=float(size)).attrs["units"] = "m"
                proc = img.create_group("process_1")
                proc.attrs["NX_class"] = "NXprocess"
                res = proc.create_group("results")
                for key, val in run.metrics.items():
                    val = _jsonable(val)
                    if val is None:
                        continue
                    res.create_dataset(key, data=val if not isinstance(val, (dict, list)) else json.dumps(val))
                proc.create_dataset("parameters", data=json.dumps(_jsonable(run.params)))
                if run.history:
                    hist = proc.create_group("history")
                    for key, arr in run.history.items():
                        hist.create_dataset(key, data=np.asarray(arr))
            _write_geometry_into(f, rec.geometry)
            if rec.extra:
                f["/entry_1"].create_dataset("cxdi_extra", data=json.dumps(_jsonable(rec.extra)))
            for key, arr in (arrays or {}).items():
                f["/entry_1"].create_dataset(key, data=np.asarray(arr), chunks=True, compression="gzip",
                                             compression_opts=1)
            _write_provenance(f, list(rec.provenance) + [step])


def _write_geometry_into(f, geometry: Geometry) -> None:
    if geometry.wavelength is not None or geometry.distance is not None:
        _write_geometry(f, geometry)


# --------------------------------------------------------------------------- generic result files


def write_results(dest: str, datasets: dict[str, np.ndarray], step: dict[str, Any],
                  attrs: dict[str, dict[str, Any]] | None = None, signal: str | None = None,
                  provenance: list[dict[str, Any]] | None = None) -> None:
    """Write named arrays under `/entry_1/` (e.g. `prtf/q_nm`), with NXdata pointing at `signal`."""
    with atomic_output(dest, ".h5") as tmp:
        with new_h5(tmp) as f:
            _root(f)
            entry = f.create_group("entry_1")
            entry.attrs["NX_class"] = "NXentry"
            for key, arr in datasets.items():
                d = entry.create_dataset(key, data=np.asarray(arr))
                for k, v in (attrs or {}).get(key, {}).items():
                    d.attrs[k] = v
            if signal:
                group, _, sig = signal.rpartition("/")
                g = entry[group] if group else entry
                g.attrs["NX_class"] = "NXdata"
                g.attrs["signal"] = sig
                entry.attrs["default"] = group or "."
            _write_provenance(f, list(provenance or []) + [step])


def write_lima(dest: str, frames: np.ndarray, detector: str = "maxipix",
               extra: dict[str, np.ndarray] | None = None, compression: str | None = "gzip") -> None:
    """Write a frame stack the way a LIMA detector server does (`/entry_0000/measurement/data`,
    hard-linked as `/entry_0000/instrument/<detector>/data`); `extra` adds datasets by path."""
    frames = np.asarray(frames)
    with atomic_output(dest, ".h5") as tmp:
        with new_h5(tmp) as f:
            f.attrs["default"] = "entry_0000"
            e = f.create_group("entry_0000")
            e.attrs["NX_class"] = "NXentry"
            e.create_dataset("program_name", data="LIMA-cxdi-simulate")
            inst = e.create_group(f"instrument/{detector}")
            inst.attrs["NX_class"] = "NXdetector"
            chunks = (1,) + frames.shape[1:] if frames.ndim == 3 else True
            d = inst.create_dataset("data", data=frames, chunks=chunks, compression=compression)
            d.attrs["interpretation"] = "image"
            meas = e.create_group("measurement")
            meas.attrs["NX_class"] = "NXcollection"
            meas["data"] = d
            info = inst.create_group("detector_information")
            info.create_dataset("model", data=detector)
            for path, arr in (extra or {}).items():
                f.create_dataset(path, data=np.asarray(arr))
