"""`cxdi simulate particle3d`: a tilt series of a porous, chiral particle with exact Ewald-sphere sampling.

The specimen is built from analytic shapes only (an ellipsoidal body, spherical pores cut out of it, and a
right-handed helix of small dense spheres inside it), so its continuous Fourier transform

    F(q) = sum_k rho_k V_k f(2 pi |A_k^T q|) exp(-2 pi i q . c_k),  f(x) = 3 (sin x - x cos x) / x^3

(ellipsoid k = {c_k + A_k u : |u| <= 1}, V_k = 4/3 pi |det A_k|) is exact and can be evaluated at every
detector pixel's exact q vector on the Ewald sphere (`geometry.pixel_q`), rotated into the sample frame by
R_y(-omega) (DESIGN §4). No interpolation and no FFT is involved in the frames: this is the exact
non-uniform transform. The pixel solid angle (D/r)^3 relative to the central pixel is applied to the
counts (a flat detector sees less of the sphere at its edge); `assemble3d` divides it out.

Files written (see the simulate contract): `tilts.h5` (LIMA layout, uint32, with
`/entry_0000/measurement/omega`), `angles.txt`, `truth.cxi`, `experiment.json`, and `beamstop.tif` when a
beamstop shadow is asked for.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from cxdi_cli import fft, geometry
from cxdi_cli.model import DataError, Geometry, Reconstruction, Run, UsageError, wavelength_from_kev
from cxdi_cli.sim.output import out_dir as make_out_dir, seed_value, write_json

SCHEMA = "cxdi.simulate/1"


# --------------------------------------------------------------------------- the specimen


@dataclasses.dataclass
class Particle:
    """A sum of uniform ellipsoids: shape k is {centres[k] + axes[k] @ u : |u| <= 1} with density densities[k].

    Densities add where shapes overlap (a pore is a negative-density sphere inside the body). Lengths in m.
    """

    axes: np.ndarray        # (K, 3, 3): columns are the semi-axis vectors, in (x, y, z)
    centres: np.ndarray     # (K, 3) in (x, y, z)
    densities: np.ndarray   # (K,)
    kinds: list[str]        # "body", "pore", "helix" per shape

    def mirrored(self) -> "Particle":
        """The enantiomer: every shape reflected through the plane x = 0."""
        m = np.diag([-1.0, 1.0, 1.0])
        return Particle(m @ self.axes, self.centres @ m, self.densities.copy(), list(self.kinds))

    @property
    def extent(self) -> float:
        """Largest extent of the particle (m): twice the body's longest semi-axis."""
        body = self.axes[self.kinds.index("body")]
        return 2.0 * float(np.max(np.linalg.norm(body, axis=0)))

    def transform(self, q: np.ndarray) -> np.ndarray:
        """Exact continuous Fourier transform F(q) = ∫ rho(r) exp(-2 pi i q.r) d^3r (units: density * m^3).

        `q` has shape (3, ...) with components (qx, qy, qz) in 1/m; returns complex128 of shape q.shape[1:].
        """
        q = np.asarray(q, dtype=np.float64)
        flat = q.reshape(3, -1)
        out = np.zeros(flat.shape[1], np.complex128)
        for a, c, rho in zip(self.axes, self.centres, self.densities):
            s = np.sqrt(np.sum((a.T @ flat) ** 2, axis=0))     # |A^T q|
            x = 2.0 * np.pi * s
            out += (rho * 4.0 / 3.0 * np.pi * abs(np.linalg.det(a))) * _sphere_form(x) \
                * np.exp(-2j * np.pi * (c @ flat))
        return out.reshape(q.shape[1:])

    def density(self, r: np.ndarray) -> np.ndarray:
        """Density at points r (3, ...) in m (x, y, z): the sum of the shapes containing each point."""
        flat = np.asarray(r, np.float64).reshape(3, -1)
        out = np.zeros(flat.shape[1])
        for a, c, rho in zip(self.axes, self.centres, self.densities):
            u = np.linalg.solve(a, flat - c[:, None])
            out += rho * (np.sum(u * u, axis=0) <= 1.0)
        return out.reshape(np.shape(r)[1:])


