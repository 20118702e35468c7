"""Random orientations -> 3D intensity volume by expand-maximize-compress (EMC).

Each frame of a tumbling specimen samples the intensity I(q) on the Ewald sphere turned by an unknown
rotation R: the frame's pixel j (exact lab q_j, `geometry.pixel_q`) sees I(R^T q_j), times the pixel's
relative solid angle (D/r)^3 and the frame's fluence phi. EMC (Loh & Elser 2009, Phys. Rev. E 79,
026705; photon-sparse form with a per-frame scale: Ayyer et al. 2016, J. Appl. Cryst. 49, 1320) iterates

- expand: slice the current model at every rotation r of a quasi-uniform grid, W_rj = s_j I(R_r^T q_j)
  (trilinear interpolation on the N^3 grid);
- maximize: the Poisson log-likelihood of frame f at rotation r, L_rf = sum_j K_fj log W_rj - phi_f sum_j W_rj
  (one matrix product per chunk of rotations and frames), and the responsibilities
  P(r|f) = w_r exp(beta L_rf) / sum_r' (...) (w_r: the grid's weight; beta <= 1 tempers the likelihood
  while the model is still poor, raised on a schedule: deterministic annealing); phi_f is re-estimated
  as sum_j K_fj / sum_r P(r|f) sum_j W_rj;
- compress: merge sum_f P(r|f) K_fj back into the volume with the same trilinear weights, divided by the
  merged sum_f P(r|f) phi_f s_j: the new model, symmetrised by Friedel's law.

The frame loop is cut into chunks; `frame_chunk` is a pure task (`executor.Executor.map`) returning
partial sums of the new volume, so memory is bounded by one chunk's rotation x frame matrix and the
chunks can run in local processes or on Dask workers. The volume is written as `assemble3d` writes its
volumes (mask bits 'unmeasured' outside the reached ball, per-voxel weight), so `phase` reads it as is.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
from typing import Any, Callable, Iterable

import numpy as np

from cxdi_cli import geometry as geo
from cxdi_cli.model import MASK_BITS, ComputeError, DataError, Geometry, Pattern, UsageError, mask_counts

# --------------------------------------------------------------------------- numba, with numpy twins

try:
    if os.environ.get("CXDI_NO_NUMBA") == "1":
        raise ImportError("CXDI_NO_NUMBA=1")
    import numba
except Exception:  # noqa: BLE001 - no numba: the numpy twins run
    numba = None

#: largest refinement level accepted (level 30 is 1.35 million rotations)
MAX_LEVEL = 40
PHI = (1.0 + math.sqrt(5.0)) / 2.0


# --------------------------------------------------------------------------- quaternions and the grid


def quaternion_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) acting on (x, y, z) of unit quaternions (..., 4) = (w, x, y, z)."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a b (broadcast over leading axes): the rotation b first, then a."""
    a, b = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float))
    w1, x1, y1, z1 = np.moveaxis(a, -1, 0)
    w2, x2, y2, z2 = np.moveaxis(b, -1, 0)
    return np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], -1)


def quaternion_conjugate(q: np.ndarray) -> np.ndarray:
    """The inverse rotation of unit quaternions (..., 4)."""
    return np.asarray(q, float) * np.array([1.0, -1.0, -1.0, -1.0])


