"""From raw detector frames to one calibrated, centred, cropped diffraction pattern in photons.

Reusable pieces (assemble3d uses them on tilt series):

- `load_dark(specs, shape)`, `load_flat(spec, shape)`: calibration images (a dark stack is averaged
  block by block).
- `calibrate(frames, dark, flat, gain, threshold)`: ADU -> photons for one frame or a block.
- `accumulate(stack, ...)`: one pass over the frames, block by block (memory: a few frames), giving
  the photon sum and per-pixel statistics (`FrameStats`).
- `pixel_flags(stats)`: saturated / hot-in-time / marker pixels as CXI mask bits.
- `find_centre(image, mask)` and the centring/masking chain: `centring` (shared with `assembly`).
- `extract(image, mask, centre, crop, bin, pad)`: crop around the centre, bin, pad; q = 0 at N // 2.
- `preprocess(...)`: the whole chain, as `cxdi preprocess` runs it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from cxdi_cli import geometry as geo
from cxdi_cli.reduce import masking
from cxdi_cli.reduce.centring import centre_and_mask
from cxdi_cli.fft import good_size
from cxdi_cli.model import (
    MASK_BITS,
    DataError,
    Geometry,
    Pattern,
    UsageError,
    mask_counts,
    measured_from_mask,
    wavelength_from_kev,
)

Progress = Callable[..., None]


def _noop(*_: Any, **__: Any) -> None:
    return None


# --------------------------------------------------------------------------- calibration


def calibrate(frames: np.ndarray, dark: np.ndarray | None = None, flat: np.ndarray | None = None,
              gain: float = 1.0, threshold: float | None = None) -> np.ndarray:
    """Raw frames (ADU; one frame or a block (k, ny, nx)) to photons, float64.

    photons = (frames - dark) / flat / gain. With `threshold` (photons), single-photon discrimination:
    values below it become 0, the others are rounded to whole photons (at least one).
    """
    x = np.asarray(frames, np.float64)
    if dark is not None:
        x = x - dark
    if flat is not None:
        x = x / flat
    if gain != 1.0:
        x = x / gain
    if threshold is not None:
        x = np.where(x < threshold, 0.0, np.maximum(np.rint(x), 1.0))
    return x


def load_dark(specs: str | Sequence[str], shape: tuple[int, int]) -> np.ndarray:
    """Mean dark image (ADU) of one or more dark frames / stacks, read block by block."""
    from cxdi_cli.io.frames import open_frames  # noqa: PLC0415

    with open_frames(specs) as stack:
        if stack.shape != tuple(shape):
            raise DataError(f"{stack.name}: dark frames are {stack.shape[0]}x{stack.shape[1]}, "
                            f"the data frames {shape[0]}x{shape[1]}")
        acc = np.zeros(shape, np.float64)
        n = 0
        for i, block in stack.blocks():
            b = np.asarray(block, np.float64)
            if not np.all(np.isfinite(b)):
                raise DataError(f"{stack.name}: dark frame {i + int(np.argmax(~np.isfinite(b).reshape(len(b), -1).all(1)))} "
                                "holds NaN or infinite values")
            acc += b.sum(axis=0)
            n += len(b)
    return acc / n


def load_flat(spec: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat field normalised to mean 1 over its usable pixels, and the unusable ones (<= 0, NaN)."""
    from cxdi_cli import io  # noqa: PLC0415

    flat = np.asarray(io.read_array(spec, "flat field"), np.float64)
    while flat.ndim > 2:
        flat = flat.mean(axis=0)
    if flat.shape != tuple(shape):
        raise DataError(f"{spec}: flat field is {flat.shape[0]}x{flat.shape[1]}, "
                        f"the frames {shape[0]}x{shape[1]}")
    bad = ~np.isfinite(flat) | (flat <= 0)
    if bad.all():
        raise DataError(f"{spec}: flat field has no positive pixels")
    flat = np.where(bad, 1.0, flat)
    flat /= flat[~bad].mean()
    return flat, bad


# --------------------------------------------------------------------------- one pass over the frames


