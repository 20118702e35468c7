"""A tilt series accumulated in chunks of frames, as tasks for an executor (`cxdi_cli.executor`).

The assembly of a volume is a sum over frames (`VolumeAssembler` keeps the weighted sum and the summed
weight per voxel, and normalises only at the end), so the series can be cut into chunks of consecutive
frames, each read, calibrated and deposited into its own partial sums on whichever worker runs it, and
the partial sums added: the merged volume is the single-process one up to the order of the additions
(float64 rounding). Each task holds its partial sums and one block of frames, never the series.

With per-voxel interpolation ("interp") a voxel is interpolated between the two frames bracketing its
Ewald crossing, so a chunk also reads the last frame of the chunk before it (`overlap` = 1): that frame
deposits nothing by itself, it only opens the first interval of the chunk.

In-process (no executor, or `InProcess`), the frames stream through the caller's open stack into one
accumulator, exactly as a single loop would.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Iterator

import numpy as np

from cxdi_cli.model import ComputeError, UsageError
from cxdi_cli.reduce.pattern import calibrate

#: Chunks per worker slot: a few per slot balance the load when chunks take unequal times, while each
#: chunk costs one partial volume sent back to the client.
CHUNKS_PER_WORKER = 2


@dataclasses.dataclass
class FrameSource:
    """How to read the frames of a series and turn them into photons and good-pixel masks.

    photons = (raw - dark) / flat / gain; a pixel is good in a frame when it is good on the detector
    (`good`), its raw value is not a negative marker and it is below the saturation `level`. `bin`
    sums bin x bin pixels (a binned pixel is good when all of its pixels are). `specs` and `saturation`
    are what `open_frames` takes, so a worker can open the files itself."""

    specs: list[str]
    good: np.ndarray
    saturation: float | None = None
    level: float | None = None
    dark: np.ndarray | None = None
    flat: np.ndarray | None = None
    gain: float = 1.0
    bin: int = 1

    def open(self) -> Any:
        """The frame stack (`io.frames.FrameStack`), to be closed by the caller."""
        from cxdi_cli.io.frames import open_frames  # noqa: PLC0415

        return open_frames(list(self.specs), self.saturation)

    def _binned(self, a: np.ndarray, how: str) -> np.ndarray:
        k = self.bin
        if k == 1:
            return a
        ny, nx = a.shape[0] // k, a.shape[1] // k
        v = a[:ny * k, :nx * k].reshape(ny, k, nx, k)
        return v.all(axis=(1, 3)) if how == "all" else v.sum(axis=(1, 3))

    def frames(self, stack: Any, start: int = 0, stop: int | None = None
               ) -> Iterator[tuple[int, np.ndarray, np.ndarray, bool]]:
        """(index, photons, good, saturated) for frames start..stop-1 of `stack`, one block read at a time."""
        stop = stack.n_frames if stop is None else stop
        for i0, block in stack.blocks(slice(start, stop)):
            rawf = np.asarray(block, np.float64)
            cal = calibrate(rawf, self.dark, self.flat, self.gain)
            for j, (raw, ph) in enumerate(zip(rawf, cal)):
                good = self.good & (raw >= 0)
                saturated = False
                if self.level is not None:
                    sat = raw >= self.level
                    saturated = bool(sat.any())
                    good &= ~sat
                yield i0 + j, self._binned(ph, "sum"), self._binned(good, "all"), saturated


@dataclasses.dataclass
class ChunkJob:
    """What every chunk task shares (sent to each worker once): the frames, and `make`, a picklable
    callable building an empty accumulator (``add(index, photons, good)``, ``sum``, ``wsum``)."""

    source: FrameSource
    make: Callable[[], Any]
    overlap: int = 0


@dataclasses.dataclass
class Partial:
    """The partial sums of a chunk and what the caller reports about its frames."""

    sum: np.ndarray
    wsum: np.ndarray
    good_any: np.ndarray
    saturated_frames: int
    frames: int


def _deposit(acc: Any, frames: Iterator[tuple[int, np.ndarray, np.ndarray, bool]], first_counted: int,
             report: Callable[[dict[str, Any]], None] | None) -> tuple[np.ndarray | None, int, int]:
    """Add frames to `acc`; frames before index `first_counted` only open the interpolation."""
    good_any = None
    saturated = counted = 0
    for index, photons, good, sat in frames:
        acc.add(index, photons, good)
        if index < first_counted:
            continue
        good_any = good.copy() if good_any is None else good_any | good
        saturated += int(sat)
        counted += 1
        if report is not None:
            report({"frames": 1})
    return good_any, saturated, counted


def chunk_task(job: ChunkJob, start: int, stop: int, report: Callable[[dict[str, Any]], None] | None = None
               ) -> Partial:
    """One chunk on a worker: open the files, deposit frames start..stop-1 (after the `overlap` frames
    before `start`), return the partial sums."""
    acc = job.make()
    with job.source.open() as stack:
        first = max(0, start - job.overlap)
        good_any, saturated, counted = _deposit(acc, job.source.frames(stack, first, stop), start, report)
    if good_any is None:
        good_any = np.zeros(np.shape(job.source._binned(job.source.good, "all")), bool)
    return Partial(sum=acc.sum, wsum=acc.wsum, good_any=good_any, saturated_frames=saturated, frames=counted)


def plan_chunks(n_frames: int, workers: int, chunk: int | None = None) -> list[tuple[int, int]]:
    """Consecutive (start, stop) frame ranges: `chunk` frames each, or about CHUNKS_PER_WORKER per
    worker slot (at least 2 frames a chunk)."""
    if chunk is None:
        chunk = max(2, math.ceil(n_frames / max(1, CHUNKS_PER_WORKER * workers)))
    chunk = max(1, int(chunk))
    return [(a, min(n_frames, a + chunk)) for a in range(0, n_frames, chunk)]


def worker_specs(specs: list[str]) -> list[str]:
    """The frame specs with absolute file names, as a worker (another folder, another node) needs them;
    standard input cannot be read there (UsageError)."""
    from cxdi_cli.io.paths import split_url  # noqa: PLC0415

    out = []
    for spec in specs:
        name, dset = split_url(spec)
        if name == "-":
            raise UsageError("frames from standard input cannot be read by cluster workers: give the files")
        name = os.path.abspath(name) if os.path.exists(name) else name
        out.append(name if dset is None else f"{name}::{dset}")
    return out


def accumulate(stack: Any, job: ChunkJob, *, executor: Any = None, merge: Callable[[], Any] | None = None,
               chunk: int | None = None, on_progress: Callable[..., None] | None = None
               ) -> tuple[Any, np.ndarray, int]:
    """Deposit every frame of `stack` into an accumulator; returns (accumulator, good_any, saturated frames).

    In-process (`executor` None or in-process) the frames stream from `stack` into ``job.make()``.
    Otherwise the series is cut into chunks (`plan_chunks`), one task each; the workers open the files
    named in ``job.source.specs`` (made absolute: see `worker_specs`) and their partial sums are added,
    as they arrive, into ``merge()`` (an empty accumulator that need not be able to deposit frames,
    default ``job.make()``). `on_progress(advance)` counts frames as they are deposited."""
    n = stack.n_frames
    tick = on_progress or (lambda *a, **k: None)
    if executor is None or getattr(executor, "kind", "") == "in-process":
        acc = job.make()
        good_any, saturated, _ = _deposit(acc, job.source.frames(stack), 0, lambda ev: tick(1))
        return acc, good_any, saturated
    ranges = plan_chunks(n, executor.workers, chunk)
    job = dataclasses.replace(job, source=dataclasses.replace(job.source, specs=worker_specs(job.source.specs)))
    acc = (merge or job.make)()
    state: dict[str, Any] = {"good": None, "saturated": 0, "frames": 0}

    def done(k: int, part: Partial) -> None:
        acc.sum += part.sum
        acc.wsum += part.wsum
        state["good"] = part.good_any if state["good"] is None else state["good"] | part.good_any
        state["saturated"] += part.saturated_frames
        state["frames"] += part.frames

    out = executor.map(chunk_task, job, ranges, on_done=done, on_event=lambda ev: tick(int(ev.get("frames", 0))),
                       keep=False)
    if out.failures:
        lost = ", ".join(f"frames {ranges[k][0]}-{ranges[k][1] - 1} ({out.describe(k)})" for k in sorted(out.failures))
        raise ComputeError(f"{len(out.failures)} of {len(ranges)} chunks of the series failed: {lost}")
    return acc, state["good"], state["saturated"]