def rotation_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (rad) of the rotation taking a to b, for unit quaternions (q and -q are the same rotation)."""
    d = np.abs(np.sum(np.asarray(a, float) * np.asarray(b, float), axis=-1))
    return 2.0 * np.arccos(np.clip(d, 0.0, 1.0))


def random_quaternions(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` rotations drawn uniformly (Haar measure) as unit quaternions (w >= 0)."""
    q = rng.normal(size=(int(n), 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    return q


def _cell600() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 600-cell: its 120 unit vertices (a group of quaternions) and its 720 edges, 1200 triangles and
    600 tetrahedra as index arrays (neighbours are 36 degrees apart: dot product phi/2)."""
    verts = [v for i in range(4) for s in (1.0, -1.0) for v in [np.eye(4)[i] * s]]
    verts += [np.array(s, float) / 2 for s in itertools.product((1, -1), repeat=4)]
    base = (PHI / 2, 0.5, 1 / (2 * PHI), 0.0)
    for perm in itertools.permutations(range(4)):
        inv = sum(1 for i in range(4) for j in range(i + 1, 4) if perm[i] > perm[j])
        if inv % 2:
            continue                                  # even permutations only
        for signs in itertools.product((1, -1), repeat=3):
            v = np.zeros(4)
            for k in range(3):
                v[perm[k]] = base[k] * signs[k]
            verts.append(v)
    v = np.array(verts)
    adj = np.abs(v @ v.T - PHI / 2) < 1e-9
    edges = np.argwhere(np.triu(adj))
    faces = [(i, j, k) for i, j in edges for k in np.flatnonzero(adj[i] & adj[j]) if k > j]
    cells = [(i, j, k, m) for i, j, k in faces for m in np.flatnonzero(adj[i] & adj[j] & adj[k]) if m > k]
    return v, edges, np.array(faces), np.array(cells)


def _compositions(n: int, parts: int) -> np.ndarray:
    """All ways to write n as an ordered sum of `parts` positive integers, as rows."""
    if parts == 1:
        return np.array([[n]])
    rows = [[a] + list(rest) for a in range(1, n - parts + 2) for rest in _compositions(n - a, parts - 1)]
    return np.array(rows, dtype=np.int64).reshape(-1, parts)


def rotation_count(level: int) -> int:
    """Rotations in the grid of refinement `level`: 10 (n + 5 n^3) (Loh & Elser 2009)."""
    return 10 * (level + 5 * level ** 3)


def grid_step(level: int) -> float:
    """The grid's angular step (rad): the rotation between neighbours along a 600-cell edge cut into `level`
    parts, 2 (pi / 5) / level (0.63 / level in quaternion arc, 1.26 / level as a rotation)."""
    return 2.0 * (math.pi / 5.0) / level


def rotation_grid(level: int) -> tuple[np.ndarray, np.ndarray]:
    """Quasi-uniform rotations: the 600-cell's edges, faces and cells subdivided `level` times, projected onto
    the unit sphere of quaternions, q and -q counted once. Returns (quaternions (M, 4), weights (M,)),
    M = 10 (n + 5 n^3); the weights (sum 1) are each point's share of the sphere, h / |p|^4 for the point p
    of a flat cell at distance h from the centre before projection (the projection's volume element)."""
    level = int(level)
    if not 1 <= level <= MAX_LEVEL:
        raise UsageError(f"--level {level}: expected 1..{MAX_LEVEL}")
    v, edges, faces, cells = _cell600()
    pts = [v]
    for simplex in (edges, faces, cells):
        comp = _compositions(level, simplex.shape[1]) if level >= simplex.shape[1] else None
        if comp is None or comp.size == 0:
            continue
        # points sum_i a_i v_i / n of every simplex, interior only (all a_i > 0)
        pts.append(np.einsum("ck,skd->scd", comp.astype(float) / level, v[simplex]).reshape(-1, 4))
    p = np.concatenate(pts)
    r = np.linalg.norm(p, axis=1)
    q = p / r[:, None]
    # one of q, -q: the first component further than 1e-9 from zero made positive
    lead = np.argmax(np.abs(q) > 1e-9, axis=1)
    q *= np.sign(q[np.arange(q.shape[0]), lead])[:, None]
    _, keep = np.unique(np.round(q, 9), axis=0, return_index=True)
    keep = np.sort(keep)
    q, w = q[keep], r[keep] ** -4.0
    if q.shape[0] != rotation_count(level):
        raise ComputeError(f"rotation grid of level {level}: {q.shape[0]} points, expected {rotation_count(level)}")
    return q, w / w.sum()


# --------------------------------------------------------------------------- detector coordinates


@dataclasses.dataclass
class Detector:
    """The pixels EMC uses, with their exact lab q in voxel units and their relative solid angle.

    q: (3, P) lab (qx, qy, qz) / dq of each used pixel; solid: (P,) (D/r)^3; pixels: (P,) flat detector
    indices; shape: the detector shape; size: the volume's voxels per axis; dq: its pitch (1/m)."""

    q: np.ndarray
    solid: np.ndarray
    pixels: np.ndarray
    shape: tuple[int, int]
    size: int
    dq: float
    wavelength: float
    distance: float
    pixel: tuple[float, float]
    centre: tuple[float, float]

    @property
    def radius(self) -> float:
        """Largest |q| of a used pixel, in voxels."""
        return float(np.max(np.linalg.norm(self.q, axis=0))) if self.q.size else 0.0


def detector_coordinates(shape: tuple[int, int], centre: tuple[float, float], *, wavelength: float,
                         distance: float, pixel: float | tuple[float, float], size: int,
                         good: np.ndarray | None = None, q_pitch: float | None = None) -> Detector:
    """The good pixels whose exact Ewald q (DESIGN §4) stays inside the N^3 grid whatever the rotation
    (|q| <= N - 1 - N//2 voxels), with q in voxels and the solid angle (D/r)^3 (as `assemble3d` divides it)."""
    size = int(size)
    if size < 4:
        raise UsageError(f"volume size {size}: need at least 4 voxels")
    py, px = (pixel, pixel) if np.isscalar(pixel) else pixel
    dq = float(q_pitch) if q_pitch else px / (wavelength * distance)
    q = geo.pixel_q(shape, centre, distance, (py, px), wavelength).reshape(3, -1) / dq
    solid = geo.solid_angle(shape, centre, distance, (py, px)).reshape(-1)
    rmax = size - 1 - size // 2
    ok = np.linalg.norm(q, axis=0) <= rmax
    if good is not None:
        good = np.asarray(good, bool)
        if good.shape != tuple(shape):
            raise DataError(f"mask shape {good.shape} does not match the frames' {tuple(shape)}")
        ok &= good.reshape(-1)
    pixels = np.flatnonzero(ok)
    if pixels.size < 8:
        raise DataError("fewer than 8 good pixels reach the volume; check --centre, --size and the mask")
    return Detector(q=np.ascontiguousarray(q[:, pixels]), solid=solid[pixels], pixels=pixels,
                    shape=tuple(int(s) for s in shape), size=size, dq=dq, wavelength=float(wavelength),
                    distance=float(distance), pixel=(float(py), float(px)), centre=(float(centre[0]), float(centre[1])))


# --------------------------------------------------------------------------- slicing and merging


def _slice_numpy(vol: np.ndarray, n: int, rots: np.ndarray, q: np.ndarray, solid: np.ndarray,
                 out: np.ndarray) -> None:
    c = n // 2
    u = np.einsum("rji,jp->rip", rots, q) + c            # R^T q, in voxels from the corner
    base = np.minimum(np.floor(u).astype(np.int64), n - 2)
    f = u - base
    ix, iy, iz = base[:, 0], base[:, 1], base[:, 2]
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    acc = np.zeros(ix.shape)
    for dz in (0, 1):
        wz = fz if dz else 1.0 - fz
        for dy in (0, 1):
            wy = wz * (fy if dy else 1.0 - fy)
            for dx in (0, 1):
                acc += wy * (fx if dx else 1.0 - fx) * vol[((iz + dz) * n + iy + dy) * n + ix + dx]
    out[:] = acc * solid


def _slice_log_numpy(vol: np.ndarray, n: int, rots: np.ndarray, q: np.ndarray, solid: np.ndarray,
                     floor: float, logout: np.ndarray, sums: np.ndarray) -> None:
    w = np.empty(logout.shape)
    _slice_numpy(vol, n, rots, q, solid, w)
    np.maximum(w, floor, out=w)
    sums[:] = w.sum(axis=1)
    logout[:] = np.log(w)


def _merge_numpy(num: np.ndarray, den: np.ndarray, wt: np.ndarray, n: int, rots: np.ndarray, q: np.ndarray,
                 solid: np.ndarray, values: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    c = n // 2
    u = np.einsum("rji,jp->rip", rots, q) + c
    base = np.minimum(np.floor(u).astype(np.int64), n - 2)
    f = u - base
    ix, iy, iz = base[:, 0], base[:, 1], base[:, 2]
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    dv = a[:, None] * solid[None, :]
    bv = np.broadcast_to(b[:, None], ix.shape)
    m = n ** 3
    for dz in (0, 1):
        wz = fz if dz else 1.0 - fz
        for dy in (0, 1):
            wy = wz * (fy if dy else 1.0 - fy)
            for dx in (0, 1):
                w = (wy * (fx if dx else 1.0 - fx)).ravel()
                idx = (((iz + dz) * n + iy + dy) * n + ix + dx).ravel()
                num += np.bincount(idx, w * values.ravel(), m)
                den += np.bincount(idx, w * dv.ravel(), m)
                wt += np.bincount(idx, w * bv.ravel(), m)


if numba is not None:
    @numba.njit(cache=True, nogil=True, fastmath=True, inline="always")
    def _trilinear_numba(vol, n, c, R, qx, qy, qz):  # pragma: no cover - compiled
        """The flat n^3 volume at R^T q + c, trilinear (the shared lookup of both slicing kernels)."""
        ux = R[0, 0] * qx + R[1, 0] * qy + R[2, 0] * qz + c
        uy = R[0, 1] * qx + R[1, 1] * qy + R[2, 1] * qz + c
        uz = R[0, 2] * qx + R[1, 2] * qy + R[2, 2] * qz + c
        ix, iy, iz = min(int(math.floor(ux)), n - 2), min(int(math.floor(uy)), n - 2), \
            min(int(math.floor(uz)), n - 2)
        fx, fy, fz = ux - ix, uy - iy, uz - iz
        k = (iz * n + iy) * n + ix
        v00 = vol[k] * (1 - fx) + vol[k + 1] * fx
        v01 = vol[k + n] * (1 - fx) + vol[k + n + 1] * fx
        k2 = k + n * n
        v10 = vol[k2] * (1 - fx) + vol[k2 + 1] * fx
        v11 = vol[k2 + n] * (1 - fx) + vol[k2 + n + 1] * fx
        return (v00 * (1 - fy) + v01 * fy) * (1 - fz) + (v10 * (1 - fy) + v11 * fy) * fz

    @numba.njit(cache=True, nogil=True, fastmath=True)
    def _slice_numba(vol, n, rots, q, solid, out):  # pragma: no cover - compiled
        c = n // 2
        for r in range(rots.shape[0]):
            R = rots[r]
            for p in range(q.shape[1]):
                out[r, p] = solid[p] * _trilinear_numba(vol, n, c, R, q[0, p], q[1, p], q[2, p])

    @numba.njit(cache=True, nogil=True, fastmath=True)
    def _slice_log_numba(vol, n, rots, q, solid, floor, logout, sums):  # pragma: no cover - compiled
        c = n // 2
        for r in range(rots.shape[0]):
            R = rots[r]
            acc = 0.0
            for p in range(q.shape[1]):
                w = solid[p] * _trilinear_numba(vol, n, c, R, q[0, p], q[1, p], q[2, p])
                w = max(w, floor)
                acc += w
                logout[r, p] = math.log(w)
            sums[r] = acc

    @numba.njit(cache=True, nogil=True)
    def _merge_numba(num, den, wt, n, rots, q, solid, values, a, b):  # pragma: no cover - compiled
        c = n // 2
        for r in range(rots.shape[0]):
            R = rots[r]
            for p in range(q.shape[1]):
                qx, qy, qz = q[0, p], q[1, p], q[2, p]
                ux = R[0, 0] * qx + R[1, 0] * qy + R[2, 0] * qz + c
                uy = R[0, 1] * qx + R[1, 1] * qy + R[2, 1] * qz + c
                uz = R[0, 2] * qx + R[1, 2] * qy + R[2, 2] * qz + c
                ix, iy, iz = min(int(math.floor(ux)), n - 2), min(int(math.floor(uy)), n - 2), \
                    min(int(math.floor(uz)), n - 2)
                fx, fy, fz = ux - ix, uy - iy, uz - iz
                val, dv, bv = values[r, p], a[r] * solid[p], b[r]
                for dz in range(2):
                    wz = fz if dz else 1.0 - fz
                    for dy in range(2):
                        wy = wz * (fy if dy else 1.0 - fy)
                        for dx in range(2):
                            w = wy * (fx if dx else 1.0 - fx)
                            k = ((iz + dz) * n + iy + dy) * n + ix + dx
                            num[k] += w * val
                            den[k] += w * dv
                            wt[k] += w * bv


def slice_model(volume: np.ndarray, rots: np.ndarray, det: Detector) -> np.ndarray:
    """Expand: W (R, P) float64, the model seen by every used pixel at each rotation, s_j I(R^T q_j)."""
    n = det.size
    vol = np.ascontiguousarray(volume, np.float64).reshape(-1)
    rots = np.ascontiguousarray(rots, np.float64)
    out = np.empty((rots.shape[0], det.q.shape[1]))
    if numba is not None:
        _slice_numba(vol, n, rots, det.q, det.solid, out)
    else:
        _slice_numpy(vol, n, rots, det.q, det.solid, out)
    return out


def log_slices(volume: np.ndarray, rots: np.ndarray, det: Detector, floor: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Expand for the likelihood: log max(W, floor) as float32 (R, P) and sum_j W_rj (R,), in one pass."""
    vol = np.ascontiguousarray(volume, np.float64).reshape(-1)
    rots = np.ascontiguousarray(rots, np.float64)
    logout = np.empty((rots.shape[0], det.q.shape[1]), np.float32)
    sums = np.empty(rots.shape[0])
    fn = _slice_log_numba if numba is not None else _slice_log_numpy
    fn(vol, det.size, rots, det.q, det.solid, float(floor), logout, sums)
    return logout, sums


def merge_slices(num: np.ndarray, den: np.ndarray, wt: np.ndarray, rots: np.ndarray, det: Detector,
                 values: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Compress: add values[r, j] (photons), a[r] s_j (expected-fluence weight) and b[r] (frames' share)
    at R_r^T q_j into the flat N^3 accumulators num, den, wt with trilinear weights."""
    rots = np.ascontiguousarray(rots, np.float64)
    values = np.ascontiguousarray(values, np.float64)
    a = np.ascontiguousarray(a, np.float64)
    b = np.ascontiguousarray(b, np.float64)
    if numba is not None:
        _merge_numba(num, den, wt, det.size, rots, det.q, det.solid, values, a, b)
    else:
        _merge_numpy(num, den, wt, det.size, rots, det.q, det.solid, values, a, b)


# --------------------------------------------------------------------------- one frame chunk (a task)


@dataclasses.dataclass
class EMCShared:
    """What every frame-chunk task of one iteration needs: the model, the grid, the frames (counts of the
    used pixels, (F, P) float32) and their current scale factors."""

    model: np.ndarray
    quaternions: np.ndarray
    weights: np.ndarray
    det: Detector
    counts: np.ndarray
    scale: np.ndarray
    beta: float
    rotation_chunk: int = 512
    update_scale: bool = True


@dataclasses.dataclass
class ChunkResult:
    """Partial sums of the new model (flat N^3) and the per-frame figures of one chunk of frames."""

    num: np.ndarray
    den: np.ndarray
    wt: np.ndarray
    scale: np.ndarray
    best: np.ndarray
    best_p: np.ndarray
    loglik: np.ndarray
    info: np.ndarray


def frame_chunk(shared: EMCShared, start: int, stop: int,
                report: Callable[[dict[str, Any]], None] | None = None) -> ChunkResult:
    """Expand, maximize and compress for frames start..stop-1: the task `orient` maps over frame chunks.

    Memory: two float32 (M, stop - start) matrices (log-likelihoods, responsibilities) and one rotation
    chunk's slices."""
    K = np.ascontiguousarray(shared.counts[start:stop], np.float32)
    phi = np.asarray(shared.scale[start:stop], np.float64)
    m = shared.quaternions.shape[0]
    nf = K.shape[0]
    rc = max(1, int(shared.rotation_chunk))
    floor = max(float(np.mean(shared.model)) * 1e-6, 1e-30)
    T = np.empty((m, nf), np.float32)            # beta L + log w, in place (L: the log-likelihood)
    sumw = np.empty(m)
    KT = np.ascontiguousarray(K.T)
    beta = float(shared.beta)
    logw = np.log(shared.weights).astype(np.float32)
    for r0 in range(0, m, rc):
        logw_, sums = log_slices(shared.model, quaternion_matrix(shared.quaternions[r0:r0 + rc]), shared.det, floor)
        sumw[r0:r0 + rc] = sums
        block = T[r0:r0 + rc]
        np.matmul(logw_, KT, out=block)
        block -= np.outer(sums, phi).astype(np.float32)
        block *= np.float32(beta)
        block += logw[r0:r0 + rc, None]
    mx = T.max(axis=0)
    T -= mx[None, :]
    # responsibilities P = exp(T) / Z, tempered by beta, with the grid's weights as the prior
    P = np.exp(T)
    lz = np.log(P.sum(axis=0, dtype=np.float64))
    P *= np.exp(-lz).astype(np.float32)[None, :]
    photons = K.sum(axis=1, dtype=np.float64)
    # sum_r P L with L = (T + max - log w) / beta, and sum_r P log(P / w) with log P = T - log Z
    plogw = logw.astype(np.float64) @ P
    pt = np.einsum("rf,rf->f", P, T, dtype=np.float64)
    loglik = (pt + mx - plogw) / beta + photons * np.log(np.maximum(phi, 1e-300))
    info = pt - lz - plogw
    del T
    best = np.argmax(P, axis=0)
    best_p = P[best, np.arange(nf)].astype(np.float64)
    if shared.update_scale:
        expect = sumw @ P.astype(np.float64)
        phi = np.where(expect > 0, photons / np.maximum(expect, 1e-300), phi)
    # compress: rotations that no frame of the chunk needs are skipped
    n3 = shared.det.size ** 3
    num, den, wt = np.zeros(n3), np.zeros(n3), np.zeros(n3)
    used = np.flatnonzero(P.max(axis=1) > 1e-8)
    for r0 in range(0, used.size, rc):
        rs = used[r0:r0 + rc]
        Pr = P[rs]
        merge_slices(num, den, wt, quaternion_matrix(shared.quaternions[rs]), shared.det, Pr @ K,
                     Pr.astype(np.float64) @ phi, Pr.sum(axis=1, dtype=np.float64))
    if report is not None:
        report({"frames": nf})
    return ChunkResult(num=num, den=den, wt=wt, scale=phi, best=best, best_p=best_p, loglik=loglik, info=info)


# --------------------------------------------------------------------------- the EMC loop


@dataclasses.dataclass
class EMCResult:
    """The recovered volume (a Pattern as `assemble3d` makes it) and what EMC learned about the frames.

    orientations: (F, 4) most probable rotation of each frame (quaternion, the frame samples I(R^T q));
    probability: its responsibility; scale: the frames' fluence factors; history: one dict per iteration."""

    pattern: Pattern
    orientations: np.ndarray
    best_index: np.ndarray
    probability: np.ndarray
    scale: np.ndarray
    history: list[dict[str, Any]]
    stats: dict[str, Any]


def friedel_mate(a: np.ndarray) -> np.ndarray:
    """b[i] = a[2c - i] on every axis (c = N // 2); index 0 of an even grid has no mate (wraps)."""
    out = a[::-1, ::-1, ::-1]
    if a.shape[0] % 2 == 0:
        out = np.roll(out, 1, axis=(0, 1, 2))
    return out


def _fine_index(n: int, u: int) -> np.ndarray:
    """Indices of the fine grid (n u voxels, centre (n u) // 2) that hold the coarse grid's voxels."""
    return (n * u) // 2 + (np.arange(n) - n // 2) * u


def subsample(volume: np.ndarray, u: int) -> np.ndarray:
    """The coarse grid's voxels (pitch u) of a volume on the u-times finer grid, q = 0 kept at N // 2."""
    idx = _fine_index(volume.shape[0] // u, u)
    return volume[np.ix_(idx, idx, idx)]


def upsample(volume: np.ndarray, u: int) -> np.ndarray:
    """A volume on the u-times finer grid, trilinear between the coarse voxels (q = 0 kept at N // 2)."""
    n = volume.shape[0]
    nf = n * u
    fine = (np.arange(nf) - nf // 2) / u + n // 2          # coarse coordinate of each fine index
    from scipy import ndimage  # noqa: PLC0415

    z, y, x = np.meshgrid(fine, fine, fine, indexing="ij")
    return ndimage.map_coordinates(volume, [z, y, x], order=1, mode="nearest")


def radial_model(counts: np.ndarray, det: Detector) -> np.ndarray:
    """The orientation average of the data: mean photons per frame / solid angle against |q|, as a volume
    (the natural start of EMC: every rotation of it fits every frame equally)."""
    n = det.size
    mean = counts.mean(axis=0, dtype=np.float64) / det.solid
    r = np.linalg.norm(det.q, axis=0)
    nb = int(np.ceil(r.max())) + 2
    k = np.rint(r).astype(np.int64)
    prof = np.bincount(k, mean, nb) / np.maximum(np.bincount(k, None, nb), 1)
    have = np.bincount(k, None, nb) > 0
    prof = np.interp(np.arange(nb), np.flatnonzero(have), prof[have])
    c = n // 2
    z, y, x = np.indices((n, n, n)) - c
    rv = np.sqrt(x * x + y * y + z * z)
    return np.interp(rv, np.arange(nb), prof, right=prof[-1])


def default_stages(level: int = 6, iterations: int = 50, radius: float = 31.0, beta: float | None = None,
                   oversample: int = 2) -> list[dict[str, Any]]:
    """The schedule `cxdi orient` runs: EMC on the low-resolution pixels first (|q| up to a quarter of
    `radius`, at least 6 voxels; one level coarser; 2/5 of the iterations, beta annealed from `beta`; a
    working grid oversample + 1 times finer, affordable where the photons are dense), whose volume seeds
    EMC on every pixel at `level` on a grid `oversample` times finer (finer still lets each sparse high-q
    voxel fit single frames' noise), beta annealed again from 0.1 (doubled every sixth of its iterations:
    starting it at 0.5 locked the orientations at once, and the speckles beyond the first rings came out
    half as correlated with the truth)."""
    low = max(6.0, radius / 4)
    first = max(1, (2 * iterations) // 5)
    stages: list[dict[str, Any]] = []
    if low < radius and iterations > 1:
        stages.append({"level": max(1, level - 1), "iterations": first, "radius": low, "beta": beta,
                       "beta_period": max(1, first // 5), "oversample": oversample + 1})
    else:
        first = 0
    stages.append({"level": level, "iterations": iterations - first, "radius": None,
                   "beta": 0.1 if first else beta, "beta_period": max(1, (iterations - first) // 6),
                   "oversample": oversample})
    return stages


def beta_schedule(iteration: int, beta: float, factor: float, period: int) -> float:
    """Deterministic annealing: beta * factor^(iteration // period), at most 1."""
    return float(min(1.0, beta * factor ** (iteration // max(1, period))))


def auto_beta(photons_per_frame: float) -> float:
    """A starting beta for frames of this many photons: the log-likelihood differences between rotations
    grow with the photons, so beta ~ 300 / photons (at most 1) keeps the first responsibilities broad
    while letting the volume leave spherical symmetry (on the simulated particle it stays spherical
    below beta ~ 0.15 at 1500 photons a frame, and breaks out near 0.2-0.3)."""
    return float(min(1.0, 300.0 / max(photons_per_frame, 1.0)))


def orient(counts: np.ndarray, det: Detector, *, level: int = 6, iterations: int = 30, seed: int = 0,
           beta: float | None = None, beta_factor: float = 2.0, beta_period: int = 5, update_scale: bool = True,
           friedel: bool = True, model: np.ndarray | None = None, frame_chunk_size: int | None = None,
           rotation_chunk: int = 512, radius: float | None = None, oversample: int = 1, executor: Any = None,
           on_iteration: Callable[[dict[str, Any]], None] | None = None,
           on_progress: Callable[..., None] | None = None) -> EMCResult:
    """EMC on photon counts `counts` (F, P) of the pixels of `det` (see the module docstring).

    level: rotation-grid refinement (`rotation_grid`); iterations: EMC iterations; seed: the random
    perturbation of the start (the orientation average of the data, `radial_model`, times 1 + U(-0.5, 0.5)
    voxel by voxel) unless `model` is given; beta (None: `auto_beta`), beta_factor, beta_period: the
    annealing schedule; update_scale: estimate a fluence per frame (else all 1); friedel: symmetrise the
    model each iteration. oversample: EMC works on a grid `oversample` times finer than the output's
    (the trilinear slice-and-merge of each iteration blurs by about a voxel of the working grid, which
    lowers the likelihood of sharp speckles: 2 halves that), and the output keeps every oversample-th
    voxel; a `model` given is on the output grid. radius: use only the pixels within this |q| (voxels), e.g. a low-resolution start
    whose volume seeds a full-resolution run (voxels beyond keep the model's values). frame_chunk_size: frames per task (default: bounded so that the chunk's
    rotation x frame matrix stays under ~256 MB); executor: where the chunks run (`cxdi_cli.executor`).
    on_iteration(dict) after each iteration; on_progress(advance=frames, total=...) as chunks finish."""
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != det.q.shape[1]:
        raise DataError(f"counts of shape {counts.shape}: expected (frames, {det.q.shape[1]} pixels)")
    nf = counts.shape[0]
    if nf < 1:
        raise DataError("no frames to orient")
    if iterations < 1:
        raise UsageError(f"--iterations {iterations}: need at least 1")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise DataError("frames hold negative, NaN or infinite photon counts")
    counts = counts.astype(np.float32, copy=False)
    photons = counts.sum(axis=1, dtype=np.float64)
    if not np.any(photons > 0):
        raise DataError("every frame is empty (no photon in the pixels that reach the volume)")
    quats, weights = rotation_grid(level)
    m = quats.shape[0]
    out_det = det
    u = int(oversample)
    if u < 1:
        raise UsageError(f"--oversample {oversample}: need a positive integer")
    if u > 1:
        det = dataclasses.replace(det, q=det.q * u, size=det.size * u, dq=det.dq / u)
        if radius is not None:
            radius = radius * u
        if model is not None:
            model = upsample(np.asarray(model, np.float64), u)
    n = det.size
    rng = np.random.default_rng(seed)
    if model is None:
        model = radial_model(counts, det) * (1.0 + rng.uniform(-0.5, 0.5, (n,) * 3))
    if radius is not None:
        keep = np.linalg.norm(det.q, axis=0) <= radius
        if keep.sum() < 8:
            raise UsageError(f"radius {radius:g} voxels: fewer than 8 pixels inside")
        det = dataclasses.replace(det, q=np.ascontiguousarray(det.q[:, keep]), solid=det.solid[keep],
                                  pixels=det.pixels[keep])
        counts = np.ascontiguousarray(counts[:, keep])
        photons = counts.sum(axis=1, dtype=np.float64)
    model = np.asarray(model, np.float64).reshape((n,) * 3)
    scale = photons / photons.mean() if update_scale else np.ones(nf)
    scale = np.maximum(scale, 1e-3)
    if beta is None:
        beta = auto_beta(float(photons.mean()))
    if frame_chunk_size is None:
        frame_chunk_size = max(1, min(nf, (256 << 20) // (4 * 2 * m)))
    workers = getattr(executor, "workers", 1) if executor is not None else 1
    if workers > 1:
        frame_chunk_size = min(frame_chunk_size, max(1, math.ceil(nf / (2 * workers))))
    ranges = [(a, min(nf, a + frame_chunk_size)) for a in range(0, nf, frame_chunk_size)]
    tick = on_progress or (lambda *a, **k: None)
    tick(advance=0, total=iterations * nf)
    history: list[dict[str, Any]] = []
    best = np.zeros(nf, np.int64)
    best_p = np.zeros(nf)
    wt = np.zeros(n ** 3)
    for it in range(iterations):
        t0 = time.perf_counter()
        b = beta_schedule(it, beta, beta_factor, beta_period)
        shared = EMCShared(model=model, quaternions=quats, weights=weights, det=det, counts=counts, scale=scale,
                           beta=b, rotation_chunk=rotation_chunk, update_scale=update_scale)
        num, den, wt = np.zeros(n ** 3), np.zeros(n ** 3), np.zeros(n ** 3)
        new_scale = scale.copy()
        loglik = np.zeros(nf)
        info = np.zeros(nf)

        def done(k: int, part: ChunkResult) -> None:
            s0, s1 = ranges[k]
            num[:] += part.num
            den[:] += part.den
            wt[:] += part.wt
            new_scale[s0:s1] = part.scale
            best[s0:s1] = part.best
            best_p[s0:s1] = part.best_p
            loglik[s0:s1] = part.loglik
            info[s0:s1] = part.info

        if executor is None:
            for k, (s0, s1) in enumerate(ranges):
                done(k, frame_chunk(shared, s0, s1))
                tick(advance=s1 - s0)
        else:
            out = executor.map(frame_chunk, shared, ranges, on_done=done,
                               on_event=lambda ev: tick(advance=int(ev.get("frames", 0))), keep=False)
            if out.failures:
                lost = ", ".join(f"frames {ranges[k][0]}-{ranges[k][1] - 1} ({out.describe(k)})"
                                 for k in sorted(out.failures))
                raise ComputeError(f"{len(out.failures)} of {len(ranges)} frame chunks failed: {lost}")
        numv, denv = num.reshape((n,) * 3), den.reshape((n,) * 3)
        if friedel:
            numv = numv + friedel_mate(numv)
            denv = denv + friedel_mate(denv)
        reached = denv > 1e-12 * max(float(denv.max()), 1e-300)
        # voxels out of reach (beyond `radius`) keep the model they had
        new = np.where(reached, numv / np.where(reached, denv, 1.0), model)
        change = float(np.linalg.norm(new - model) / max(np.linalg.norm(model), 1e-300))
        model = new
        if update_scale:
            mean = float(np.mean(new_scale))
            scale, model = new_scale / mean, model * mean
        entry = {"iteration": it + 1, "beta": b, "loglik_per_frame": float(loglik.mean()),
                 "mutual_information": float(info.mean()), "sharpness": float(best_p.mean()),
                 "model_change": change, "seconds": time.perf_counter() - t0, "rotations": m}
        history.append(entry)
        if on_iteration is not None:
            on_iteration(entry)
    reached = wt.reshape((n,) * 3)
    if friedel:
        reached = reached + friedel_mate(reached)
    qrad = det.radius / u
    if u > 1:
        model, reached, n, det = subsample(model, u), subsample(reached, u), out_det.size, out_det
    measured = reached > 1e-9 * max(float(reached.max()), 1e-300)
    mask = np.where(measured, np.uint32(0), np.uint32(MASK_BITS["unmeasured"])).astype(np.uint32)
    vol = np.where(measured, model, 0.0).astype(np.float32)
    geometry = Geometry(wavelength=det.wavelength, distance=det.distance, pixel=det.pixel, centre=None,
                        q_pitch=(det.dq, det.dq, det.dq))
    pattern = Pattern(intensity=vol, mask=mask, geometry=geometry, extra={"weight": reached.astype(np.float32)})
    stats = {"size": n, "q_pitch_per_m": det.dq, "real_pixel_m": 1.0 / (n * det.dq), "n_frames": nf,
             "pixels_used": int(counts.shape[1]), "q_radius_voxels": qrad, "oversample": u, "rotations": m, "level": level,
             "grid_step_deg": math.degrees(grid_step(level)), "measured_fraction": float(measured.mean()),
             "photons_per_frame": float(photons.mean()), "frame_chunks": len(ranges),
             "seconds_per_iteration": float(np.mean([h["seconds"] for h in history]))}
    return EMCResult(pattern=pattern, orientations=quats[best], best_index=best.copy(), probability=best_p.copy(),
                     scale=scale, history=history, stats=stats)


def orient_stages(counts: np.ndarray, det: Detector, stages: list[dict[str, Any]], *,
                  on_iteration: Callable[[dict[str, Any]], None] | None = None,
                  on_progress: Callable[..., None] | None = None, **common: Any) -> EMCResult:
    """`orient` run stage after stage (`default_stages`), each started from the previous stage's volume;
    `common` options go to every stage. Iterations are numbered across the stages (each history entry
    also names its stage); the result is the last stage's, with the whole history."""
    if not stages:
        raise UsageError("no EMC stage to run")
    total = sum(int(st.get("iterations", 1)) for st in stages) * counts.shape[0]
    tick = on_progress or (lambda *a, **k: None)
    tick(advance=0, total=total)
    history: list[dict[str, Any]] = []
    model = common.pop("model", None)
    result = None
    for k, stage in enumerate(stages):
        done = len(history)

        def note(h: dict[str, Any], done: int = done, k: int = k) -> None:
            h = dict(h, iteration=h["iteration"] + done, stage=k + 1, radius=stage.get("radius"))
            history.append(h)
            if on_iteration is not None:
                on_iteration(h)

        result = orient(counts, det, model=model, on_iteration=note,
                        on_progress=lambda advance=0, total=None, **kw: tick(advance=advance), **common, **stage)
        model = result.pattern.intensity
    assert result is not None
    result.history = history
    result.stats["stages"] = len(stages)
    result.stats["seconds_per_iteration"] = float(np.mean([h["seconds"] for h in history[-stages[-1]["iterations"]:]]))
    return result


# --------------------------------------------------------------------------- comparisons with a truth


def best_global_rotation(recovered: np.ndarray, truth: np.ndarray, candidates: np.ndarray,
                         radius: float | None = None, refine: int = 4) -> tuple[np.ndarray, float]:
    """The rotation G for which recovered(q) best matches truth(G q) (Pearson correlation of the voxels
    within `radius` voxels; default the inscribed ball), and that correlation: the best of `candidates`
    (quaternions), then `refine` rounds of local search (turns about 13 axes by half the last step).
    EMC recovers the volume only up to such a global rotation."""
    n = recovered.shape[0]
    c = n // 2
    radius = (n - 1 - c) if radius is None else radius
    z, y, x = np.indices(recovered.shape) - c
    sel = x * x + y * y + z * z <= radius ** 2
    pts = np.stack([x[sel], y[sel], z[sel]]).astype(np.float64)
    a = recovered[sel].astype(np.float64)
    a = (a - a.mean()) / max(a.std(), 1e-300)
    fake = Detector(q=pts, solid=np.ones(pts.shape[1]), pixels=np.arange(pts.shape[1]), shape=(1, 1), size=n,
                    dq=1.0, wavelength=1.0, distance=1.0, pixel=(1.0, 1.0), centre=(0.0, 0.0))

    def score(cands: np.ndarray) -> tuple[np.ndarray, float]:
        best, best_c = cands[0], -np.inf
        for r0 in range(0, cands.shape[0], 64):
            # truth(G q) = slice of truth at rotation G^T: slice_model evaluates vol(R^T q)
            s = slice_model(truth, np.swapaxes(quaternion_matrix(cands[r0:r0 + 64]), 1, 2), fake)
            s = (s - s.mean(axis=1, keepdims=True)) / np.maximum(s.std(axis=1, keepdims=True), 1e-300)
            cc = s @ a / a.size
            k = int(np.argmax(cc))
            if cc[k] > best_c:
                best, best_c = cands[r0 + k], float(cc[k])
        return best, best_c

    best, best_c = score(np.asarray(candidates, float))
    if candidates.shape[0] > 1 and refine:
        d = rotation_angle(candidates[:, None], best[None])
        step = float(np.sort(d[:, 0])[1]) if d.shape[0] > 1 else 0.1
        axes = np.array([v for v in itertools.product((-1, 0, 1), repeat=3) if any(v)], float)
        axes = axes[: len(axes) // 2]                               # 13 axes, both senses below
        axes /= np.linalg.norm(axes, axis=1, keepdims=True)
        for _ in range(refine):
            step /= 2
            turns = np.concatenate([np.hstack([np.full((13, 1), np.cos(sg * step / 2)),
                                               np.sin(sg * step / 2) * axes]) for sg in (1.0, -1.0)])
            b, bc = score(np.concatenate([best[None], quaternion_multiply(turns, best[None])]))
            if bc > best_c:
                best, best_c = b, bc
    return best, best_c


def rotate_volume(volume: np.ndarray, g: np.ndarray) -> np.ndarray:
    """volume(G q) on the same grid (trilinear; outside the inscribed ball: 0), G a quaternion."""
    n = volume.shape[0]
    c = n // 2
    z, y, x = np.indices(volume.shape) - c
    pts = np.stack([x.ravel(), y.ravel(), z.ravel()]).astype(np.float64)
    inside = np.linalg.norm(pts, axis=0) <= n - 1 - c
    fake = Detector(q=pts[:, inside], solid=np.ones(int(inside.sum())), pixels=np.flatnonzero(inside),
                    shape=(1, 1), size=n, dq=1.0, wavelength=1.0, distance=1.0, pixel=(1.0, 1.0), centre=(0.0, 0.0))
    out = np.zeros(n ** 3)
    out[inside] = slice_model(volume, quaternion_matrix(g).T[None], fake)[0]
    return out.reshape(volume.shape)


def shell_correlation(a: np.ndarray, b: np.ndarray, fraction: float = 0.9,
                      measured: np.ndarray | None = None) -> tuple[float, float]:
    """Pearson correlation of two volumes over the ball (centred at N // 2) that holds `fraction` of b's
    photons, and that ball's radius in voxels."""
    n = a.shape[0]
    c = n // 2
    z, y, x = np.indices(a.shape) - c
    r = np.sqrt(x * x + y * y + z * z)
    ok = np.ones(a.shape, bool) if measured is None else measured
    ok &= r <= n - 1 - c
    order = np.argsort(r[ok])
    cum = np.cumsum(b[ok][order])
    radius = float(r[ok][order][min(int(np.searchsorted(cum, fraction * cum[-1])), cum.size - 1)])
    sel = ok & (r <= radius)
    return float(np.corrcoef(a[sel], b[sel])[0, 1]), radius


#: a half-turn about the beam (lab z): with Friedel's law a flat-detector frame cannot tell it from no turn
BEAM_FLIP = np.array([0.0, 0.0, 0.0, 1.0])


def anisotropic_correlation(a: np.ndarray, b: np.ndarray, radius: float) -> float:
    """Pearson correlation, within `radius` voxels, of the two volumes' departures from their own shell
    means: what orientation recovery adds to the orientation average (which alone already correlates well
    with any compact particle's intensity)."""
    n = a.shape[0]
    c = n // 2
    z, y, x = np.indices(a.shape) - c
    k = np.rint(np.sqrt(x * x + y * y + z * z)).astype(np.int64)
    sel = k <= radius
    out = []
    for v in (a, b):
        v = np.asarray(v, np.float64)
        mean = np.bincount(k[sel], v[sel]) / np.maximum(np.bincount(k[sel]), 1)
        out.append(v[sel] - mean[k[sel]])
    return float(np.corrcoef(out[0], out[1])[0, 1])


def orientation_agreement(recovered: np.ndarray, truth: np.ndarray, symmetry: np.ndarray | None = None,
                          beam_flip: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Angles (rad) between each frame's recovered rotation and its true one, up to what the data cannot
    tell: a common offset G (recovered = truth S G: EMC's global ambiguity), any S of the intensity's
    `symmetry` (quaternions, identity included; None: none) and, with `beam_flip`, a half-turn about the
    beam applied in the lab (I(q) = I(-q) makes a frame at F R the same as at R, up to the Ewald
    curvature). G is the relative rotation most frames share (a medoid). Returns (angles, G)."""
    sym = np.array([[1.0, 0.0, 0.0, 0.0]]) if symmetry is None else np.asarray(symmetry, float).reshape(-1, 4)
    lefts = [np.array([1.0, 0.0, 0.0, 0.0])] + ([BEAM_FLIP] if beam_flip else [])
    rels = [quaternion_multiply(quaternion_conjugate(quaternion_multiply(f, truth)), recovered) for f in lefts]

    def dist(a_list: list[np.ndarray], b: np.ndarray) -> np.ndarray:   # min over variants and S, broadcast
        return np.min([rotation_angle(a, quaternion_multiply(s, b)) for a in a_list for s in sym], axis=0)

    k = min(recovered.shape[0], 300)
    cands = np.concatenate([r[:k] for r in rels])
    d = dist([r[:k, None, :] for r in rels], cands[None, :, :])
    g = cands[int(np.argmin(np.median(d, axis=0)))]
    return dist(rels, g[None, :]), g


def frames_to_counts(frames: Iterable[np.ndarray], det: Detector) -> np.ndarray:
    """The used pixels of every frame, as the (F, P) float32 count matrix `orient` takes."""
    rows = [np.asarray(f, np.float32).reshape(-1)[det.pixels] for f in frames]
    if not rows:
        raise DataError("no frames")
    return np.stack(rows)


# --------------------------------------------------------------------------- files -> volume


def level_for_rotations(rotations: int) -> int:
    """The smallest refinement level whose grid has at least `rotations` rotations."""
    if rotations < 1:
        raise UsageError(f"--rotations {rotations}: need at least 1")
    for level in range(1, MAX_LEVEL + 1):
        if rotation_count(level) >= rotations:
            return level
    raise UsageError(f"--rotations {rotations}: more than the finest grid ({rotation_count(MAX_LEVEL)})")


def orient_files(specs: list[str], *, energy_kev: float, distance: float, pixel: float,
                 centre: tuple[float, float] | None = None, size: int | None = None, mask: str | None = None,
                 auto_mask: bool = True, level: int = 6, iterations: int = 50, beta: float | None = None,
                 oversample: int = 2, stages: list[dict[str, Any]] | None = None,
                 on_progress: Callable[..., None] | None = None, **options: Any) -> EMCResult:
    """Frames on disk (photon counts) -> EMC volume. The sum of the frames (the orientation average) gives
    the beam centre when not given and the detector mask (user mask, module gaps, hot/dead pixels,
    beamstop: the chain of `preprocess` and `assemble3d`, `centring.centre_and_mask`); the good pixels whose
    Ewald q stays inside the size^3 grid are kept (`detector_coordinates`) and read into memory as a
    (frames, pixels) float32 matrix. EMC runs `stages` (default `default_stages(level, iterations, ...)`);
    `options` go to every stage (`orient`). size defaults to the detector crop around the centre (as
    `assemble3d`)."""
    from cxdi_cli import io  # noqa: PLC0415
    from cxdi_cli.io.frames import open_frames  # noqa: PLC0415
    from cxdi_cli.model import measured_from_mask, wavelength_from_kev  # noqa: PLC0415
    from cxdi_cli.reduce import centring, masking, pattern as preprocess  # noqa: PLC0415

    if energy_kev <= 0 or distance <= 0 or pixel <= 0:
        raise UsageError("--energy, --distance and --pixel must be positive")
    if not isinstance(level, (int, np.integer)) or not 1 <= level <= MAX_LEVEL:
        raise UsageError(f"--level {level}: expected 1..{MAX_LEVEL}")
    if iterations < 1:
        raise UsageError(f"--iterations {iterations}: need at least 1")
    if oversample < 1:
        raise UsageError(f"--oversample {oversample}: need a positive integer")
    progress = on_progress or (lambda *a, **k: None)
    with open_frames(list(specs)) as stack:
        shape = stack.shape
        bits = np.zeros(shape, np.uint32)
        if mask is not None:
            user = masking.user_mask(io.read_array(mask, "mask"), shape, mask, "the frames")
            bits[user] |= np.uint32(MASK_BITS["user"])
        stats = preprocess.accumulate(stack)
        bits[stats.marker] |= np.uint32(MASK_BITS["invalid"])
        cm = centring.centre_and_mask(stats.total, bits, empty=stats.raw_max <= 0.0, centre=centre,
                                      auto_mask=auto_mask)
        c = cm.centre
        if not (0 <= c[0] < shape[0] and 0 <= c[1] < shape[1]):
            raise DataError(f"beam centre {c[0]:g},{c[1]:g} is off the {shape[0]}x{shape[1]} detector")
        if size is None:
            size = max(4, geo.default_crop(shape, c))
        det = detector_coordinates(shape, c, wavelength=wavelength_from_kev(energy_kev), distance=distance,
                                   pixel=pixel, size=size, good=measured_from_mask(cm.mask))
        rows = []
        for _, block in stack.blocks():
            block = np.asarray(block, np.float64).reshape(block.shape[0], -1)[:, det.pixels]
            rows.append(np.where(block < 0, 0.0, block).astype(np.float32))   # markers: masked anyway
        counts = np.concatenate(rows)
    if stages is None:
        stages = default_stages(level=level, iterations=iterations, radius=det.radius, beta=beta,
                                oversample=oversample)
    result = orient_stages(counts, det, stages, on_progress=progress, **options)
    result.stats.update({"beam_centre": [float(c[0]), float(c[1])], "centre_method": "auto" if cm.found else "given",
                         "detector_shape": list(shape),
                         "detector_mask_counts": {k: v for k, v in mask_counts(cm.mask).items() if v}})
    return result
