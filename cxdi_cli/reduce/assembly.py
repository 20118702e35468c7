"""Tilt series -> 3D reciprocal-space volume with exact Ewald-sphere geometry (DESIGN §4).

Each good pixel of the frame at tilt omega has its exact scattering vector q on the Ewald sphere
(`geometry.pixel_q`); the sample turned by omega about the tilt axis means the frame samples the object's
transform at R(-omega) q. The counts are divided by the pixel's solid angle relative to the central pixel,
(D/r)^3, so the volume holds |F(q)|^2 in the photons a central pixel would have counted.

Two depositions (`method`):
- "splat": every pixel's intensity is spread to its 8 neighbouring voxels with trilinear weights; the
  volume is sum(w I) / sum(w). Streams one frame at a time; memory is the volume's.
- "interp": every voxel is interpolated from the frames at the tilt where it crosses the Ewald sphere:
  cubic B-spline in each of the two frames bracketing the crossing (local Lanczos-3 / Keys kernels of
  good pixels next to masked ones), linear in omega between them. Holds the previous frame and the
  crossing list (8 bytes per crossing, about 1.5 crossings per voxel).
`assemble3d` uses "interp" by default: 5-50x more faithful shell by shell (figures in
tests/test_assemble.py).

The frames come through an iterator, so a 141 x 512 x 512 series never sits in memory as a whole.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterable

import numpy as np

from cxdi_cli import geometry as geo
from cxdi_cli.model import MASK_BITS, DataError, Geometry, InputError, Pattern, UsageError, mask_counts

METHODS = ("splat", "interp")
#: Pixels a cubic B-spline sample keeps from any masked pixel: the prefilter's influence decays by
#: 0.27 per pixel, so a filled shadow biases a sample 4 pixels away by < 0.6 % of the fill error.
SPLINE_CLEARANCE = 4


@dataclasses.dataclass
class TiltGeometry:
    """Detector and tilt geometry: SI lengths, pixel (y, x), beam centre (row, col) in detector pixels.

    The effective sample rotation of a frame recorded at `omega` (degrees) is
    omega_sign * omega + omega_offset about lab `axis` ("y": DESIGN §4 default, or "x").
    """

    wavelength: float
    distance: float
    pixel: tuple[float, float]
    centre: tuple[float, float]
    axis: str = "y"
    omega_sign: float = 1.0
    omega_offset: float = 0.0

    def effective(self, omega_deg: float | np.ndarray) -> np.ndarray:
        """Effective rotation angle(s) in radians."""
        return np.deg2rad(self.omega_sign * np.asarray(omega_deg, float) + self.omega_offset)

    def q_step(self) -> float:
        """The detector's q pitch at the centre along x, p_x/(lambda D) (`model.Geometry.q_step`)."""
        return Geometry(wavelength=self.wavelength, distance=self.distance, pixel=self.pixel).q_step(2)[1]


def detector_q(geom: TiltGeometry, shape: tuple[int, int], flat: bool = False) -> np.ndarray:
    """Lab-frame q (3, ny, nx) of every pixel: exact Ewald sphere, or (flat=True) the flat-detector
    approximation q = (x, y, 0) / (lambda D) that ignores curvature."""
    if not flat:
        return geo.pixel_q(shape, geom.centre, geom.distance, geom.pixel, geom.wavelength)
    y, x = geo.detector_xy(shape, geom.centre, geom.pixel)
    return np.stack([x, y, np.zeros_like(x)]) / (geom.wavelength * geom.distance)


def check_angles(angles: np.ndarray, n_frames: int | None = None, source: str = "angles",
                 error: type[Exception] = DataError) -> np.ndarray:
    """Angles as float64; refuses a count that does not match the frames, and non-monotonic or
    duplicated lists (`error`, naming `source`: DataError for a file, UsageError for typed angles)."""
    a = np.asarray(angles, dtype=np.float64).ravel()
    if a.size < 2:
        raise error(f"{source}: need at least two tilt angles, got {a.size}")
    if not np.all(np.isfinite(a)):
        raise error(f"{source}: angles hold NaN or infinite values")
    if n_frames is not None and a.size != n_frames:
        raise error(f"{source}: {a.size} angles for {n_frames} frames")
    d = np.diff(a)
    if np.any(d == 0):
        k = int(np.flatnonzero(d == 0)[0])
        raise error(f"{source}: duplicated angle {a[k]:g} deg (frames {k} and {k + 1})")
    if not (np.all(d > 0) or np.all(d < 0)):
        k = int(np.flatnonzero(np.sign(d) != np.sign(d[0]))[0])
        raise error(f"{source}: angles are not monotonic (frame {k + 1}: {a[k + 1]:g} deg after {a[k]:g} deg)")
    if np.ptp(a) > 360:
        raise error(f"{source}: angles span {np.ptp(a):g} deg, more than a full turn")
    return a


