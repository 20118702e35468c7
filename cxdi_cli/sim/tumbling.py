"""`cxdi simulate tumbling`: photon-sparse frames of an asymmetric 3D particle at random orientations.

A levitated or injected specimen tumbles: each frame catches it at an unknown, uniformly random rotation R
and with a fluence that varies from shot to shot. The specimen (`make_tumbler`) is built from the analytic
shapes of `particle3d`'s particle but has no near-symmetry: a bare ellipsoidal body would leave EMC unable
to tell a frame's rotation from its half-turns about the body's axes. The frame's pixel j sees the exact
continuous transform of the particle (`tilt3d.Particle.transform`) at R^T q_j, q_j the pixel's exact
Ewald-sphere q (`geometry.pixel_q`), times the pixel's solid angle (D/r)^3; the counts are Poisson with a
chosen mean number of photons per frame. This is what `cxdi orient` (EMC) turns back into an intensity volume.

Files written: `frames.h5` (LIMA layout, uint32, with the true rotations as quaternions (w, x, y, z) in
`/entry_0000/measurement/quaternion` and the relative fluences in `/entry_0000/measurement/fluence`),
`intensity.cxi` (the true |F(q)|^2 on the volume grid `orient` builds, in the photons of a central pixel
at mean fluence), `truth.cxi` (the object), `experiment.json` (with the commands a user types next).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cxdi_cli import geometry
from cxdi_cli.model import DataError, Geometry, Pattern, Reconstruction, Run, UsageError, wavelength_from_kev
from cxdi_cli.reduce.orientation import quaternion_matrix, random_quaternions
from cxdi_cli.sim.output import out_dir as make_out_dir, seed_value, write_json
from cxdi_cli.sim.tilt3d import Particle, check_experiment, detector_layout, edge_curvature_voxels, place_pores, truth_volume

SCHEMA = "cxdi.simulate/1"
#: frames whose transform is evaluated in one go (bounds the temporary q arrays)
BLOCK = 64


def simulate_tumbling(out_dir: Path, *, seed: int = 0, size: int = 64, frames: int = 3000, photons: float = 2000.0,
                      distance: float = 0.05, energy_kev: float = 8.0, pixel: float = 75e-6,
                      oversampling: float = 3.0, fluence_spread: float = 0.2, beamstop: float = 0.0,
                      noise: bool = True, centre: tuple[float, float] | None = None,
                      command: str = "cxdi simulate tumbling") -> dict[str, Any]:
    """Simulate `frames` photon-sparse frames of the asymmetric particle (`make_tumbler`) at random orientations.

    size: detector pixels across (square); photons: mean photons per frame on the detector; fluence_spread:
    relative rms of the shot-to-shot fluence (gamma distributed, mean 1; 0: constant); oversampling:
    lambda D / (p S) of the particle's largest extent S; beamstop: radius of a zero-count shadow in
    speckles (0: none); noise: Poisson counts (False: expected counts, rounded); centre: beam centre
    (row, col) (default just off the middle). Returns the experiment dict (also experiment.json)."""
    check_experiment(size, photons, distance, energy_kev, pixel, oversampling, beamstop)
    if frames < 1:
        raise UsageError(f"frames {frames}: need at least one")
    if not 0 <= fluence_spread < 1:
        raise UsageError(f"fluence spread {fluence_spread}: expected 0 <= spread < 1")
    seed = seed_value(seed)
    out = make_out_dir(out_dir)
    rng = np.random.default_rng(seed)
    lam = wavelength_from_kev(energy_kev)
    shape, centre, n, dq = detector_layout(size, centre, pixel, lam, distance)
    particle = make_tumbler(lam * distance / (pixel * oversampling), seed=seed)
    quats = random_quaternions(frames, rng)
    fluence = rng.gamma(1.0 / fluence_spread ** 2, fluence_spread ** 2, frames) if fluence_spread > 0 \
        else np.ones(frames)
    q = geometry.pixel_q(shape, centre, distance, pixel, lam).reshape(3, -1)
    solid = geometry.solid_angle(shape, centre, distance, pixel).reshape(-1)
    ref = float(np.abs(particle.transform(np.zeros((3, 1))))[0] ** 2)   # |F(0)|^2: keeps float32 in range
    expected = np.empty((frames, q.shape[1]), np.float32)
    for f0 in range(0, frames, BLOCK):
        rots = quaternion_matrix(quats[f0:f0 + BLOCK])
        qs = np.einsum("fji,jp->ifp", rots, q)           # R^T q for every frame of the block
        expected[f0:f0 + BLOCK] = np.abs(particle.transform(qs)) ** 2 / ref * solid
    scale = photons / float(expected.sum(axis=1, dtype=np.float64).mean())   # photons per unit |F|^2 / ref
    expected *= (scale * fluence)[:, None].astype(np.float32)
    counts = rng.poisson(expected) if noise else np.rint(expected)
    if np.max(counts) >= 2 ** 32:
        raise DataError("simulated counts overflow uint32; lower --photons")
    counts = counts.astype(np.uint32)
    bs_px = float(beamstop) * oversampling
    bs = None
    if beamstop > 0:
        ii, jj = np.indices(shape)
        bs = (ii - centre[0]) ** 2 + (jj - centre[1]) ** 2 <= bs_px ** 2
        counts[:, bs.reshape(-1)] = 0
    counts = counts.reshape((frames,) + shape)

    # truth: the transform on the volume grid (q = 0 at n // 2, pitch p/(lambda D)), its intensity and object
    amp, truth, support = truth_volume(particle, n, dq, scale / ref)
    intensity = (np.abs(amp) ** 2).astype(np.float32)
    a = 1.0 / (n * dq)

    from cxdi_cli import io  # noqa: PLC0415

    geom = Geometry(wavelength=lam, distance=distance, pixel=(pixel, pixel), centre=centre, q_pitch=(dq, dq, dq))
    params = dict(seed=seed, size=size, frames=frames, photons=photons, distance=distance, energy_kev=energy_kev,
                  pixel=pixel, oversampling=oversampling, fluence_spread=fluence_spread, beamstop=beamstop,
                  noise=noise)
    step = io.make_step(command, params, [])
    io.write_lima(str(out / "frames.h5"), counts,
                  extra={"/entry_0000/measurement/quaternion": quats, "/entry_0000/measurement/fluence": fluence})
    vgeom = Geometry(wavelength=lam, distance=distance, pixel=(pixel, pixel), centre=None, q_pitch=(dq, dq, dq))
    io.write_pattern(str(out / "intensity.cxi"), Pattern(intensity=intensity, mask=np.zeros(intensity.shape, np.uint32),
                                                         geometry=vgeom), step)
    run = Run(obj=truth, support=support, metrics={}, params={"kind": "truth"})
    io.write_reconstruction(str(out / "truth.cxi"), Reconstruction(runs=[run], pixel_size=(a, a, a), geometry=geom),
                            step)
    files: dict[str, Any] = {"frames": "frames.h5", "orientations": "frames.h5::/entry_0000/measurement/quaternion",
                             "fluence": "frames.h5::/entry_0000/measurement/fluence", "intensity": "intensity.cxi",
                             "truth": "truth.cxi", "darks": None, "expected": None}
    mask_opt = ""
    if bs is not None:
        io.write_tiff(str(out / "beamstop.tif"), bs.astype(np.float32))
        files["mask"] = "beamstop.tif"
        mask_opt = " --mask beamstop.tif"
    orient_cmd = (f"cxdi orient frames.h5 -o volume.cxi --energy {energy_kev:g} --distance {distance:g} "
                  f"--pixel {pixel:g} --centre {centre[0]:g},{centre[1]:g}{mask_opt}")
    exp = {
        "schema": SCHEMA, "kind": "tumbling", "energy_kev": energy_kev, "distance_m": distance, "pixel_m": pixel,
        "detector_shape": list(shape), "beam_centre": list(centre), "crop": n, "n_frames": int(frames),
        "photons_per_frame": float(counts.sum(dtype=np.float64) / frames), "photons_expected_per_frame": photons,
        "fluence_spread": fluence_spread,
        "oversampling": float(lam * distance / (pixel * particle.extent)), "specimen_size_m": particle.extent,
        "real_pixel_m": a, "q_pitch_m": dq, "edge_curvature_voxels": edge_curvature_voxels(size, pixel, distance),
        "saturation_adu": None, "adu_per_photon": None, "dark_adu": None,
        "broken_pixels": {"hot": [], "dead": [], "saturated": []},
        "beamstop": {"radius_px": bs_px, "rod_width_px": 0, "rod_direction": None},
        "gaps": {"rows": [], "cols": []}, "files": files,
        "preprocess": orient_cmd,
        "commands": [orient_cmd, "cxdi phase volume.cxi -o runs.cxi", "cxdi average runs.cxi -o average.cxi"],
        "seed": seed,
        "particle": {"shapes": len(particle.kinds), "pores": particle.kinds.count("pore"),
                     "lobes": particle.kinds.count("lobe"), "helix_spheres": particle.kinds.count("helix"),
                     "helix_handedness": "right",
                     "body_axes": _unit_axes(particle.axes[particle.kinds.index("body")])},
    }
    write_json(out / "experiment.json", exp)
    return exp


#: the tumbler's shapes in the body's frame, lengths in units of R (half the particle's extent): the body's
#: semi-axes, then (direction, centre distance, radius, density) of each lobe
TUMBLER_BODY = (1.0, 0.72, 0.58)
TUMBLER_LOBES = (((0.6, 0.55, 0.58), 0.56, 0.44, 1.0), ((-0.55, 0.5, -0.67), 0.72, 0.26, 1.0))


def make_tumbler(extent: float, seed: int = 0, n_pores: int = 5, n_helix: int = 8) -> Particle:
    """An asymmetric specimen of largest extent `extent` (m) built from `tilt3d.Particle`'s analytic shapes.

    A levitated specimen has no symmetry, and EMC can only find orientations that its intensity tells
    apart: an ellipsoid's |F|^2 is unchanged by half-turns about its axes (with Friedel's law, by mirrors
    through its principal planes), which the small pores and helix of `make_particle` barely break. So the
    body here is a flatter triaxial ellipsoid (TUMBLER_BODY) with two spherical lobes bulging out of it at
    oblique, unrelated directions (TUMBLER_LOBES; density 1, added where they overlap the body), inside
    the ball of radius R so the extent stays the body's; then `n_pores` pores off the lobes and a
    right-handed helix of `n_helix` dense spheres, as in `make_particle`."""
    rng = np.random.default_rng(seed)
    R = extent / 2.0
    rot = quaternion_matrix(np.array([0.9, 0.25, -0.3, 0.2]) / np.linalg.norm([0.9, 0.25, -0.3, 0.2]))
    body = rot @ np.diag(TUMBLER_BODY) * R
    axes, centres, dens, kinds = [body], [np.zeros(3)], [1.0], ["body"]
    for direction, dist, radius, rho in TUMBLER_LOBES:
        u = rot @ (np.asarray(direction) / np.linalg.norm(direction))
        axes.append(np.eye(3) * radius * R)
        centres.append(u * dist * R)
        dens.append(rho)
        kinds.append("lobe")
    placed: list[tuple[np.ndarray, float]] = [(c, a[0, 0]) for c, a in zip(centres[1:], axes[1:])]
    # helix about an oblique axis through the body's centre: r(t) = rho (cos, sin)(2 pi t) + rise t w
    w = rot @ np.array([0.5, -0.3, 1.0])
    w /= np.linalg.norm(w)
    e1 = np.cross(w, [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(w, e1)
    rh = 0.07 * R
    for t in np.linspace(-0.5, 0.5, n_helix):
        h = 0.3 * R * (np.cos(2 * np.pi * t) * e1 + np.sin(2 * np.pi * t) * e2) + 0.6 * R * t * w
        axes.append(np.eye(3) * rh)
        centres.append(h)
        dens.append(2.0)
        kinds.append("helix")
        placed.append((h, rh))
    for c, r in place_pores(rng, body, R, placed, n_pores, (0.1, 0.18), inside=0.95):
        axes.append(np.eye(3) * r)
        centres.append(c)
        dens.append(-1.0)
        kinds.append("pore")
    return Particle(np.array(axes), np.array(centres), np.array(dens, float), kinds)


def _unit_axes(a: np.ndarray) -> list[list[float]]:
    """The body's principal directions (x, y, z) as unit vectors: a bare ellipsoid's intensity is unchanged
    by a half turn about any of them (the tumbler's lobes break that; kept to measure how much)."""
    return [[float(v) for v in col / np.linalg.norm(col)] for col in a.T]
