"""Image files checked against what their headers promise: EDF and CBF read by a bounded parser of our
own (every size the header claims is checked against the file before anything is allocated, and every
loop advances through the file), TIFF page chains and npy headers checked before tifffile / numpy read.

Why not fabio: fabio 2026.6 hangs on a CBF truncated inside its header, raises AssertionError on one
truncated inside its data, and silently pads the last frame of a truncated multi-frame EDF. Here a short
file is an InputError naming the file, what the header promised and what was found.

    info = edf_frames(path, name)          # list of _Frame (offset, size, shape, dtype, compression)
    img = read_cbf(path, name)             # 2D array, checked against the header and its MD5
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import re
import zlib

import numpy as np

from cxdi_cli.io.paths import first_line
from cxdi_cli.model import DataError, InputError

#: Largest header block accepted (EDF headers are a few KiB; Pilatus CBF headers under 10 KiB).
MAX_HEADER = 1 << 20
#: Largest frame accepted, in pixels (the largest detectors have ~2e7; 2**28 is 16384 x 16384).
MAX_FRAME_PIXELS = 1 << 28

_EDF_TYPES = {
    "unsignedbyte": "u1", "unsignedchar": "u1", "signedbyte": "i1", "signedchar": "i1",
    "unsignedshort": "u2", "unsignedshortinteger": "u2", "signedshort": "i2", "signedshortinteger": "i2",
    "unsignedinteger": "u4", "unsignedlong": "u4", "unsignedlonginteger": "u4",
    "signedinteger": "i4", "signedlong": "i4", "signedlonginteger": "i4",
    "unsigned64": "u8", "signed64": "i8", "floatvalue": "f4", "float": "f4", "real": "f4",
    "doublevalue": "f8", "double": "f8",
}
_CBF_TYPES = {
    "signed 8-bit integer": "i1", "unsigned 8-bit integer": "u1", "signed 16-bit integer": "i2",
    "unsigned 16-bit integer": "u2", "signed 32-bit integer": "i4", "unsigned 32-bit integer": "u4",
    "signed 64-bit integer": "i8", "unsigned 64-bit integer": "u8",
    "signed 32-bit real ieee": "f4", "signed 64-bit real ieee": "f8",
}
_CBF_MARK = b"\x0c\x1a\x04\xd5"


@dataclasses.dataclass(frozen=True)
class _Frame:
    """Where one EDF frame's data lie and what they are."""

    offset: int
    size: int
    shape: tuple[int, int]
    dtype: np.dtype
    compression: str


def check_frame_shape(shape: tuple[int, ...], name: str, what: str = "frame") -> None:
    """Refuse a header claiming an empty or absurdly large frame, before anything is allocated."""
    if any(int(s) <= 0 for s in shape):
        raise DataError(f"{name}: the header claims an empty {what} of shape {tuple(int(s) for s in shape)}")
    if int(np.prod([int(s) for s in shape], dtype=object)) > MAX_FRAME_PIXELS:
        raise DataError(f"{name}: the header claims a {what} of {'x'.join(str(int(s)) for s in shape)} pixels, "
                        f"more than any detector ({MAX_FRAME_PIXELS} pixels); corrupt header?")


def _int(value: str | None, key: str, name: str) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        raise InputError(f"{name}: header value {key} = {value!r} is not an integer") from None


# --------------------------------------------------------------------------- EDF


def _edf_header(fh, start: int, size: int, name: str, k: int) -> tuple[dict[str, str], int]:
    """Parse the EDF header block at `start`; return its keys and the offset where its data begin."""
    fh.seek(start)
    buf = b""
    end = -1
    while end < 0:
        chunk = fh.read(4096)
        if not chunk:
            raise InputError(f"{name}: truncated inside the header of frame {k} (file ends at byte {size})")
        buf += chunk
        end = buf.find(b"}")
        if end < 0 and len(buf) > MAX_HEADER:
            raise InputError(f"{name}: header of frame {k} has no end within {MAX_HEADER} bytes; not an EDF file?")
    data_start = start + end + 1
    rest = buf[end + 1:end + 3]
    if rest.startswith(b"\r\n"):
        data_start += 2
    elif rest.startswith(b"\n"):
        data_start += 1
    keys: dict[str, str] = {}
    for item in buf[1:end].decode("latin-1").split(";"):
        key, eq, value = item.partition("=")
        if eq:
            keys[key.strip().lower()] = value.strip()
    return keys, data_start