@dataclasses.dataclass
class AssemblyResult:
    """The assembled volume (a Pattern with weight in extra) and the figures a user wants to see."""

    pattern: Pattern
    stats: dict[str, Any]


class VolumeAssembler:
    """Accumulate frames one at a time into an N^3 volume (q = 0 at N // 2, pitch `q_pitch`).

    Use: `a = VolumeAssembler(geom, shape, angles, size)`; `a.add(k, frame, good)` for k in order;
    `a.finish()`. Frames are float photons (already calibrated); `good` is a bool mask of usable pixels.
    """

    def __init__(self, geom: TiltGeometry, detector_shape: tuple[int, int], angles: np.ndarray, size: int,
                 q_pitch: float | None = None, method: str = "splat", flat: bool = False) -> None:
        if method not in METHODS:
            raise UsageError(f"deposition method {method!r}: expected one of {', '.join(METHODS)}")
        if size < 4:
            raise UsageError(f"volume size {size}: need at least 4 voxels")
        self.geom = geom
        self.shape = tuple(int(v) for v in detector_shape)
        self.angles = np.asarray(angles, float)
        self.n = int(size)
        self.c = self.n // 2
        self.dq = float(q_pitch) if q_pitch else geom.q_step()
        self.method = method
        self.flat = flat
        self.qdet = detector_q(geom, self.shape, flat).reshape(3, -1)
        self.solid = geo.solid_angle(self.shape, geom.centre, geom.distance, geom.pixel).reshape(-1)
        n3 = self.n ** 3
        self.sum = np.zeros(n3, np.float64 if n3 <= 256 ** 3 else np.float32)
        self.wsum = np.zeros(n3, self.sum.dtype)
        self._prev: tuple[int, np.ndarray, np.ndarray, Any] | None = None
        if method == "interp":
            self._prepare_crossings()

    # ------------------------------------------------------------------ splatting
    def _splat(self, omega: float, values: np.ndarray, sel: np.ndarray) -> None:
        n, c = self.n, self.c
        rot = geo.rotation(self.geom.axis, -float(self.geom.effective(omega)))
        q = rot @ self.qdet[:, sel]
        u = q / self.dq + c                              # continuous voxel coordinates (x, y, z)
        inside = np.all((u >= 0) & (u <= n - 1), axis=0)
        u = u[:, inside]
        vals = values[inside]
        base = np.minimum(np.floor(u).astype(np.int64), n - 2)
        f = u - base
        ix, iy, iz = base
        fx, fy, fz = f
        idx, wts = [], []
        for dz in (0, 1):
            wz = fz if dz else 1.0 - fz
            for dy in (0, 1):
                wy = fy if dy else 1.0 - fy
                wzy = wz * wy
                for dx in (0, 1):
                    wts.append(wzy * (fx if dx else 1.0 - fx))
                    idx.append(((iz + dz) * n + (iy + dy)) * n + (ix + dx))
        # one accumulation over the 8 corners, in the same order as corner by corner
        idx_all, w_all = np.concatenate(idx), np.concatenate(wts)
        np.add.at(self.sum, idx_all, w_all * np.tile(vals, 8))
        np.add.at(self.wsum, idx_all, w_all)

    # ------------------------------------------------------------------ per-voxel interpolation
    def _prepare_crossings(self) -> None:
        """For every voxel, the tilt(s) at which it lies on the Ewald sphere, bucketed by frame interval.

        Computed slab by slab; stores int32 voxel indices and float32 fractions (about 8 bytes per crossing)."""
        if self.flat:
            raise UsageError("the flat-detector approximation has no Ewald crossing; use method 'splat'")
        n = self.n
        order = np.argsort(self.angles)
        sa = self.angles[order]
        lo, hi = sa[0], sa[-1]
        plane = n * n
        zs = max(1, (1 << 21) // plane)
        vox_l, t_l, j_l = [], [], []
        for z0 in range(0, n, zs):
            idx = np.arange(z0 * plane, min(n, z0 + zs) * plane, dtype=np.int64)
            qx, qy, qz = self._voxel_q(idx)
            q2 = qx * qx + qy * qy + qz * qz
            # lab qz after rotation R(w) is a cos w + b sin w; on the Ewald sphere |q|^2 + 2 qz_lab / lambda = 0
            a = qz
            b = -qx if self.geom.axis == "y" else qy
            rho = np.hypot(a, b)
            with np.errstate(divide="ignore", invalid="ignore"):
                cosv = -q2 * self.geom.wavelength / (2.0 * rho)
            ok = (rho > 0) & (np.abs(cosv) <= 1.0)
            psi = np.arctan2(b, a)
            acc = np.arccos(np.clip(cosv, -1, 1))
            for sgn in (1.0, -1.0):
                om = (np.rad2deg(psi + sgn * acc) - self.geom.omega_offset) / self.geom.omega_sign
                om = (om - lo) % 360.0 + lo               # into the measured range, modulo a turn
                sel = ok & (om <= hi)
                om = om[sel]
                j = np.clip(np.searchsorted(sa, om, side="right") - 1, 0, sa.size - 2)
                vox_l.append(idx[sel].astype(np.int32 if n ** 3 < 2 ** 31 else np.int64))
                t_l.append(((om - sa[j]) / (sa[j + 1] - sa[j])).astype(np.float32))
                j_l.append(j.astype(np.int16 if sa.size < 2 ** 15 else np.int32))
        j = np.concatenate(j_l)
        del j_l
        srt = np.argsort(j, kind="stable")                # radix sort for small integers
        self._cx_vox = np.concatenate(vox_l)[srt]
        del vox_l
        self._cx_t = np.concatenate(t_l)[srt]
        del t_l, srt
        self._cx_bounds = np.searchsorted(np.sort(j, kind="stable"), np.arange(sa.size))
        self._order = order
        self._frame_slot = {int(f): s for s, f in enumerate(order)}

    def _voxel_q(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample-frame q (qx, qy, qz) of flat voxel indices."""
        n, c = self.n, self.c
        iz, rem = np.divmod(idx, n * n)
        iy, ix = np.divmod(rem, n)
        return (ix - c) * self.dq, (iy - c) * self.dq, (iz - c) * self.dq

    def _sample_frame(self, values: np.ndarray, good: np.ndarray, spline: tuple[np.ndarray, np.ndarray],
                      omega: float, qs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Value of a frame at the detector point where each voxel's rotated q projects, and whether it
        could be had. The frames are oversampled, so a cubic follows the speckle far better than bilinear:
        cubic B-spline (its prefilter is global: used only SPLINE_CLEARANCE pixels away from any masked
        pixel and the detector edge), else separable Lanczos-3 then Keys kernels whose taps are all good
        pixels (a masked pixel never leaks in). `qs` (3, k): the voxels' sample-frame q."""
        rot = geo.rotation(self.geom.axis, float(self.geom.effective(omega)))
        ql = rot @ qs
        lam, d = self.geom.wavelength, self.geom.distance
        den = 1.0 + lam * ql[2]
        col = self.geom.centre[1] + d * lam * ql[0] / den / self.geom.pixel[1]
        row = self.geom.centre[0] + d * lam * ql[1] / den / self.geom.pixel[0]
        ny, nx = self.shape
        r0 = np.floor(row).astype(np.int64)
        c0 = np.floor(col).astype(np.int64)
        fr, fc = row - r0, col - c0
        img = values.reshape(self.shape)
        gimg = good.reshape(self.shape)
        val = np.zeros(qs.shape[1])
        ok = np.zeros(qs.shape[1], bool)
        from scipy import ndimage  # noqa: PLC0415

        coef, clear = spline
        sel = np.flatnonzero((r0 >= 0) & (r0 < ny - 1) & (c0 >= 0) & (c0 < nx - 1))
        sel = sel[clear[r0[sel], c0[sel]] & clear[r0[sel] + 1, c0[sel] + 1]]
        if sel.size:
            val[sel] = ndimage.map_coordinates(coef, [row[sel], col[sel]], order=3, mode="nearest",
                                               prefilter=False)
            ok[sel] = True
        for kern, half in ((_lanczos3, 3), (_keys, 2)):
            sel = np.flatnonzero(~ok)
            if not sel.size:
                break
            taps = range(1 - half, half + 1)
            wr = np.array([kern(fr[sel] - t) for t in taps])
            wc = np.array([kern(fc[sel] - t) for t in taps])
            wr /= wr.sum(axis=0)                 # partition of unity (Lanczos sums to 1 only nearly)
            wc /= wc.sum(axis=0)
            acc = np.zeros(sel.size)
            allgood = np.ones(sel.size, bool)
            for a_, tr in enumerate(taps):
                rr = r0[sel] + tr
                for b_, tc in enumerate(taps):
                    cc = c0[sel] + tc
                    inb = (rr >= 0) & (rr < ny) & (cc >= 0) & (cc < nx)
                    rr_, cc_ = np.where(inb, rr, 0), np.where(inb, cc, 0)
                    allgood &= inb & gimg[rr_, cc_]
                    acc += wr[a_] * wc[b_] * img[rr_, cc_]
            val[sel[allgood]] = acc[allgood]
            ok[sel[allgood]] = True
        return np.maximum(val, 0.0), ok

    def _spline(self, values: np.ndarray, good: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cubic B-spline coefficients of a frame (masked pixels filled smoothly first) and the map of
        pixels far enough from masked ones and the detector edge for the spline to be trusted."""
        from scipy import ndimage  # noqa: PLC0415

        from cxdi_cli.reduce.masking import fill_bad  # noqa: PLC0415

        img = values.reshape(self.shape)
        bad = ~good.reshape(self.shape)
        coef = ndimage.spline_filter(fill_bad(img, bad), order=3, mode="nearest")
        k = SPLINE_CLEARANCE
        clear = ~ndimage.binary_dilation(np.pad(bad, k, constant_values=True),
                                         structure=np.ones((2 * k + 1, 2 * k + 1), bool))[k:-k, k:-k]
        return coef, clear

    def _interp_frame(self, index: int, values: np.ndarray, good: np.ndarray) -> None:
        """Frames arrive in acquisition order over monotonic angles, so consecutive frames bracket one
        interval of sorted angles; only the previous frame is held."""
        slot = self._frame_slot[index]
        prev = self._prev
        self._prev = (slot, values, good, self._spline(values, good))
        if prev is None:
            return
        if abs(prev[0] - slot) != 1:
            raise DataError(f"frame {index}: frames must arrive in the order of their (monotonic) angles")
        lo, hi = (prev, self._prev) if prev[0] < slot else (self._prev, prev)
        j = lo[0]
        s, e = self._cx_bounds[j], (self._cx_bounds[j + 1] if j + 1 < self._cx_bounds.size else None)
        vox, t = self._cx_vox[s:e], self._cx_t[s:e]
        if vox.size:
            qs = np.stack(self._voxel_q(vox.astype(np.int64)))
            va, oka = self._sample_frame(lo[1], lo[2], lo[3], self.angles[self._order[j]], qs)
            vb, okb = self._sample_frame(hi[1], hi[2], hi[3], self.angles[self._order[j + 1]], qs)
            wa, wb = (1 - t) * oka, t * okb
            wt = wa + wb
            use = wt >= 0.5
            np.add.at(self.sum, vox[use], ((wa * va + wb * vb) / np.maximum(wt, 1e-12))[use])
            np.add.at(self.wsum, vox[use], 1.0)

    # ------------------------------------------------------------------ public
    def add(self, index: int, frame: np.ndarray, good: np.ndarray) -> None:
        """Deposit frame `index` (photons, detector shape) with its good-pixel mask."""
        frame = np.asarray(frame)
        if frame.shape != self.shape:
            raise DataError(f"frame {index}: shape {frame.shape} differs from the first frame's {self.shape}")
        good = np.asarray(good, bool).reshape(-1) & np.isfinite(frame.reshape(-1))
        values = np.where(good, frame.reshape(-1), 0.0) / self.solid
        if self.method == "splat":
            self._splat(float(self.angles[index]), values[good], good)
        else:
            self._interp_frame(index, values, good)

    def finish(self, friedel: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Normalise; flag unmeasured voxels; optionally fill them from their Friedel mates.

        Returns (intensity float32, mask uint32, weight float32, stats)."""
        n = self.n
        shape3 = (n, n, n)
        wsum = self.wsum.reshape(shape3)
        measured = wsum > 1e-6
        vol = np.zeros(shape3, np.float32)
        np.divide(self.sum.reshape(shape3), wsum, out=vol, where=measured, casting="unsafe")
        mask = np.where(measured, np.uint32(0), np.uint32(MASK_BITS["unmeasured"])).astype(np.uint32)
        n_measured = int(measured.sum())
        filled = 0
        if friedel:
            mate_vol, mate_ok = _friedel_mate(vol), _friedel_mate(measured)
            if n % 2 == 0:                    # index 0 has no mate on an even grid
                mate_ok[0, :, :] = mate_ok[:, 0, :] = mate_ok[:, :, 0] = False
            fill = ~measured & mate_ok
            vol[fill] = mate_vol[fill]
            mask[fill] = np.uint32(MASK_BITS["friedel"])
            filled = int(fill.sum())
        stats = {"measured_fraction": n_measured / n ** 3, "friedel_filled_fraction": filled / n ** 3,
                 "data_fraction": (n_measured + filled) / n ** 3}
        return vol, mask, wsum.astype(np.float32), stats


def _lanczos3(t: np.ndarray) -> np.ndarray:
    """Lanczos kernel with 3 lobes at signed distance t (pixels)."""
    t = np.abs(t)
    return np.where(t < 3, np.sinc(t) * np.sinc(t / 3), 0.0)


def _keys(t: np.ndarray) -> np.ndarray:
    """Keys cubic-convolution kernel (a = -1/2) at signed distance t (pixels)."""
    t = np.abs(t)
    return np.where(t <= 1, (1.5 * t - 2.5) * t * t + 1,
                    np.where(t < 2, ((-0.5 * t + 2.5) * t - 4) * t + 2, 0.0))


def _friedel_mate(a: np.ndarray) -> np.ndarray:
    """b[i] = a[2c - i] on every axis (c = N // 2); wraps index 0 on even grids (callers mask it)."""
    out = a[::-1, ::-1, ::-1]
    if a.shape[0] % 2 == 0:
        out = np.roll(out, 1, axis=(0, 1, 2))
    return out.copy()


def curvature_report(geom: TiltGeometry, shape: tuple[int, int], good: np.ndarray, n: int,
                     dq: float) -> dict[str, float]:
    """Ewald curvature at the detector edge in voxels: max |qz|/dq over the good pixels whose in-plane q lies
    within the grid's inscribed circle (radius N//2 voxels), and the largest error a flat-detector
    approximation would make there (|q - q_flat| / dq); the same over every pixel that reaches the grid
    (corners included) as `corner_curvature_voxels`."""
    q = detector_q(geom, shape).reshape(3, -1)
    qf = detector_q(geom, shape, flat=True).reshape(3, -1)
    g = good.reshape(-1)
    circle = g & (np.hypot(q[0], q[1]) / dq <= n // 2)
    cube = g & np.all(np.abs(q[:2]) / dq <= n // 2, axis=0)
    if not cube.any():
        raise DataError("no good pixel of the detector falls inside the output volume; check --centre and --size")
    circle = circle if circle.any() else cube
    return {"edge_curvature_voxels": float(np.max(np.abs(q[2, circle])) / dq),
            "flat_error_voxels": float(np.max(np.linalg.norm(q[:, circle] - qf[:, circle], axis=0)) / dq),
            "corner_curvature_voxels": float(np.max(np.abs(q[2, cube])) / dq)}


def missing_wedge_deg(angles: np.ndarray) -> float:
    """Angular range not covered by the tilt series (a rotation of 180 deg covers all of q space)."""
    return float(max(0.0, 180.0 - np.ptp(angles)))


def assemble(frames: Iterable[tuple[np.ndarray, np.ndarray]], angles: np.ndarray, geom: TiltGeometry,
             detector_shape: tuple[int, int], *, size: int, bin: int = 1, method: str = "interp",
             friedel: bool = True, flat: bool = False,
             on_progress: Callable[..., None] | None = None) -> AssemblyResult:
    """Assemble frames (an iterable of (photons, good-pixel mask), in the order of `angles`) into a volume.

    size: voxels per axis of the output grid; bin: the voxel pitch is bin * p/(lambda D) (the detector's q
    pitch at the centre, coarsened). The volume has q = 0 at size // 2, the mask flags unmeasured voxels
    ("unmeasured") and Friedel-filled ones ("friedel"), and `pattern.extra["weight"]` holds the summed
    deposition weight per voxel (splat: trilinear weights; interp: number of Ewald crossings used).
    """
    if bin < 1:
        raise UsageError(f"--bin {bin}: must be a positive integer")
    angles = np.asarray(angles, float)
    dq = bin * geom.q_step()
    acc = VolumeAssembler(geom, detector_shape, angles, size, q_pitch=dq, method=method, flat=flat)
    good_any = np.zeros(detector_shape, bool)
    k = -1
    for k, (frame, good) in enumerate(frames):
        if k >= angles.size:
            raise DataError(f"more frames than angles ({angles.size})")
        acc.add(k, frame, good)
        good_any |= np.asarray(good, bool)
        if on_progress is not None:
            on_progress(1)
    if k + 1 != angles.size:
        raise DataError(f"{angles.size} angles for {k + 1} frames")
    return _result(acc, good_any, angles, geom, detector_shape, size, dq, method, friedel, flat)


def _result(acc: VolumeAssembler, good_any: np.ndarray, angles: np.ndarray, geom: TiltGeometry,
            detector_shape: tuple[int, int], size: int, dq: float, method: str, friedel: bool,
            flat: bool) -> AssemblyResult:
    """The volume of an accumulator that has seen every frame, with its figures."""
    vol, mask, weight, stats = acc.finish(friedel=friedel)
    if stats["measured_fraction"] == 0:
        raise DataError("no pixel reached the output volume; check the geometry (--centre, --distance, --pixel)")
    stats.update(curvature_report(geom, detector_shape, good_any, size, dq))
    stats.update({"missing_wedge_deg": missing_wedge_deg(angles), "angle_range_deg": [float(angles.min()),
                  float(angles.max())], "n_frames": int(angles.size), "size": size, "q_pitch_per_m": dq,
                  "real_pixel_m": 1.0 / (size * dq), "method": method, "flat": flat})
    geometry = Geometry(wavelength=geom.wavelength, distance=geom.distance, pixel=geom.pixel, centre=None,
                        q_pitch=(dq, dq, dq))
    pattern = Pattern(intensity=vol, mask=mask, geometry=geometry, extra={"weight": weight})
    return AssemblyResult(pattern=pattern, stats=stats)


# --------------------------------------------------------------------------- files -> volume


def read_angles(spec: str, n_frames: int | None = None) -> np.ndarray:
    """Tilt angles (degrees) from a comma list (`-60,-59.5,...`), `START:STOP:STEP` (STOP included when on
    the grid), `file.h5::/path`, or a file (text: one angle per line; TIFF, npy, EDF, HDF5); checked
    against the frame count and for monotonic, distinct values."""
    import os  # noqa: PLC0415
    import re  # noqa: PLC0415

    from cxdi_cli import io  # noqa: PLC0415

    spec = str(spec).strip()
    name, dset = io.split_url(spec)
    number = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
    if dset is None and not os.path.exists(name):
        if re.fullmatch(rf"\s*{number}\s*(?:,\s*{number}\s*)+,?\s*", spec):
            values = [float(v) for v in spec.split(",") if v.strip()]
            return check_angles(np.asarray(values), n_frames, f"--angles {spec}", UsageError)
        if spec.count(":") == 2:
            try:
                start, stop, step = (float(v) for v in spec.split(":"))
            except ValueError:
                raise UsageError(f"--angles {spec!r}: START:STOP:STEP must be three numbers") from None
            if not all(np.isfinite((start, stop, step))):
                raise UsageError(f"--angles {spec!r}: START, STOP and STEP must be finite")
            if step == 0 or (stop - start) / step < 0:
                raise UsageError(f"--angles {spec!r}: STEP must move from START towards STOP")
            span = (stop - start) / step
            if span > 10_000_000:
                raise UsageError(f"--angles {spec!r}: {span:.3g} angles; STEP too small?")
            count = int(np.floor(span + 1e-9)) + 1
            return check_angles(start + step * np.arange(count), n_frames, f"--angles {spec}", UsageError)
        if name != "-":
            raise UsageError(f"--angles {spec!r}: no such file, and not a comma list (-60,-59.5,...), "
                             "START:STOP:STEP or FILE::/dataset")
    if dset is not None or io.sniff(io.local_input(name)) != "unknown":
        arr = io.read_array(spec, "angles")
    else:
        try:
            if os.path.getsize(io.local_input(name)) > 256 << 20:
                raise InputError(f"{name}: {os.path.getsize(name)} bytes is too large for a list of angles")
            arr = np.loadtxt(io.local_input(name), ndmin=1, comments="#", delimiter=None)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{name}: cannot read angles ({str(exc).splitlines()[0]})") from None
    return check_angles(np.ravel(arr), n_frames, name)


def assemble_files(specs: list[str], angles_spec: str, *, energy_kev: float, distance: float, pixel: float,
                   centre: tuple[float, float] | None = None, size: int | None = None, bin: int = 1,
                   axis: str = "y", omega_sign: float = 1.0, omega_offset: float = 0.0, friedel: bool = True,
                   method: str = "interp", mask: str | None = None, dark: list[str] | None = None,
                   flat_field: str | None = None, adu_per_photon: float = 1.0,
                   saturation: float | None = None, auto_mask: bool = True, detector: str | None = None,
                   on_progress: Callable[..., None] | None = None, executor: Any = None) -> AssemblyResult:
    """Raw tilt frames on disk -> assembled volume, with the readers, calibration, centre finding and
    detector masking of `preprocess` (`io.frames`, `preprocess`, `masking`). `bin` sums K x K detector
    pixels before the assembly (voxel pitch K p/(lambda D), photons per binned pixel).

    Everything is validated (frame shapes, angle count and order, options) before the frames are read.
    Pass 1 sums the calibrated frames: automatic beam centre, and a detector mask from the sum (user mask,
    flat-field holes, negative markers, module gaps, isolated hot/dead pixels, beamstop and rod). Pass 2
    streams the frames into the volume, dropping in each frame the pixels at or above the saturation level;
    with an `executor` (`cxdi_cli.executor`: local processes, Dask) pass 2 runs as chunks of frames on its
    workers, which read the files themselves (`reduce.chunks`).
    photons = (raw - dark) / flat / adu_per_photon.
    """
    from cxdi_cli import io  # noqa: PLC0415
    from cxdi_cli.reduce import centring, chunks, masking, pattern as preprocess  # noqa: PLC0415
    from cxdi_cli.io.frames import open_frames  # noqa: PLC0415
    from cxdi_cli.model import measured_from_mask, wavelength_from_kev  # noqa: PLC0415

    if energy_kev <= 0 or distance <= 0 or pixel <= 0:
        raise UsageError("--energy, --distance and --pixel must be positive")
    if omega_sign not in (1.0, -1.0):
        raise UsageError(f"--omega-sign {omega_sign:g}: expected +1 or -1")
    if axis not in ("x", "y"):
        raise UsageError(f"--axis {axis!r}: expected x or y")
    if method not in METHODS:
        raise UsageError(f"--method {method!r}: expected one of {', '.join(METHODS)}")
    if adu_per_photon <= 0:
        raise UsageError("--adu-per-photon must be positive")
    if bin < 1:
        raise UsageError(f"--bin {bin}: must be a positive integer")
    progress = on_progress or (lambda *a, **k: None)
    with open_frames(list(specs), saturation) as stack:
        shape = stack.shape
        if stack.n_frames < 2:
            raise DataError(f"{stack.name}: {stack.n_frames} frame, not a tilt series: assembly needs frames "
                            "at two or more tilts (one 2D pattern goes to preprocess)")
        angles = read_angles(angles_spec, stack.n_frames)
        progress(advance=0, total=2 * stack.n_frames)
        bits = np.zeros(shape, np.uint32)
        if mask is not None:
            user = masking.user_mask(io.read_array(mask, "mask"), shape, mask, "the frames")
            bits[user] |= np.uint32(MASK_BITS["user"])
        dark_img = preprocess.load_dark(list(dark), shape) if dark else None
        flat_img, flat_bad = preprocess.load_flat(flat_field, shape) if flat_field else (None, None)
        if flat_bad is not None:
            bits[flat_bad] |= np.uint32(MASK_BITS["dead"])
        # pass 1: the sum of the series (centre, detector mask); checks NaN / negative / all-zero frames
        stats = preprocess.accumulate(stack, dark=dark_img, flat=flat_img, gain=adu_per_photon,
                                      on_progress=lambda advance=0, total=None, **k: progress(advance=advance))
        level = stats.saturation
        bits[stats.marker] |= np.uint32(MASK_BITS["invalid"])
        # the centring and masking of `preprocess` (`centring.centre_and_mask`); the frames of a tilt
        # series differ by more than noise, so their spread gives no read-noise variance: 0
        cm = centring.centre_and_mask(stats.total, bits, empty=stats.raw_max <= 0.0, centre=centre,
                                      auto_mask=auto_mask, detector=detector)
        bits, c, found, info = cm.mask, cm.centre, cm.found, cm.info
        if not (0 <= c[0] < shape[0] and 0 <= c[1] < shape[1]):
            raise DataError(f"beam centre {c[0]:g},{c[1]:g} is off the {shape[0]}x{shape[1]} detector")
        static_good = measured_from_mask(bits)
        # --bin K: K x K detector pixels summed into one (photons add; a binned pixel is good when all its
        # pixels are), so the voxel pitch K p/(lambda D) matches the binned frames' pitch at the centre
        kb = int(bin)
        bshape = (shape[0] // kb, shape[1] // kb)
        if min(bshape) < 8:
            raise UsageError(f"--bin {kb}: leaves fewer than 8 pixels across the {shape[0]}x{shape[1]} detector")
        bcentre = ((c[0] + 0.5) / kb - 0.5, (c[1] + 0.5) / kb - 0.5)
        geom = TiltGeometry(wavelength=wavelength_from_kev(energy_kev), distance=distance,
                            pixel=(pixel * kb, pixel * kb), centre=(float(bcentre[0]), float(bcentre[1])), axis=axis,
                            omega_sign=omega_sign, omega_offset=omega_offset)
        if size is None:
            from cxdi_cli.geometry import default_crop  # noqa: PLC0415

            size = max(4, default_crop(bshape, geom.centre))
        # pass 2: frames -> volume, streamed here or in chunks on the executor's workers (`reduce.chunks`)
        dq = geom.q_step()
        source = chunks.FrameSource(specs=list(specs), good=static_good, saturation=saturation, level=level,
                                    dark=dark_img, flat=flat_img, gain=adu_per_photon, bin=kb)
        job = chunks.ChunkJob(source, functools.partial(VolumeAssembler, geom, bshape, angles, size, q_pitch=dq,
                                                        method=method), overlap=1 if method == "interp" else 0)
        merge = functools.partial(VolumeAssembler, geom, bshape, angles, size, q_pitch=dq, method="splat")
        acc, good_any, saturated_frames = chunks.accumulate(stack, job, executor=executor, merge=merge,
                                                            on_progress=on_progress)
        result = _result(acc, good_any, angles, geom, bshape, size, dq, method, friedel, False)
    vol = result.pattern.intensity
    np.maximum(vol, 0.0, out=vol)            # dark-subtracted noise: no negative photons
    result.stats.update({"beam_centre": [float(c[0]), float(c[1])], "centre_method": "auto" if found else "given",
                         "detector_shape": list(shape), "axis": axis, "omega_sign": omega_sign,
                         "omega_offset_deg": omega_offset, "bin": bin, "saturation_adu": level,
                         "frames_with_saturation": saturated_frames,
                         "detector_mask_counts": {k: v for k, v in mask_counts(bits).items() if v},
                         "beamstop": info.get("beamstop")})
    return result
