"""Raw detector frames the way beamlines write them, read a block of frames at a time.

Sources: LIMA HDF5 stacks (`/entry_0000/measurement/data`, `/entry_0000/instrument/*/data`),
Eiger / NeXus master files (`/entry/data/data_000001`, ... external links, hdf5plugin filters),
any `file.h5::/path` dataset, multi-page TIFF, lists / globs / folders of TIFF files, EDF and CBF
(our own bounded parser, `io.imagefiles`). Several sources are concatenated into one stack of frames of equal shape.

Memory is bounded by the block being read: nothing here loads a whole stack.

    with open_frames(["raw.h5"]) as stack:
        for start, block in stack.blocks(frames=slice(0, 100)):
            ...                                  # block: (k, ny, nx) in the file's dtype
"""
from __future__ import annotations

import glob
import os
import re
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from cxdi_cli.io.paths import corrupt_file_errors, first_line, local_input, sniff, split_url
from cxdi_cli.model import CxdiError, DataError, InputError, UsageError

#: Bytes of raw frames read per block (a few frames of a large detector; at least one frame).
BLOCK_BYTES = 32 << 20

#: Dataset names, under a detector group, that hold the detector's saturation level (counts).
SATURATION_NAMES = ("saturation_value", "countrate_correction_count_cutoff", "saturation_level",
                    "saturation", "saturation_adu")

_GLOB_CHARS = re.compile(r"[*?\[]")


class _Part:
    """One contiguous run of frames in one file: `n` frames of `shape`, read by `read(i0, i1)`."""

    def __init__(self, name: str, n: int, shape: tuple[int, int], dtype: np.dtype,
                 read: Callable[[int, int], np.ndarray], close: Callable[[], None] | None = None) -> None:
        self.name, self.n, self.shape, self.dtype = name, n, shape, np.dtype(dtype)
        self._read, self._close = read, close

    def read(self, i0: int, i1: int) -> np.ndarray:
        try:
            out = np.asarray(self._read(i0, i1))
        except CxdiError:
            raise
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - decoders (tifffile, zlib, h5py filters) raise many types
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{self.name}: cannot read frames {i0}..{i1 - 1} ({msg}); truncated or "
                             "corrupt file?") from None
        return out.reshape((i1 - i0,) + self.shape)

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None


