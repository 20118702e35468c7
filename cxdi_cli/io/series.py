"""Time-resolved series of 2D diffraction patterns: one CXI file, the pattern layout with a frame axis.

The least new format on top of a pattern file (`cxi.write_pattern`, DESIGN §3):

- `/entry_1/instrument_1/detector_1/data`: float32 (T, H, W) photons, each frame centred (q = 0 at
  n // 2), frames in time order; attribute `interpretation = "image"` (NeXus: a stack of 2D images),
  which tells a series from a 3D volume (`"volume"`); `/entry_1/data_1/data` links to it.
- the mask: `detector_1/mask_shared` (H, W) uint32 when every frame has the same mask (the CXI 1.6
  name for a mask common to all frames), or `detector_1/mask` (T, H, W) when frames have their own.
- `/entry_1/data_1/time` float64 (T,) seconds from the first frame (NXdata axis `time`); absent:
  the frame index.
- geometry and provenance as for a pattern.

`read_series` accepts that layout, and also any 3D `file.h5::/path` dataset, TIFF or npy stack, the
first axis taken as time."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cxdi_cli.io.cxi import (
    DET, _get_dataset, _h5py, _pattern_entry, _write_provenance, as_text, check_dataset, new_h5, open_h5,
    read_array, read_geometry, read_provenance,
)
from cxdi_cli.io.paths import atomic_output, corrupt_file_errors, local_input, sniff, split_url
from cxdi_cli.model import DataError, Geometry, InputError, Pattern, measured_from_mask


@dataclasses.dataclass
class Series:
    """Frames (T, H, W) of one changing specimen in time order, with one mask (H, W) or one per frame."""

    intensity: np.ndarray                    # float32 (T, H, W), each frame centred
    mask: np.ndarray                         # uint32 (H, W) or (T, H, W), CXI bits, 0 = good
    time: np.ndarray                         # float64 (T,) seconds (the frame index when unknown)
    geometry: Geometry = dataclasses.field(default_factory=Geometry)
    provenance: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return int(self.intensity.shape[0])

    def frame_mask(self, k: int) -> np.ndarray:
        return self.mask if self.mask.ndim == 2 else self.mask[k]

    def frame(self, k: int) -> Pattern:
        """Frame k as a pattern (its own mask), named FILE[frame k] in messages."""
        return Pattern(intensity=self.intensity[k], mask=self.frame_mask(k), geometry=self.geometry,
                       provenance=list(self.provenance), source=f"{self.source or 'series'}[frame {k}]")

    def summed(self) -> Pattern:
        """The frames summed: a pixel counts when it is measured in every frame (bad in one, masked)."""
        mask = self.mask if self.mask.ndim == 2 else np.bitwise_or.reduce(self.mask, axis=0)
        total = np.where(measured_from_mask(mask), self.intensity.sum(axis=0, dtype=np.float64), 0)
        return Pattern(intensity=total.astype(np.float32), mask=mask.astype(np.uint32), geometry=self.geometry,
                       provenance=list(self.provenance), source=f"{self.source or 'series'}[sum of {len(self)}]")


def check_series(series: Series) -> None:
    """DataError unless the frames are a (T >= 2, H, W) stack whose mask fits and whose measured pixels
    hold finite, non-negative photons in every frame."""
    data, mask, name = series.intensity, series.mask, series.source or "series"
    if data.ndim != 3:
        raise DataError(f"{name}: a series is a stack of 2D frames (T, H, W), got shape {data.shape}")
    if data.shape[0] < 2:
        raise DataError(f"{name}: a series needs at least 2 frames, got {data.shape[0]}")
    if mask.shape not in (data.shape, data.shape[1:]):
        raise DataError(f"{name}: mask shape {mask.shape} fits neither one frame {data.shape[1:]} nor the "
                        f"stack {data.shape}")
    if series.time.shape != (data.shape[0],):
        raise DataError(f"{name}: {series.time.size} frame times for {data.shape[0]} frames")
    if not np.all(np.diff(series.time) > 0):
        raise DataError(f"{name}: frame times are not increasing (frames must be in time order)")
    for k in range(data.shape[0]):
        good = measured_from_mask(series.frame_mask(k))
        vals = data[k][good]
        if not np.all(np.isfinite(vals)):
            raise DataError(f"{name}: frame {k} holds NaN or infinite values in unmasked pixels")
        if np.any(vals < 0):
            raise DataError(f"{name}: frame {k} holds negative values in unmasked pixels")
        if not np.any(vals > 0):
            raise DataError(f"{name}: frame {k}: all unmasked pixels are zero")


@corrupt_file_errors
def read_series(spec: str) -> Series:
    """Read a time series of 2D patterns (module docstring); DataError naming the file when it holds one
    2D pattern, a 3D volume or a reconstruction instead."""
    name, dset = split_url(spec)
    path = local_input(name)
    geometry, provenance, mask, time = Geometry(), [], None, None
    if sniff(path) == "hdf5":
        with open_h5(name) as f:
            dpath = dset
            if dpath is None:
                if "/entry_1/image_1/data" in f:
                    raise DataError(f"{name}: holds a reconstruction (/entry_1/image_1), not a series of patterns")
                if f"{DET}/data" not in f:
                    raise InputError(f"{name}: no series at {DET}/data; name the dataset as {name}::/path")
                dpath = f"{DET}/data"
            ds = _get_dataset(f, dpath, name)
            if ds.dtype.kind == "c":
                raise DataError(f"{name}: {dpath} holds complex values (a reconstruction?), not intensities")
            if ds.ndim == 2:
                raise DataError(f"{name}: holds one 2D pattern {tuple(ds.shape)}, not a series of frames "
                                "(phase it without --series)")
            if dset is None and ds.ndim == 3 and as_text(ds.attrs.get("interpretation", "")) == "volume":
                raise DataError(f"{name}: holds a 3D volume {tuple(ds.shape)}, not a series of 2D frames "
                                "(phase it without --series)")
            check_dataset(ds, name, dpath)
            data = np.asarray(ds[()], np.float32)
            entry = "/" + dpath.strip("/").split("/")[0]
            if entry.startswith("/entry"):
                geometry = read_geometry(f, entry)
                det = f"{entry}/instrument_1/detector_1"
                for mpath in (f"{det}/mask", f"{det}/mask_shared"):
                    if mpath in f and isinstance(f[mpath], _h5py().Dataset) and mpath != dpath:
                        mask = np.asarray(f[mpath][()])
                        break
                if f"{entry}/data_1/time" in f:
                    time = np.asarray(f[f"{entry}/data_1/time"][()], np.float64).ravel()
                provenance = read_provenance(f)
    else:
        data = read_array(spec, "series").astype(np.float32)
        if data.ndim == 2:
            raise DataError(f"{name}: holds one 2D pattern {data.shape}, not a series of frames "
                            "(phase it without --series)")
    if mask is None:
        mask = np.zeros(data.shape[1:], np.uint32)
    mask = np.asarray(mask).astype(np.uint32)
    if time is None:
        time = np.arange(data.shape[0], dtype=np.float64)
    series = Series(intensity=data, mask=mask, time=time, geometry=geometry, provenance=provenance, source=spec)
    check_series(series)
    series.intensity = np.where(np.isfinite(data), data, 0).astype(np.float32)
    return series


def write_series(dest: str, series: Series, step: dict[str, Any]) -> None:
    """Write a series as CXI (module docstring), atomically; checked first (`check_series`)."""
    check_series(series)
    data = np.asarray(series.intensity, np.float32)
    mask = np.asarray(series.mask, np.uint32)
    with atomic_output(dest, ".cxi") as tmp:
        with new_h5(tmp) as f:
            entry, det = _pattern_entry(f, series.geometry)
            d = det.create_dataset("data", data=data, chunks=(1,) + data.shape[1:], compression="gzip",
                                   compression_opts=1)
            d.attrs["units"] = "photons"
            d.attrs["interpretation"] = "image"      # a stack of 2D frames, not a volume
            det.create_dataset("mask_shared" if mask.ndim == 2 else "mask", data=mask, chunks=True,
                               compression="gzip", compression_opts=1)
            data_1 = entry.create_group("data_1")
            data_1.attrs["NX_class"] = "NXdata"
            data_1.attrs["signal"] = "data"
            data_1.attrs["axes"] = ["time", ".", "."]
            data_1["data"] = d
            data_1.create_dataset("time", data=np.asarray(series.time, np.float64)).attrs["units"] = "s"
            _write_provenance(f, list(series.provenance) + [step])