@dataclasses.dataclass
class FrameStats:
    """What one pass over the frames leaves: photon sum and per-pixel statistics (detector shape)."""

    n: int                          # frames used
    total: np.ndarray               # float64 photons summed over frames
    sumsq: np.ndarray               # float64 sum of squared photons (temporal variance)
    cal_max: np.ndarray             # float64 largest single-frame photons
    raw_max: np.ndarray             # float64 largest raw value
    saturated: np.ndarray           # bool: at or above the saturation level in some frame
    marker: np.ndarray              # bool: negative integer markers (-1 gap, -2 bad: Pilatus/Eiger)
    halves: tuple[np.ndarray, np.ndarray] | None = None  # even / odd frame sums
    saturation: float | None = None
    first_frame: int = 0

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.n, 1)

    def temporal_variance(self) -> np.ndarray:
        """Per-pixel variance of the photons across frames (zeros for a single frame)."""
        if self.n < 2:
            return np.zeros_like(self.total)
        m = self.mean
        return np.maximum(self.sumsq / self.n - m * m, 0.0) * self.n / (self.n - 1)


def default_saturation(dtype: np.dtype) -> float | None:
    """The largest value of an integer frame type (a pixel reading it saturated); None for floats."""
    dt = np.dtype(dtype)
    return float(np.iinfo(dt).max) if dt.kind in "iu" else None