def edf_frames(path: str, name: str) -> list[_Frame]:
    """Every frame of an EDF file, with its data checked to lie inside the file (bounded, never hangs)."""
    try:
        size = os.path.getsize(path)
        fh = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or exc})") from None
    frames: list[_Frame] = []
    with fh:
        pos = 0
        while True:
            fh.seek(pos)
            lead = fh.read(4096)
            skip = len(lead) - len(lead.lstrip(b" \t\r\n\x00"))
            if skip == len(lead):
                if pos + skip >= size:
                    break
                pos += skip
                continue
            if lead[skip:skip + 1] != b"{":
                if not frames:
                    raise InputError(f"{name}: not an EDF file (no '{{' header at the start)")
                raise InputError(f"{name}: {size - pos} unexpected bytes after frame {len(frames) - 1} "
                                 f"(offset {pos}); corrupt file?")
            k = len(frames)
            keys, start = _edf_header(fh, pos + skip, size, name, k)
            if "dim_1" not in keys or "dim_2" not in keys:
                if "dim_1" in keys and int(keys.get("dim_1", "0") or 0) > 0:
                    keys["dim_2"] = "1"
                else:
                    raise InputError(f"{name}: header of frame {k} gives no Dim_1/Dim_2 (image size)")
            if keys.get("dim_3") not in (None, "1"):
                raise DataError(f"{name}: frame {k} is a {keys['dim_3']}-deep volume; frames must be 2D")
            shape = (_int(keys["dim_2"], "Dim_2", name), _int(keys["dim_1"], "Dim_1", name))
            check_frame_shape(shape, f"{name} (frame {k})")
            tname = re.sub(r"[^a-z0-9]", "", keys.get("datatype", "").lower())
            if tname not in _EDF_TYPES:
                raise InputError(f"{name}: frame {k} has unknown DataType {keys.get('datatype')!r}")
            order = "<" if "low" in keys.get("byteorder", "LowByteFirst").lower() else ">"
            dtype = np.dtype(_EDF_TYPES[tname]).newbyteorder(order)
            need = shape[0] * shape[1] * dtype.itemsize
            comp = keys.get("compression", "none").strip().lower() or "none"
            if comp in ("none", "no", "0"):
                comp = "none"
            elif comp in ("gzip", "gzipcompression", "zlib", "zlibcompression", "deflate"):
                comp = "zlib"
            else:
                raise InputError(f"{name}: frame {k} uses EDF compression {keys['compression']!r}, not supported "
                                 "(uncompressed, gzip and zlib are)")
            blob = keys.get("edf_binarysize", keys.get("size"))
            nbytes = _int(blob, "Size", name) if blob is not None else need
            if comp == "none" and nbytes < need:
                raise InputError(f"{name}: frame {k} header says {nbytes} data bytes, but {shape[0]}x{shape[1]} "
                                 f"{dtype.name} pixels need {need}")
            if start + nbytes > size:
                raise InputError(f"{name}: truncated: frame {k} needs {nbytes} bytes at offset {start}, the file "
                                 f"has {max(0, size - start)} there ({k} complete frames)")
            frames.append(_Frame(start, nbytes, shape, dtype, comp))
            pos = start + nbytes
            if nbytes == 0:
                pos += 1  # an empty data block still moves on
    if not frames:
        raise InputError(f"{name}: EDF file holds no frame")
    first = frames[0]
    for k, fr in enumerate(frames):
        if fr.shape != first.shape:
            raise DataError(f"{name}: frames of different shapes: frame 0 is {first.shape[0]}x{first.shape[1]}, "
                            f"frame {k} is {fr.shape[0]}x{fr.shape[1]}")
    return frames


def read_edf_frames(path: str, name: str, frames: list[_Frame], i0: int, i1: int) -> np.ndarray:
    """Frames i0..i1-1 of an EDF file (from `edf_frames`) as one (k, ny, nx) native-endian array."""
    out = np.empty((i1 - i0,) + frames[0].shape, frames[0].dtype.newbyteorder("="))
    with open(path, "rb") as fh:
        for j, fr in enumerate(frames[i0:i1]):
            fh.seek(fr.offset)
            raw = fh.read(fr.size)
            if len(raw) < fr.size:
                raise InputError(f"{name}: frame {i0 + j} is short ({len(raw)} of {fr.size} bytes); the file "
                                 "shrank while being read?")
            need = fr.shape[0] * fr.shape[1] * fr.dtype.itemsize
            if fr.compression == "zlib":
                dec = zlib.decompressobj(47)  # gzip or zlib header, detected
                try:
                    raw = dec.decompress(raw, need)
                except zlib.error as exc:
                    raise InputError(f"{name}: frame {i0 + j}: corrupt compressed data ({exc})") from None
                if len(raw) < need:
                    raise InputError(f"{name}: frame {i0 + j}: compressed data give {len(raw)} of {need} bytes")
            out[j] = np.frombuffer(raw, fr.dtype, count=fr.shape[0] * fr.shape[1]).reshape(fr.shape)
    return out