class FrameStack:
    """Frames of equal shape from one or more files, indexed as one stack. Use as a context manager."""

    def __init__(self, parts: list[_Part], name: str, saturation: float | None = None) -> None:
        if not parts:
            raise InputError(f"{name}: no frames found")
        shapes = {p.shape for p in parts}
        if len(shapes) > 1:
            a = parts[0]
            b = next(p for p in parts if p.shape != a.shape)
            raise DataError(f"{name}: frames of different shapes: {a.name} has {a.shape[0]}x{a.shape[1]}, "
                            f"{b.name} has {b.shape[0]}x{b.shape[1]}")
        self.parts = parts
        self.name = name
        self.shape: tuple[int, int] = parts[0].shape
        self.n_frames = sum(p.n for p in parts)
        if self.n_frames == 0:
            raise InputError(f"{name}: holds no frames")
        self.dtype = np.result_type(*[p.dtype for p in parts])
        self.saturation = saturation
        self._offsets = np.cumsum([0] + [p.n for p in parts])

    # context manager -------------------------------------------------------------------------
    def __enter__(self) -> "FrameStack":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for p in self.parts:
            p.close()

    def __len__(self) -> int:
        return self.n_frames

    @property
    def frame_bytes(self) -> int:
        return int(self.shape[0] * self.shape[1] * self.dtype.itemsize)

    # reading ------------------------------------------------------------------------------
    def read(self, i0: int, i1: int) -> np.ndarray:
        """Frames i0..i1-1 of the whole stack as one (i1-i0, ny, nx) array (may span files)."""
        chunks = []
        for k, p in enumerate(self.parts):
            lo, hi = int(self._offsets[k]), int(self._offsets[k + 1])
            a, b = max(i0, lo), min(i1, hi)
            if a < b:
                chunks.append(p.read(a - lo, b - lo))
        if not chunks:
            return np.zeros((0,) + self.shape, self.dtype)
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def blocks(self, frames: slice | None = None, block: int | None = None
               ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index of the first frame, block of frames) over the selected frames, in order.

        `block` frames per read (default: as many as fit in BLOCK_BYTES, at least 1); blocks never
        straddle a file boundary, so one read touches one file.
        """
        idx = range(self.n_frames)[frames] if frames is not None else range(self.n_frames)
        if len(idx) == 0:
            raise DataError(f"{self.name}: the frame selection is empty (the stack has {self.n_frames} frames)")
        if block is None:
            block = max(1, BLOCK_BYTES // max(1, self.frame_bytes))
        if idx.step == 1:
            i = idx.start
            while i < idx.stop:
                k = int(np.searchsorted(self._offsets, i, side="right")) - 1
                j = min(idx.stop, i + block, int(self._offsets[k + 1]))
                yield i, self.read(i, j)
                i = j
        else:
            for i in idx:
                yield i, self.read(i, i + 1)


# --------------------------------------------------------------------------- frame selection


def parse_frames(spec: str | None) -> slice | None:
    """`A:B` (or `A:B:S`, `A:`, `:B`, a single index `K`) as a slice over frame indices."""
    if spec is None or spec.strip() in ("", ":"):
        return None
    s = spec.strip()
    try:
        if ":" not in s:
            k = int(s)
            return slice(k, k + 1 if k != -1 else None)
        items = [int(x) if x.strip() else None for x in s.split(":")]
    except ValueError:
        raise UsageError(f"--frames {spec!r}: expected A:B (frame indices, B excluded)") from None
    if len(items) > 3:
        raise UsageError(f"--frames {spec!r}: expected A:B or A:B:S")
    if len(items) == 3 and items[2] is not None and items[2] <= 0:
        raise UsageError(f"--frames {spec!r}: the step must be positive")
    return slice(*items)


# --------------------------------------------------------------------------- HDF5


def _h5():
    from cxdi_cli.io.cxi import _h5py  # noqa: PLC0415

    return _h5py()


def _stack_shape(ds, name: str, path: str) -> tuple[int, tuple[int, int]]:
    if ds.ndim == 2:
        return 1, (int(ds.shape[0]), int(ds.shape[1]))
    if ds.ndim >= 3:
        return int(np.prod(ds.shape[:-2])), (int(ds.shape[-2]), int(ds.shape[-1]))
    raise DataError(f"{name}: {path} has shape {tuple(ds.shape)}; frames must be 2D (or a stack of 2D frames)")


def frame_candidates(f) -> list[str]:
    """Datasets of an open HDF5 file that could hold frames (numeric, 2D or more, not tiny)."""
    from cxdi_cli.io.cxi import list_datasets  # noqa: PLC0415

    out = []
    for p in list_datasets(f, 2):
        try:
            shape = f[p].shape
        except (KeyError, OSError):
            continue
        if shape[-1] >= 8 and shape[-2] >= 8:
            out.append(p)
    return out


def find_frame_datasets(f, name: str) -> list[str]:
    """Where the frames are in an open HDF5 file, by beamline conventions; one path, or several
    (Eiger master files split a stack into data_000001, data_000002, ...).

    Order: LIMA `/entry_0000/measurement/data`, then `/entry_*/instrument/*/data`; NeXus / Eiger
    `/entry/data/data_NNNNNN`; the NeXus `default` chain; CXI detector data; else the only
    candidate. Raises InputError listing the candidates when it cannot choose.
    """
    h5py = _h5()
    from cxdi_cli.io.cxi import nexus_default  # noqa: PLC0415

    def is_ds(p: str) -> bool:
        try:
            return isinstance(f.get(p), h5py.Dataset) and f[p].ndim >= 2
        except (KeyError, OSError):
            return False

    entries = sorted(k for k in f if isinstance(f.get(k), h5py.Group))
    for e in entries:
        if is_ds(f"/{e}/measurement/data"):
            return [f"/{e}/measurement/data"]
    for e in entries:
        inst = f.get(f"/{e}/instrument")
        if isinstance(inst, h5py.Group):
            found = [f"/{e}/instrument/{k}/data" for k in sorted(inst) if is_ds(f"/{e}/instrument/{k}/data")]
            if len(found) == 1:
                return found
    # Eiger / NeXus master: /entry/data/data_000001 ... (external links; dangling ones are an error)
    for e in entries:
        g = f.get(f"/{e}/data")
        if isinstance(g, h5py.Group):
            keys = sorted(k for k in g if re.fullmatch(r"data_\d+", k))
            if keys:
                missing = []
                for k in keys:
                    try:
                        g[k]
                    except (KeyError, OSError):
                        link = g.get(k, getlink=True)
                        missing.append(getattr(link, "filename", k))
                if missing:
                    raise InputError(f"{name}: master file links to missing data file(s): "
                                     f"{', '.join(str(m) for m in missing[:5])}")
                return [f"/{e}/data/{k}" for k in keys if is_ds(f"/{e}/data/{k}")]
            if is_ds(f"/{e}/data/data"):
                return [f"/{e}/data/data"]
    default = nexus_default(f)
    if default and is_ds(default):
        return [default]
    for p in ("/entry_1/instrument_1/detector_1/data", "/entry_1/data_1/data"):
        if is_ds(p):
            return [p]
    cands = frame_candidates(f)
    if len(cands) == 1:
        return cands
    raise InputError(f"{name}: cannot tell which dataset holds the frames; name it as {name}::/path "
                     f"(candidates: {', '.join(cands[:12]) or 'no 2D or 3D datasets'})")


def _saturation_in(f, path: str) -> float | None:
    """A saturation level stored near the frames (detector group, detectorSpecific), or None."""
    h5py = _h5()
    parts = path.strip("/").split("/")
    groups = []
    for k in range(len(parts) - 1, 0, -1):
        groups.append("/" + "/".join(parts[:k]))
    e = "/" + parts[0]
    inst = f.get(f"{e}/instrument")
    if isinstance(inst, h5py.Group):
        for k in inst:
            groups.append(f"{e}/instrument/{k}")
            groups.append(f"{e}/instrument/{k}/detectorSpecific")
            groups.append(f"{e}/instrument/{k}/detector_information")
    for g in groups:
        for n in SATURATION_NAMES:
            p = f"{g}/{n}"
            try:
                obj = f.get(p)
                if isinstance(obj, h5py.Dataset) and obj.size == 1 and obj.dtype.kind in "iuf":
                    v = float(np.asarray(obj[()]).ravel()[0])
                    if v > 0:
                        return v
            except (OSError, TypeError, ValueError):
                continue
    return None


def _hdf5_parts(spec: str) -> tuple[list[_Part], float | None]:
    from cxdi_cli.io.cxi import _get_dataset, open_h5, unwritten_frames  # noqa: PLC0415
    from cxdi_cli.io.imagefiles import check_frame_shape  # noqa: PLC0415

    name, dset = split_url(spec)
    f = open_h5(name)
    try:
        h5py = _h5()
        if dset is not None:
            obj = f.get(dset)
            if isinstance(obj, h5py.Group):
                base = dset.rstrip("/")
                cands = [p for p in frame_candidates(f) if p.startswith(base + "/")]
                if len(cands) != 1:
                    raise InputError(f"{name}: {dset} is a group; name the frames as {name}::/path "
                                     f"(datasets under it: {', '.join(cands[:12]) or 'no 2D or 3D datasets'})")
                paths = cands
            else:
                _get_dataset(f, dset, name)  # one-line error listing what the file holds
                paths = [dset]
        else:
            paths = find_frame_datasets(f, name)
        saturation = _saturation_in(f, paths[0])
        parts: list[_Part] = []
        for k, p in enumerate(paths):
            ds = f[p]
            if ds.dtype.kind not in "biuf":
                raise DataError(f"{name}: {p} holds {ds.dtype} values, not detector counts")
            n, shape = _stack_shape(ds, name, p)
            check_frame_shape(shape, f"{name}::{p}")
            if n == 0:
                raise InputError(f"{name}: {p} holds no frames (shape {tuple(ds.shape)})")
            missing = unwritten_frames(ds)
            if missing:
                raise InputError(f"{name}: {p} promises {n} frames but {len(missing)} were never written "
                                 f"(first missing: frame {missing[0]}); is the file still being written?")
            ds2d = ds.ndim == 2
            flat = ds.ndim > 3

            def read(i0: int, i1: int, ds=ds, ds2d=ds2d, flat=flat) -> np.ndarray:
                if ds2d:
                    return ds[()][None]
                if flat:
                    return ds[()].reshape((-1,) + ds.shape[-2:])[i0:i1]
                return ds[i0:i1]

            close = f.close if k == len(paths) - 1 else None
            parts.append(_Part(f"{name}::{p}", n, shape, ds.dtype, read, close))
        return parts, saturation
    except BaseException:
        f.close()
        raise


# --------------------------------------------------------------------------- TIFF, EDF, CBF


def _tiff_part(path: str, name: str) -> _Part:
    import tifffile  # noqa: PLC0415

    from cxdi_cli.io.imagefiles import check_frame_shape, tiff_check  # noqa: PLC0415

    try:
        tf = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises many types for damaged files
        raise InputError(f"{name}: cannot read TIFF ({first_line(exc)})") from None
    try:
        tiff_check(tf, path, name)
        series = tf.series[0]
        shape = tuple(int(s) for s in series.shape)
        dtype = np.dtype(series.dtype)
        offset = series.dataoffset
        npages = len(tf.pages)
    except InputError:
        tf.close()
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        tf.close()
        raise InputError(f"{name}: cannot read TIFF ({first_line(exc)})") from None
    if len(shape) < 2:
        tf.close()
        raise DataError(f"{name}: TIFF holds shape {shape}; frames must be 2D")
    n = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fshape = (shape[-2], shape[-1])
    try:
        check_frame_shape(fshape, name)
    except DataError:
        tf.close()
        raise
    need = n * fshape[0] * fshape[1] * dtype.itemsize
    if offset is not None and os.path.getsize(path) < offset + need:
        tf.close()
        raise InputError(f"{name}: truncated TIFF: {n} frames need {need} bytes from offset {offset}, the file "
                         f"has {os.path.getsize(path)} bytes")

    def read(i0: int, i1: int) -> np.ndarray:
        if offset is not None:  # contiguous, uncompressed: map only the frames asked for
            mm = np.memmap(path, dtype=series.dtype.newbyteorder(tf.byteorder) if dtype.itemsize > 1 else dtype,
                           mode="r", offset=offset, shape=(n,) + fshape)
            return np.array(mm[i0:i1], dtype=dtype)
        if npages == n:
            return np.stack([tf.pages[i].asarray() for i in range(i0, i1)])
        return series.asarray().reshape((n,) + fshape)[i0:i1]  # unusual layout: whole series

    return _Part(name, n, fshape, dtype, read, tf.close)


def _edf_part(path: str, name: str) -> _Part:
    """An EDF file (one or many frames): every frame's header parsed and its data checked to lie in the
    file at open, so a truncated file is an error, never fewer or zero-padded frames."""
    from cxdi_cli.io.imagefiles import edf_frames, read_edf_frames  # noqa: PLC0415

    frames = edf_frames(path, name)
    return _Part(name, len(frames), frames[0].shape, frames[0].dtype.newbyteorder("="),
                 lambda i0, i1: read_edf_frames(path, name, frames, i0, i1))


def _cbf_part(path: str, name: str) -> _Part:
    """A CBF file (one frame): header parsed and checked against the file size at open, decoded in read."""
    from cxdi_cli.io.imagefiles import cbf_info, read_cbf  # noqa: PLC0415

    info = cbf_info(path, name)
    return _Part(name, 1, info.shape, info.dtype.newbyteorder("="), lambda i0, i1: read_cbf(path, name, info)[None])


def _npy_part(path: str, name: str) -> _Part:
    from cxdi_cli.io.imagefiles import check_frame_shape, npy_header  # noqa: PLC0415

    shape, _, _ = npy_header(path, name)
    if len(shape) < 2:
        raise DataError(f"{name}: array of shape {shape}; frames must be 2D")
    check_frame_shape(shape[-2:], name)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{name}: cannot read .npy ({first_line(exc)})") from None
    arr3 = arr.reshape((-1,) + arr.shape[-2:])
    return _Part(name, arr3.shape[0], (arr.shape[-2], arr.shape[-1]), arr.dtype,
                 lambda i0, i1: np.array(arr3[i0:i1]))


# --------------------------------------------------------------------------- entry points


def expand_specs(specs: str | Sequence[str]) -> list[str]:
    """Expand globs and folders (their TIFF/EDF/CBF/HDF5 files, sorted) into a list of file specs."""
    if isinstance(specs, (str, os.PathLike)):
        specs = [str(specs)]
    out: list[str] = []
    for spec in specs:
        spec = str(spec)
        name, dset = split_url(spec)
        if name != "-" and os.path.isdir(name):
            files = sorted(os.path.join(name, x) for x in os.listdir(name)
                           if x.lower().endswith((".tif", ".tiff", ".edf", ".cbf", ".h5", ".hdf5", ".nxs", ".npy")))
            if not files:
                raise InputError(f"{name}: folder holds no TIFF, EDF, CBF or HDF5 files")
            out.extend(files)
        elif name != "-" and _GLOB_CHARS.search(name) and not os.path.exists(name):
            files = sorted(glob.glob(name))
            if not files:
                raise InputError(f"{name}: no file matches this pattern")
            out.extend(f + (f"::{dset}" if dset else "") for f in files)
        else:
            out.append(spec)
    return out


@corrupt_file_errors
def open_frames(specs: str | Sequence[str], saturation: float | None = None) -> FrameStack:
    """Open raw frames from one or more specs (files, `file.h5::/path`, globs, folders) as one stack.

    `saturation` overrides the level found in the files; otherwise the stack's `saturation` is the
    level stored in an HDF5 file (Eiger `countrate_correction_count_cutoff` and the like) or None.
    """
    files = expand_specs(specs)
    parts: list[_Part] = []
    found: float | None = None
    try:
        for spec in files:
            name, dset = split_url(spec)
            path = local_input(name)
            kind = sniff(path)
            if kind == "hdf5":
                ps, sat = _hdf5_parts(spec)
                parts.extend(ps)
                found = found if found is not None else sat
            elif dset is not None:
                raise InputError(f"{name}: '::{dset}' addresses a dataset, but this is not an HDF5 file")
            elif kind == "tiff":
                parts.append(_tiff_part(path, name))
            elif kind == "edf":
                parts.append(_edf_part(path, name))
            elif kind == "cbf":
                parts.append(_cbf_part(path, name))
            elif kind == "npy":
                parts.append(_npy_part(path, name))
            else:
                raise InputError(f"{name}: unknown file format (expected HDF5, TIFF, EDF, CBF or npy frames)")
        label = files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more)"
        return FrameStack(parts, label, saturation if saturation is not None else found)
    except BaseException:
        for p in parts:
            p.close()
        raise


def iter_frames(specs: str | Sequence[str], frames: slice | None = None, block: int | None = None
                ) -> Iterator[np.ndarray]:
    """Blocks (k, ny, nx) of raw frames, in order; memory bounded by one block (see FrameStack.blocks)."""
    with open_frames(specs) as stack:
        for _, b in stack.blocks(frames, block):
            yield b


# --------------------------------------------------------------------------- geometry in the file

_LENGTH_UNITS = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "micron": 1e-6, "nm": 1e-9, "cm": 1e-2,
                 "a": 1e-10, "angstrom": 1e-10, "å": 1e-10}


def _value(ds, default_unit: str) -> float | None:
    try:
        v = float(np.asarray(ds[()]).ravel()[0])
    except (TypeError, ValueError, IndexError, OSError):
        return None
    unit = ds.attrs.get("units", default_unit)
    unit = (unit.decode() if isinstance(unit, bytes) else str(unit)).strip().lower()
    if unit in ("kev",):
        return v
    if unit in ("ev",):
        return v / 1e3
    if unit in ("j",):
        from cxdi_cli.model import EV_J  # noqa: PLC0415

        return v / EV_J / 1e3
    return v * _LENGTH_UNITS.get(unit, 1.0) if v > 0 else None


def logbook(spec: str) -> dict[str, float]:
    """Geometry stored in a raw HDF5 file (NeXus / Eiger master, CXI): any of energy_kev, distance_m,
    pixel_m. Empty for other formats or when nothing is there; never raises for a readable file."""
    from cxdi_cli.model import kev_from_wavelength  # noqa: PLC0415

    name, _ = split_url(spec)
    if name == "-" or _GLOB_CHARS.search(name) or not os.path.isfile(name) or sniff(name) != "hdf5":
        return {}
    from cxdi_cli.io.cxi import open_h5  # noqa: PLC0415
    from cxdi_cli.model import CxdiError  # noqa: PLC0415

    h5py = _h5()
    out: dict[str, float] = {}
    try:
        with open_h5(name) as f:
            entries = [k for k in f if isinstance(f.get(k), h5py.Group)]
            for e in entries:
                cands = {
                    "pixel_m": [f"/{e}/instrument/detector/x_pixel_size", f"/{e}/instrument_1/detector_1/x_pixel_size"],
                    "distance_m": [f"/{e}/instrument/detector/detector_distance", f"/{e}/instrument/detector/distance",
                                   f"/{e}/instrument_1/detector_1/distance"],
                    "energy_kev": [f"/{e}/instrument/beam/incident_energy", f"/{e}/instrument/monochromator/energy",
                                   f"/{e}/instrument_1/source_1/energy"],
                    "wavelength_m": [f"/{e}/instrument/beam/incident_wavelength",
                                     f"/{e}/instrument/monochromator/wavelength",
                                     f"/{e}/instrument_1/source_1/wavelength"],
                }
                units = {"pixel_m": "m", "distance_m": "m", "energy_kev": "ev", "wavelength_m": "angstrom"}
                for key, paths in cands.items():
                    for p in paths:
                        ds = f.get(p)
                        if key not in out and isinstance(ds, h5py.Dataset):
                            unit = "j" if p.endswith("source_1/energy") else units[key]
                            if p.endswith("source_1/wavelength"):
                                unit = "m"
                            v = _value(ds, unit)
                            if v:
                                out[key] = v
    except (OSError, KeyError, CxdiError):
        return {}
    if "energy_kev" not in out and "wavelength_m" in out:
        out["energy_kev"] = kev_from_wavelength(out["wavelength_m"])
    out.pop("wavelength_m", None)
    return out
