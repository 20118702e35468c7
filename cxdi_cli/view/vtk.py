"""VTK ImageData XML files (.vti) that ParaView (and VisIt, or any VTK reader) opens: point arrays on a
regular grid with its spacing and origin, written by hand so that cxdi needs no vtk package.

The format (VTK's "XML file formats", ImageData): one `<Piece>` whose `<PointData>` holds the arrays,
each inline as base64 of a UInt64 byte count followed, separately encoded, by the little-endian values,
x running fastest (a C-ordered (z, y, x) array as it is). A 2D array is one z plane.
"""
from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping, Sequence
from xml.sax.saxutils import quoteattr

import numpy as np

from cxdi_cli import io
from cxdi_cli.model import DataError

#: numpy dtype -> VTK type name
VTK_TYPES = {
    np.dtype(np.float32): "Float32", np.dtype(np.float64): "Float64", np.dtype(np.uint8): "UInt8",
    np.dtype(np.int8): "Int8", np.dtype(np.uint16): "UInt16", np.dtype(np.int16): "Int16",
    np.dtype(np.uint32): "UInt32", np.dtype(np.int32): "Int32", np.dtype(np.uint64): "UInt64",
    np.dtype(np.int64): "Int64",
}


def _encoded(values: np.ndarray) -> str:
    """base64(UInt64 byte count) + base64(little-endian bytes): VTK's inline binary, uncompressed."""
    data = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
    head = np.array([len(data)], "<u8").tobytes()
    return base64.b64encode(head).decode("ascii") + base64.b64encode(data).decode("ascii")


def _data_array(name: str, values: np.ndarray, tuples: int | None = None) -> str:
    kind = VTK_TYPES.get(np.dtype(values.dtype))
    if kind is None:
        raise DataError(f"{name}: cannot write {values.dtype} values to a VTK file")
    extra = f' NumberOfTuples="{tuples}"' if tuples is not None else ""
    return (f'<DataArray type="{kind}" Name={quoteattr(name)} NumberOfComponents="1"{extra} format="binary">'
            f"{_encoded(values)}</DataArray>")


def _vti_parts(arrays: Mapping[str, np.ndarray], spacing: Sequence[float], origin: Sequence[float],
               field: Mapping[str, Sequence[float]] | None) -> Iterator[str]:
    """The .vti document in pieces (one array at a time in memory as base64)."""
    if not arrays:
        raise DataError("nothing to write: no arrays")
    shapes = {np.shape(a) for a in arrays.values()}
    if len(shapes) != 1:
        raise DataError(f"VTK point arrays must share one shape, got {sorted(shapes)}")
    shape = shapes.pop()
    if len(shape) not in (2, 3) or len(spacing) != len(shape) or len(origin) != len(shape):
        raise DataError(f"a VTK image is 2D or 3D with a spacing and origin per axis; got shape {shape}, "
                        f"spacing {tuple(spacing)}, origin {tuple(origin)}")
    nz, ny, nx = (1,) + tuple(shape) if len(shape) == 2 else shape
    sx, sy, sz = (float(spacing[-1]), float(spacing[-2]), float(spacing[0]) if len(shape) == 3 else 1.0)
    ox, oy, oz = (float(origin[-1]), float(origin[-2]), float(origin[0]) if len(shape) == 3 else 0.0)
    extent = f"0 {nx - 1} 0 {ny - 1} 0 {nz - 1}"
    first = next(iter(arrays))
    yield ('<?xml version="1.0"?>\n'
           '<VTKFile type="ImageData" version="1.0" byte_order="LittleEndian" header_type="UInt64">\n'
           f'  <ImageData WholeExtent="{extent}" Origin="{ox!r} {oy!r} {oz!r}" Spacing="{sx!r} {sy!r} {sz!r}" '
           'Direction="1 0 0 0 1 0 0 0 1">\n')
    if field:
        yield "    <FieldData>\n"
        for name, values in field.items():
            v = np.asarray(values, np.float64).ravel()
            yield "      " + _data_array(name, v, tuples=v.size) + "\n"
        yield "    </FieldData>\n"
    yield f'    <Piece Extent="{extent}">\n      <PointData Scalars={quoteattr(first)}>\n'
    for name, a in arrays.items():
        yield "        " + _data_array(name, np.asarray(a)) + "\n"
    yield "      </PointData>\n      <CellData/>\n    </Piece>\n  </ImageData>\n</VTKFile>\n"


def write_vti(dest: str, arrays: Mapping[str, np.ndarray], spacing: Sequence[float], origin: Sequence[float],
              field: Mapping[str, Sequence[float]] | None = None) -> None:
    """Write `arrays` (name -> (z, y, x) or (y, x) array, one shape for all) as a .vti file to `dest`,
    atomically (`-` = stdout), with `spacing` and `origin` per array axis (z, y, x order, as the arrays)
    and small `field` arrays (whole-dataset values, e.g. the voxel size in metres). The first array is
    the active scalar ParaView colours by."""
    parts = _vti_parts(arrays, spacing, origin, field)
    first = next(parts)  # checks the arrays before any output exists
    with io.atomic_output(dest, ".vti") as tmp:
        with open(tmp, "w", encoding="ascii") as out:
            out.write(first)
            for part in parts:
                out.write(part)


__all__ = ["VTK_TYPES", "write_vti"]