# --------------------------------------------------------------------------- CBF


@dataclasses.dataclass(frozen=True)
class CbfInfo:
    """What a CBF header promises: where the binary data are and what they decode to."""

    offset: int
    size: int
    shape: tuple[int, int]
    dtype: np.dtype
    conversion: str
    md5: str | None


def cbf_info(path: str, name: str) -> CbfInfo:
    """Parse a CBF header (bounded) and check the binary section it announces lies inside the file."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(MAX_HEADER)
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or exc})") from None
    mark = head.find(_CBF_MARK)
    if mark < 0:
        what = "truncated inside the header" if len(head) < MAX_HEADER else "no binary section"
        raise InputError(f"{name}: CBF {what} (no start-of-binary marker in {len(head)} bytes)")
    text = head[:mark].decode("latin-1")
    sect = text.rfind("--CIF-BINARY-FORMAT-SECTION--")
    if sect < 0:
        raise InputError(f"{name}: CBF header has no binary-section MIME header")
    mime = text[sect:]
    keys: dict[str, str] = {}
    for line in mime.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            keys[key.strip().lower()] = value.strip()
    conv = re.search(r'conversions\s*=\s*"?([\w-]+)', mime, re.I)
    conversion = conv.group(1).lower() if conv else "x-cbf_none"
    if conversion not in ("x-cbf_byte_offset", "x-cbf_none"):
        raise InputError(f"{name}: CBF compression {conversion!r} not supported (byte_offset and none are)")
    for key in ("x-binary-size", "x-binary-size-fastest-dimension", "x-binary-element-type"):
        if key not in keys:
            raise InputError(f"{name}: CBF header lacks {key.title()}")
    nbytes = _int(keys["x-binary-size"], "X-Binary-Size", name)
    nx = _int(keys["x-binary-size-fastest-dimension"], "X-Binary-Size-Fastest-Dimension", name)
    ny = _int(keys.get("x-binary-size-second-dimension", "1"), "X-Binary-Size-Second-Dimension", name)
    check_frame_shape((ny, nx), name)
    if "x-binary-number-of-elements" in keys:
        n = _int(keys["x-binary-number-of-elements"], "X-Binary-Number-of-Elements", name)
        if n != nx * ny:
            raise InputError(f"{name}: CBF header says {n} elements but {ny}x{nx} = {nx * ny} pixels")
    tname = keys["x-binary-element-type"].strip('"').strip().lower()
    if tname not in _CBF_TYPES:
        raise InputError(f"{name}: unknown CBF element type {keys['x-binary-element-type']!r}")
    order = "<" if "little" in keys.get("x-binary-element-byte-order", "LITTLE_ENDIAN").lower() else ">"
    dtype = np.dtype(_CBF_TYPES[tname]).newbyteorder(order)
    if conversion == "x-cbf_none" and nbytes < nx * ny * dtype.itemsize:
        raise InputError(f"{name}: CBF header says {nbytes} data bytes, but {ny}x{nx} {dtype.name} pixels need "
                         f"{nx * ny * dtype.itemsize}")
    if conversion == "x-cbf_byte_offset" and dtype.kind == "f":
        raise InputError(f"{name}: CBF byte_offset compression of {tname} values is not defined")
    start = mark + len(_CBF_MARK)
    if start + nbytes > size:
        raise InputError(f"{name}: truncated: the CBF header promises {nbytes} data bytes, the file holds "
                         f"{max(0, size - start)}")
    md5 = keys.get("content-md5")
    return CbfInfo(start, nbytes, (ny, nx), dtype, conversion, md5)


def _byte_offset_kernel():
    import numba  # noqa: PLC0415 - only when a CBF is read

    @numba.njit(cache=True, nogil=True)
    def decode(buf, out):  # pragma: no cover - compiled
        n = out.size
        m = buf.size
        i = 0
        k = 0
        v = 0
        while k < n and i < m:
            d = np.int64(np.int8(buf[i]))
            i += 1
            if d == -128:
                if i + 2 > m:
                    break
                d = np.int64(np.int16(np.uint16(buf[i]) | (np.uint16(buf[i + 1]) << 8)))
                i += 2
                if d == -32768:
                    if i + 4 > m:
                        break
                    u = np.uint32(0)
                    for b in range(4):
                        u |= np.uint32(buf[i + b]) << np.uint32(8 * b)
                    d = np.int64(np.int32(u))
                    i += 4
                    if d == -2147483648:
                        if i + 8 > m:
                            break
                        w = np.uint64(0)
                        for b in range(8):
                            w |= np.uint64(buf[i + b]) << np.uint64(8 * b)
                        d = np.int64(w)
                        i += 8
            v += d
            out[k] = v
            k += 1
        return k

    return decode


_DECODE: list = []


def read_cbf(path: str, name: str, info: CbfInfo | None = None) -> np.ndarray:
    """The image of a CBF file, decoded with every length checked (and its MD5 when the header has one)."""
    info = info or cbf_info(path, name)
    with open(path, "rb") as fh:
        fh.seek(info.offset)
        raw = fh.read(info.size)
    if len(raw) < info.size:
        raise InputError(f"{name}: truncated: {len(raw)} of {info.size} data bytes")
    if info.md5:
        got = base64.b64encode(hashlib.md5(raw).digest()).decode()
        if got != info.md5:
            raise InputError(f"{name}: CBF data do not match their checksum (Content-MD5); corrupt file")
    ny, nx = info.shape
    if info.conversion == "x-cbf_none":
        return np.frombuffer(raw, info.dtype, count=ny * nx).reshape(ny, nx).astype(info.dtype.newbyteorder("="))
    if not _DECODE:
        _DECODE.append(_byte_offset_kernel())
    out = np.empty(ny * nx, np.int64)
    got = int(_DECODE[0](np.frombuffer(raw, np.uint8), out))
    if got < ny * nx:
        raise InputError(f"{name}: CBF data decode to {got} of {ny * nx} pixels; truncated or corrupt")
    native = info.dtype.newbyteorder("=")
    info_t = np.iinfo(native)
    if out.min() < info_t.min or out.max() > info_t.max:
        raise InputError(f"{name}: CBF data hold values outside the {native.name} range; corrupt file")
    return out.astype(native).reshape(ny, nx)


# --------------------------------------------------------------------------- TIFF and npy


def tiff_check(tf, path: str, name: str) -> None:
    """Refuse a TIFF whose pages or data run past the end of the file (see `_tiff_check`); whatever
    tifffile raises on a damaged file becomes an InputError."""
    try:
        _tiff_check(tf, path, name)
    except (InputError, DataError):
        raise
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types for damaged files
        raise InputError(f"{name}: cannot read TIFF ({first_line(exc)})") from None


def _tiff_check(tf, path: str, name: str) -> None:
    """Refuse a TIFF whose pages or data run past the end of the file (tifffile would silently give a
    shorter or different series): the IFD chain must end with 0, every strip or tile must lie inside the
    file, and the page count must match the ImageJ / tifffile shape metadata."""
    import struct  # noqa: PLC0415

    size = os.path.getsize(path)
    pages = tf.pages
    n = len(pages)
    nxt = getattr(pages, "_nextpageoffset", None)
    if nxt is not None:
        fh = tf.filehandle
        fh.seek(nxt)
        raw = fh.read(tf.tiff.offsetsize)
        if len(raw) < tf.tiff.offsetsize:
            raise InputError(f"{name}: truncated TIFF: the file ends inside the directory of page {n - 1}")
        if struct.unpack(tf.tiff.offsetformat, raw)[0] != 0:
            raise InputError(f"{name}: truncated TIFF: page {n} is announced but not in the file "
                             f"({n} pages readable, file of {size} bytes)")
    for k in range(n):
        page = pages[k]
        offsets = getattr(page, "dataoffsets", ()) or ()
        counts = getattr(page, "databytecounts", ()) or ()
        end = max((int(o) + int(c) for o, c in zip(offsets, counts)), default=0)
        if end > size:
            raise InputError(f"{name}: truncated TIFF: page {k} needs data up to byte {end}, the file has {size}")
    want = None
    if tf.shaped_metadata and tf.shaped_metadata[0].get("shape"):
        shp = [int(v) for v in tf.shaped_metadata[0]["shape"]]
        planes = shp[:-3] if getattr(pages[0], "samplesperpixel", 1) > 1 else shp[:-2]
        want = int(np.prod(planes)) if planes else 1
    elif tf.imagej_metadata and tf.imagej_metadata.get("images") and n > 1:
        want = int(tf.imagej_metadata["images"])  # (one-IFD ImageJ big files: the series size check)
    if want is not None and want > n:
        raise InputError(f"{name}: truncated TIFF: the metadata promise {want} frames, the file holds {n}")


def npy_header(path: str, name: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of a .npy file, checked against the file size before any read."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = reader(fh, max_header_size=1 << 16)
            offset = fh.tell()
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy parses the header with ast/tokenize: many error types
        raise InputError(f"{name}: cannot read .npy header ({type(exc).__name__}: {first_line(exc)})") from None
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biufc":
        raise DataError(f"{name}: .npy holds {dtype} values, not numbers")
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    size = os.path.getsize(path)
    if offset + need > size:
        raise InputError(f"{name}: truncated .npy: shape {shape} {dtype} needs {need} bytes, the file holds "
                         f"{size - offset}")
    return tuple(int(s) for s in shape), dtype, offset