def _sphere_form(x: np.ndarray) -> np.ndarray:
    """Normalised transform of a uniform ball, 3 (sin x - x cos x) / x^3 (1 at x = 0)."""
    out = np.empty_like(x)
    small = x < 1e-2
    xs = x[small]
    out[small] = 1.0 - xs * xs / 10.0 + xs ** 4 / 280.0
    xl = x[~small]
    out[~small] = 3.0 * (np.sin(xl) - xl * np.cos(xl)) / xl ** 3
    return out


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def make_particle(extent: float, seed: int = 0, n_pores: int = 7, n_helix: int = 12) -> Particle:
    """A porous ellipsoidal particle of largest extent `extent` (m) with a right-handed helix of dense spheres.

    Body: semi-axes (1, 0.82, 0.7) R turned by a fixed oblique rotation, density 1. Pores: `n_pores`
    empty spheres (radius 0.12-0.22 R) fully inside the body and apart from each other and the helix.
    Helix: `n_helix` spheres (radius 0.075 R, density +2 over the body's) on 1.5 right-handed turns of
    radius 0.36 R about an oblique axis — chiral, so the mirror image gives different diffraction.
    """
    rng = np.random.default_rng(seed)
    R = extent / 2.0
    rot = _rotation(np.array([0.3, 1.0, 0.5]), 0.7)
    body = rot @ np.diag([1.0, 0.82, 0.7]) * R
    axes, centres, dens, kinds = [body], [np.zeros(3)], [1.0], ["body"]
    # helix: right-handed about unit vector w (e1 x e2 = w), positions r(t) = rho(cos, sin) + pitch t w
    w = np.array([0.35, 0.2, 1.0])
    w /= np.linalg.norm(w)
    e1 = np.cross(w, [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(w, e1)
    t = np.linspace(-0.75, 0.75, n_helix)               # 1.5 turns
    radius, rise = 0.36 * R, 0.8 * R
    rh = 0.075 * R
    helix = [radius * (np.cos(2 * np.pi * ti) * e1 + np.sin(2 * np.pi * ti) * e2) + rise * ti * w for ti in t]
    for h in helix:
        axes.append(np.eye(3) * rh)
        centres.append(h)
        dens.append(2.0)
        kinds.append("helix")
    placed: list[tuple[np.ndarray, float]] = [(h, rh) for h in helix]
    for c, r in place_pores(rng, body, R, placed, n_pores, (0.12, 0.22), inside=0.97):
        axes.append(np.eye(3) * r)
        centres.append(c)
        dens.append(-1.0)
        kinds.append("pore")
    return Particle(np.array(axes), np.array(centres), np.array(dens, float), kinds)


def place_pores(rng: np.random.Generator, body: np.ndarray, R: float, placed: list[tuple[np.ndarray, float]],
                n: int, radii: tuple[float, float], inside: float) -> list[tuple[np.ndarray, float]]:
    """Up to `n` pores (centre, radius; radii in units of R) drawn at random fully inside the body
    (the ball mapped by body^-1 lies within `inside` of the unit ball) and clear of the `placed`
    balls by 0.03 R; `placed` grows with them."""
    inv_body = np.linalg.inv(body)
    out: list[tuple[np.ndarray, float]] = []
    tries = 0
    while len(out) < n and tries < 20000:
        tries += 1
        r = rng.uniform(*radii) * R
        c = rng.uniform(-1, 1, 3) * R
        if np.linalg.norm(inv_body @ c) + r * np.linalg.norm(inv_body, 2) > inside:
            continue
        if any(np.linalg.norm(c - pc) < r + pr + 0.03 * R for pc, pr in placed):
            continue
        placed.append((c, r))
        out.append((c, r))
    return out


# --------------------------------------------------------------------------- the experiment


def distance_for_curvature(size: int, pixel: float, voxels: float) -> float:
    """Distance (m) at which the Ewald sphere at the detector's edge (size/2 pixels out) lies `voxels`
    voxels of q pitch off the flat detector plane: |qz|/dq ≈ (size/2)^2 p / (2 D)."""
    return (size / 2) ** 2 * pixel / (2.0 * voxels)


def edge_curvature_voxels(size: int, pixel: float, distance: float) -> float:
    """Exact |qz| at the middle of the detector's edge (size/2 pixels from the centre), in units of p/(lambda D)."""
    x = size / 2 * pixel
    r = np.hypot(x, distance)
    return float((1.0 - distance / r) * distance / pixel)


def parse_angles(angles: Any) -> np.ndarray:
    """A tuple (start, stop, step) in degrees (stop included when it lands on the grid), a "START:STOP:STEP"
    string, a comma list "A,B,C,..." or an explicit increasing list/array of angles."""
    if isinstance(angles, str):
        text = angles
        try:
            if ":" in text:
                parts = [float(v) for v in text.split(":")]
                if len(parts) != 3:
                    raise ValueError
                angles = (parts[0], parts[1], parts[2])
            else:
                angles = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--angles {text!r}: give START:STOP:STEP or a comma list of degrees") from None
    if isinstance(angles, tuple) and len(angles) == 3:
        start, stop, step = (float(v) for v in angles)
        if step <= 0 or stop < start:
            raise UsageError(f"angles {angles}: need START <= STOP and STEP > 0")
        n = int(np.floor((stop - start) / step + 1e-9)) + 1
        return start + step * np.arange(n)
    arr = np.asarray(angles, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2 or not (np.diff(arr) > 0).all():
        raise UsageError("angles: need (START, STOP, STEP) or an increasing list of at least two angles")
    return arr


def check_experiment(size: int, photons: float, distance: float, energy_kev: float, pixel: float,
                     oversampling: float, beamstop: float = 0.0) -> None:
    """UsageError on a 3D experiment that cannot be simulated (the checks every 3D kind shares)."""
    if size < 16:
        raise UsageError(f"size {size}: need at least 16 detector pixels")
    if photons <= 0 or distance <= 0 or energy_kev <= 0 or pixel <= 0:
        raise UsageError("photons, distance, energy and pixel must be positive")
    if oversampling < 2.0:
        raise UsageError(f"oversampling {oversampling}: need at least 2 (3 or more to phase reliably)")
    if beamstop < 0:
        raise UsageError(f"beamstop {beamstop}: must be >= 0 (radius in speckles)")


def tilt_angles(angles: Any, frames: int | None) -> np.ndarray:
    """The tilt angles (deg) of `angles` (`parse_angles`), or `frames` evenly spread over their range."""
    omegas = parse_angles(angles)
    if frames is not None:
        if frames < 2:
            raise UsageError(f"frames {frames}: need at least 2 tilt angles")
        omegas = np.linspace(omegas[0], omegas[-1], int(frames))
    return omegas


def detector_layout(size: int, centre: Any, pixel: float, lam: float,
                    distance: float) -> tuple[tuple[int, int], tuple[float, float], int, float]:
    """(detector shape, beam centre (default just off the middle, not on a pixel centre), the crop n
    `assemble3d` makes of it, the volume's q pitch p/(lambda D)): the frame every 3D kind shares."""
    shape = (int(size), int(size))
    if centre is None:
        centre = (size / 2 - 0.3, size / 2 + 0.2)
    centre = (float(centre[0]), float(centre[1]))
    return shape, centre, geometry.default_crop(shape, centre), pixel / (lam * distance)


def truth_volume(particle: Particle, n: int, dq: float, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The particle on the assembled volume's grid (n^3, q = 0 at n // 2, pitch dq): its transform
    times sqrt(scale) (photons of a central pixel), the object it inverts to, and the support
    (where the density is non-zero, on the real-space grid 1/(n dq))."""
    k1 = (np.arange(n) - n // 2) * dq
    qz, qy, qx = np.meshgrid(k1, k1, k1, indexing="ij")
    amp = np.sqrt(scale) * particle.transform(np.stack([qx, qy, qz]))
    del qx, qy, qz
    truth = fft.icfftn(amp.astype(np.complex128), norm="ortho").astype(np.complex64)
    r1 = (np.arange(n) - n // 2) / (n * dq)
    rz, ry, rx = np.meshgrid(r1, r1, r1, indexing="ij")
    support = particle.density(np.stack([rx, ry, rz])) != 0
    return amp, truth, support


def simulate_particle3d(out_dir: Path, *, seed: int = 0, size: int = 128, photons: float = 1e8,
                        distance: float = 0.08, energy_kev: float = 8.0, pixel: float = 75e-6,
                        angles: Any = (-70.0, 70.0, 1.0), frames: int | None = None,
                        oversampling: float = 3.2, beamstop: float = 0.0, noise: bool = True,
                        mirror: bool = False, centre: tuple[float, float] | None = None,
                        command: str = "cxdi simulate particle3d") -> dict[str, Any]:
    """Simulate a tilt series of the porous chiral particle and write the contract files into `out_dir`.

    size: detector pixels across (square); photons: mean expected photons per frame; distance (m), energy
    (keV), pixel (m); angles: (start, stop, step) in degrees or an explicit increasing list; frames: if
    given, that many angles evenly over the same range; oversampling: lambda D / (p S) of the particle's
    largest extent S; beamstop: radius of a beamstop shadow with zero counts, in speckles (one speckle
    is about `oversampling` pixels; 0: none);
    noise: Poisson counts (False: the expected counts, rounded); mirror: simulate the enantiomer;
    centre: beam centre (row, col) (default just off the middle, not on a pixel centre); command: the
    command line recorded in the provenance.
    Returns the experiment dict (also written as experiment.json).
    """
    check_experiment(size, photons, distance, energy_kev, pixel, oversampling, beamstop)
    seed = seed_value(seed)
    omegas = tilt_angles(angles, frames)
    out = make_out_dir(out_dir)
    lam = wavelength_from_kev(energy_kev)
    shape, centre, n, dq = detector_layout(size, centre, pixel, lam, distance)
    extent = lam * distance / (pixel * oversampling)
    particle = make_particle(extent, seed=seed)
    if mirror:
        particle = particle.mirrored()

    # frames: exact transform at every pixel's Ewald-sphere q, rotated into the sample frame
    qdet = geometry.pixel_q(shape, centre, distance, pixel, lam).reshape(3, -1)
    solid = (1.0 + lam * qdet[2]) ** 3                  # (D/r)^3: solid angle relative to the centre
    intens = np.empty((omegas.size, shape[0] * shape[1]))
    for k, om in enumerate(omegas):
        qs = geometry.rotation_y(np.deg2rad(-om)) @ qdet
        intens[k] = np.abs(particle.transform(qs)) ** 2 * solid
    scale = photons / float(np.mean(intens.sum(axis=1)))
    expected = (intens * scale).reshape(omegas.size, *shape)
    rng = np.random.default_rng(seed)
    counts = rng.poisson(expected) if noise else np.rint(expected)
    if np.max(counts) >= 2 ** 32:
        raise DataError("simulated counts overflow uint32; lower --photons")
    counts = counts.astype(np.uint32)
    bs = None
    bs_px = float(beamstop) * oversampling
    if beamstop > 0:
        ii, jj = np.indices(shape)
        bs = (ii - centre[0]) ** 2 + (jj - centre[1]) ** 2 <= bs_px ** 2
        counts[:, bs] = 0

    # truth: the analytic transform sampled on the crop's regular q grid, back to real space
    _, truth, support = truth_volume(particle, n, dq, scale)
    a = 1.0 / (n * dq)

    from cxdi_cli import io  # noqa: PLC0415

    geom = Geometry(wavelength=lam, distance=distance, pixel=(pixel, pixel), centre=centre, q_pitch=(dq, dq, dq))
    params = dict(seed=seed, size=size, photons=photons, distance=distance, energy_kev=energy_kev, pixel=pixel,
                  angles=[float(omegas[0]), float(omegas[-1]), int(omegas.size)], oversampling=oversampling,
                  beamstop=beamstop, noise=noise, mirror=mirror)
    step = io.make_step(command, params, [])
    io.write_lima(str(out / "tilts.h5"), counts,
                  extra={"/entry_0000/measurement/omega": omegas.astype(np.float64)})
    (out / "angles.txt").write_text("".join(f"{w:.6f}\n" for w in omegas))
    run = Run(obj=truth, support=support, metrics={}, params={"kind": "truth"})
    io.write_reconstruction(str(out / "truth.cxi"), Reconstruction(runs=[run], pixel_size=(a, a, a), geometry=geom),
                            step)
    files: dict[str, Any] = {"frames": "tilts.h5", "angles": "angles.txt", "darks": None, "truth": "truth.cxi",
                             "expected": None}
    mask_opt = ""
    if bs is not None:
        io.write_tiff(str(out / "beamstop.tif"), bs.astype(np.float32))
        files["mask"] = "beamstop.tif"
        mask_opt = " --mask beamstop.tif"
    exp = {
        "schema": SCHEMA, "kind": "particle3d", "energy_kev": energy_kev, "distance_m": distance, "pixel_m": pixel,
        "detector_shape": list(shape), "beam_centre": list(centre), "crop": n, "n_frames": int(omegas.size),
        "angles_deg": [float(omegas[0]), float(omegas[-1])], "angle_step_deg": float(np.median(np.diff(omegas))),
        "photons_total": float(counts.sum(dtype=np.float64)), "photons_expected_total": float(expected.sum()),
        "oversampling": float(lam * distance / (pixel * particle.extent)), "specimen_size_m": particle.extent,
        "real_pixel_m": a, "q_pitch_m": dq,
        "edge_curvature_voxels": edge_curvature_voxels(size, pixel, distance),
        "saturation_adu": None, "adu_per_photon": None, "dark_adu": None,
        "broken_pixels": {"hot": [], "dead": [], "saturated": []},
        "beamstop": {"radius_px": bs_px if beamstop > 0 else 0.0, "rod_width_px": 0, "rod_direction": None},
        "gaps": {"rows": [], "cols": []},
        "files": files,
        "preprocess": (f"cxdi assemble3d tilts.h5 -o volume.cxi --energy {energy_kev:g} --distance {distance:g} "
                       f"--pixel {pixel:g} --angles tilts.h5::/entry_0000/measurement/omega "
                       f"--centre {centre[0]:g},{centre[1]:g}{mask_opt}"),
        "seed": seed, "mirror": mirror,
        "particle": {"shapes": len(particle.kinds), "pores": particle.kinds.count("pore"),
                     "helix_spheres": particle.kinds.count("helix"), "helix_handedness": "left" if mirror else "right"},
    }
    write_json(out / "experiment.json", exp)
    return exp