def accumulate(stack, frames: slice | None = None, *, dark: np.ndarray | None = None,
               flat: np.ndarray | None = None, gain: float = 1.0, threshold: float | None = None,
               saturation: float | None = None, split: bool = False,
               on_progress: Progress = _noop) -> FrameStats:
    """Read the selected frames of a `FrameStack` block by block, check them and sum them in photons.

    Refuses (DataError, naming the frame) NaN or infinite values and negative raw values other than
    the integer markers -1 / -2; refuses an all-zero selection. `saturation` (raw units) defaults to the
    stack's stored level, else the largest value of an integer type.
    """
    shape = stack.shape
    level = saturation if saturation is not None else stack.saturation
    if level is None:
        level = default_saturation(stack.dtype)
    total = np.zeros(shape, np.float64)
    sumsq = np.zeros(shape, np.float64)
    cal_max = np.full(shape, -np.inf)
    raw_max = np.full(shape, -np.inf)
    marker = np.zeros(shape, bool)
    halves = (np.zeros(shape, np.float64), np.zeros(shape, np.float64)) if split else None
    sel = range(stack.n_frames)[frames] if frames is not None else range(stack.n_frames)
    on_progress(advance=0, total=len(sel))
    n = 0
    # frame-sized float64 work per block: keep blocks near 64 MB
    block = max(1, (64 << 20) // (8 * shape[0] * shape[1]))
    is_int = np.dtype(stack.dtype).kind in "iu"
    for i0, raw in stack.blocks(frames, block=block):
        k = len(raw)
        if raw.dtype.kind == "f":
            finite = np.isfinite(raw).reshape(k, -1).all(axis=1)
            if not finite.all():
                raise DataError(f"{stack.name}: frame {_frame_index(sel, n + int(np.argmin(finite)))} holds NaN or "
                                "infinite values")
        rawf = np.asarray(raw, np.float64)
        if rawf.min() < 0:
            neg = rawf < 0
            if is_int and np.all((rawf[neg] == -1) | (rawf[neg] == -2)):
                marker |= neg.any(axis=0)
                rawf = np.where(neg, 0.0, rawf)
            else:
                fi = int(np.argmax(neg.reshape(k, -1).any(axis=1)))
                raise DataError(f"{stack.name}: frame {_frame_index(sel, n + fi)} holds negative values "
                                f"(min {rawf[fi].min():g}); raw detector counts cannot be negative")
        np.maximum(raw_max, rawf.max(axis=0), out=raw_max)
        cal = calibrate(rawf, dark, flat, gain, threshold)
        total += cal.sum(axis=0)
        sumsq += np.einsum("kij,kij->ij", cal, cal)
        np.maximum(cal_max, cal.max(axis=0), out=cal_max)
        if halves is not None:
            par = (n + np.arange(k)) % 2
            np.add(halves[0], cal[par == 0].sum(axis=0), out=halves[0])
            np.add(halves[1], cal[par == 1].sum(axis=0), out=halves[1])
        n += k
        on_progress(advance=k)
    if not np.any(raw_max > 0) and not marker.all():
        raise DataError(f"{stack.name}: all selected frames are zero")
    sat = raw_max >= level if level is not None else np.zeros(shape, bool)
    return FrameStats(n=n, total=total, sumsq=sumsq, cal_max=cal_max, raw_max=raw_max,
                      saturated=sat, marker=marker, halves=halves, saturation=level,
                      first_frame=sel[0] if len(sel) else 0)


def _frame_index(sel: range, k: int) -> int:
    return sel[k] if k < len(sel) else k


def read_noise_variance(stats: FrameStats) -> float:
    """Per-frame noise variance (photons^2) not explained by counting statistics: the median of
    (temporal variance - mean) over the dimmer half of the pixels. 0 for photon-counting detectors."""
    if stats.n < 2:
        return 0.0
    var = stats.temporal_variance()
    mean = stats.mean
    ok = ~stats.saturated & (stats.raw_max > 0)
    if ok.sum() < 16:
        return 0.0
    dim = ok & (mean <= np.median(mean[ok]))
    if dim.sum() < 16:
        return 0.0
    return float(max(0.0, np.median((var - np.maximum(mean, 0.0))[dim])))


def pixel_flags(stats: FrameStats, *, hot_sigma: float = 10.0) -> np.ndarray:
    """CXI mask bits that need the frames: saturated in any frame, negative markers (gap / invalid),
    and pixels far above their own time series in one frame (zingers, flickering pixels: hot)."""
    m = np.zeros(stats.total.shape, np.uint32)
    m |= masking.marker_bits(stats.saturated, stats.marker, stats.raw_max, stats.saturation)
    if stats.n >= 3:
        rv = read_noise_variance(stats)
        rest = (stats.total - stats.cal_max) / (stats.n - 1)
        excess = stats.cal_max - rest
        limit = np.maximum.reduce([np.full_like(rest, 20.0), hot_sigma * np.sqrt(np.maximum(rest, 0) + rv + 1.0),
                                   np.maximum(rest, 0.0)])
        m[excess > limit] |= np.uint32(MASK_BITS["hot"])
    return m


# --------------------------------------------------------------------------- crop, bin, pad


def plan_output(shape: tuple[int, int], centre: tuple[float, float], crop: int | None = None,
                binning: int = 1, pad: int | None = None) -> dict[str, Any]:
    """Where the output window lies on the detector and where q = 0 lands in the output.

    crop: window size in detector pixels (default `geometry.default_crop`); the output has
    M = crop // binning pixels (made FFT-friendly), then `pad` (>= M) pixels with q = 0 at pad // 2.
    Returns {start (row, col), size M, bin K, out N, offset, centre_out (row, col), residual}.
    """
    if binning < 1:
        raise UsageError("--bin must be a positive integer")
    if crop is None:
        crop = geo.default_crop(shape, centre)
        m = good_size(crop // binning)
    else:
        if crop < 2:
            raise UsageError("--crop must be at least 2 pixels")
        if crop % binning:
            raise UsageError(f"--crop {crop} is not a multiple of --bin {binning}")
        if crop > max(shape):
            raise UsageError(f"--crop {crop} is larger than the detector ({shape[0]}x{shape[1]} pixels); "
                             "use --pad to enlarge the output")
        m = crop // binning
    if m < 2:
        raise UsageError(f"--bin {binning} leaves fewer than 2 output pixels")
    k = binning
    # the K x K block whose middle is nearest the centre becomes output pixel M // 2 (K = 1: the
    # `geometry.crop_window` of the rounded centre)
    first = geo.centre_pixel((centre[0] - (k - 1) / 2.0, centre[1] - (k - 1) / 2.0))
    start = (first[0] - (m // 2) * k, first[1] - (m // 2) * k)
    resid = tuple((c - s - (k - 1) / 2.0) / k - m // 2 for c, s in zip(centre, start))
    n = m if pad is None else int(pad)
    if n < m:
        raise UsageError(f"--pad {n} is smaller than the cropped size {m}")
    from cxdi_cli.io.paths import check_memory  # noqa: PLC0415

    check_memory(n * n * 32.0, f"an output of {n}x{n} pixels", "reduce --pad")
    offset = n // 2 - m // 2
    return {"start": start, "size": m, "bin": k, "out": n, "offset": offset,
            "centre_out": (n // 2 + resid[0], n // 2 + resid[1]), "residual": resid,
            "crop_detector_px": m * k}


def extract(image: np.ndarray, mask: np.ndarray, plan: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Crop, bin (sum of K x K, mask bits OR-ed) and pad as `plan_output` says. Pixels outside the
    detector or in the padding are 0 and flagged 'unmeasured'."""
    ny, nx = image.shape
    m, k, n, off = plan["size"], plan["bin"], plan["out"], plan["offset"]
    w = m * k
    r0, c0 = plan["start"]
    win = np.zeros((w, w), np.float64)
    wm = np.full((w, w), np.uint32(MASK_BITS["unmeasured"]), np.uint32)
    ra, rb = max(r0, 0), min(r0 + w, ny)
    ca, cb = max(c0, 0), min(c0 + w, nx)
    if ra < rb and ca < cb:
        win[ra - r0:rb - r0, ca - c0:cb - c0] = image[ra:rb, ca:cb]
        wm[ra - r0:rb - r0, ca - c0:cb - c0] = mask[ra:rb, ca:cb]
    if k > 1:
        win = win.reshape(m, k, m, k).sum(axis=(1, 3))
        wm = np.bitwise_or.reduce(np.bitwise_or.reduce(wm.reshape(m, k, m, k), axis=3), axis=1)
    out = np.zeros((n, n), np.float64)
    om = np.full((n, n), np.uint32(MASK_BITS["unmeasured"]), np.uint32)
    out[off:off + m, off:off + m] = win
    om[off:off + m, off:off + m] = wm
    return out, om


# --------------------------------------------------------------------------- the whole chain


def parse_centre(text: str | None) -> tuple[float, float] | None:
    """'auto' (or None) -> None; 'ROW,COL' -> floats."""
    if text is None or text.strip().lower() == "auto":
        return None
    vals = masking.parse_numbers(text, 2, "--centre")
    return float(vals[0]), float(vals[1])


@dataclasses.dataclass
class Result:
    """What `preprocess` produces: the pattern, optional half-data sets, and a report dict."""

    pattern: Pattern
    halves: tuple[Pattern, Pattern] | None
    report: dict[str, Any]
    parameters: dict[str, Any]


def preprocess(raw: str | Sequence[str], *, energy_kev: float | None = None, distance: float | None = None,
               pixel: float | tuple[float, float] | None = None, centre: tuple[float, float] | None = None, crop: int | None = None, binning: int = 1,
               pad: int | None = None, dark: Sequence[str] | None = None, flat: str | None = None,
               adu_per_photon: float = 1.0, threshold: float | None = None, frames: slice | None = None,
               saturation: float | None = None, auto_mask: bool = True, detector: str | None = None,
               margin: int = 1, split_half: bool = False, seed: int | None = None,
               on_progress: Progress = _noop) -> Result:
    """Raw frames -> calibrated, masked, centred, cropped pattern in photons (see module docstring).

    `energy_kev`, `distance` and `pixel` default to what the first raw file stores (NeXus / Eiger
    master, CXI); UsageError when neither gives them. Every input is checked (shapes, NaN, negative,
    all-zero) before anything is returned; nothing here writes files. `parameters` holds every
    setting used (the geometry as energy_kev, distance_m, pixel_m), for the provenance.
    """
    from cxdi_cli.io.frames import logbook, open_frames  # noqa: PLC0415

    raw = [raw] if isinstance(raw, str) else list(raw)
    if energy_kev is None or distance is None or pixel is None:
        found = logbook(raw[0])
        energy_kev = energy_kev if energy_kev is not None else found.get("energy_kev")
        distance = distance if distance is not None else found.get("distance_m")
        pixel = pixel if pixel is not None else found.get("pixel_m")
        missing = [n for n, v in (("--energy", energy_kev), ("--distance", distance), ("--pixel", pixel))
                   if v is None]
        if missing:
            raise UsageError(f"{', '.join(missing)} needed (not found in {raw[0]})")
    if energy_kev <= 0 or distance <= 0:
        raise UsageError("--energy and --distance must be positive")
    py, px = (pixel, pixel) if np.isscalar(pixel) else tuple(pixel)  # type: ignore[misc]
    if py <= 0 or px <= 0:
        raise UsageError("--pixel must be positive")
    if adu_per_photon <= 0:
        raise UsageError("--adu-per-photon must be positive")
    with open_frames(list(raw), saturation) as stack:
        shape = stack.shape
        dark_img = load_dark(list(dark), shape) if dark else None
        flat_img, flat_bad = load_flat(flat, shape) if flat else (None, None)
        stats = accumulate(stack, frames, dark=dark_img, flat=flat_img, gain=adu_per_photon,
                           threshold=threshold, split=split_half,
                           on_progress=on_progress)
        source = stack.name
    mask = pixel_flags(stats)
    if flat_bad is not None:
        mask[flat_bad] |= np.uint32(MASK_BITS["dead"])
    total = stats.total
    noise_var = stats.n * read_noise_variance(stats)
    # pixels that never saw a count: gaps (and, for integrating detectors, their dark reads 0)
    cm = centre_and_mask(total, mask, empty=stats.raw_max <= 0.0, centre=centre, noise_var=noise_var,
                         auto_mask=auto_mask, detector=detector, margin=margin)
    mask, c, found, info = cm.mask, cm.centre, cm.found, cm.info
    if not np.any(total[measured_from_mask(mask)] > 0):
        raise DataError(f"{source}: no signal left in the unmasked pixels")
    plan = plan_output(shape, c, crop, binning, pad)
    img, omask = extract(total, mask, plan)
    good = measured_from_mask(omask)
    img = np.maximum(img, 0.0)  # dark-subtracted noise below zero: no negative photons
    wavelength = wavelength_from_kev(energy_kev)
    geometry = Geometry(wavelength=wavelength, distance=distance, pixel=(py * binning, px * binning),
                        centre=tuple(float(v) for v in plan["centre_out"]))
    pattern = Pattern(intensity=img.astype(np.float32), mask=omask, geometry=geometry, source=source)
    halves = None
    split_mode = None
    if split_half:
        if stats.n >= 2 and stats.halves is not None:
            split_mode = "even/odd frames"
            ha, hb = stats.halves
        else:
            split_mode = "binomial thinning p=0.5"
            rng = np.random.default_rng(seed)
            counts = np.rint(np.clip(total, 0, None)).astype(np.int64)
            ha = rng.binomial(counts, 0.5).astype(np.float64)
            hb = counts - ha
        halves = tuple(
            Pattern(intensity=np.maximum(extract(h, mask, plan)[0], 0.0).astype(np.float32), mask=omask.copy(),
                    geometry=dataclasses.replace(geometry), source=source) for h in (ha, hb))  # type: ignore[assignment]
    from cxdi_cli.sampling import estimate_oversampling  # noqa: PLC0415

    sigma = estimate_oversampling(img, good)
    speck = masking.central_speckle(omask, plan["centre_out"], sigma)
    params = {
        "frames_used": stats.n, "first_frame": stats.first_frame, "detector_shape": list(shape),
        "centre_method": "auto" if found else "given",
        "centre_detector_px": [float(c[0]), float(c[1])],
        "centre_residual_px": [float(v) for v in plan["residual"]],
        "window_start_px": list(plan["start"]), "crop_detector_px": plan["crop_detector_px"],
        "bin": binning, "pad": pad, "output_shape": [plan["out"], plan["out"]],
        "adu_per_photon": adu_per_photon, "photon_threshold": threshold, "dark": list(dark or []),
        "flat": flat, "saturation_adu": stats.saturation, "read_noise_var_photons2": noise_var / max(stats.n, 1),
        "split_half": split_mode, "seed": seed, "auto_mask": auto_mask,
        "beamstop": info.get("beamstop"), "energy_kev": energy_kev, "distance_m": distance, "pixel_m": pixel,
    }
    counts = mask_counts(omask)
    report = {
        "input": list(raw), "frames": stats.n, "detector_shape": list(shape),
        "centre_px": [float(c[0]), float(c[1])], "centre_residual_px": params["centre_residual_px"],
        "centre_method": params["centre_method"], "crop_px": plan["crop_detector_px"], "bin": binning,
        "output_shape": [plan["out"], plan["out"]], "output_centre_px": list(plan["centre_out"]),
        "photons_total": float(img[good].sum()), "masked_fraction": float(1.0 - good.mean()),
        "mask_counts": counts, "oversampling": sigma, "central_speckle": speck,
        "saturation_adu": stats.saturation, "beamstop": info.get("beamstop"),
        "pixel_m": [py * binning, px * binning], "split_half": split_mode,
    }
    return Result(pattern=pattern, halves=halves, report=report, parameters=params)  # type: ignore[arg-type]
