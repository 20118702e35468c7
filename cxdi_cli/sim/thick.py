"""`cxdi simulate thick`: a tilt series of a specimen thicker than the depth of field, with its projection as truth.

One flat pattern of a thick specimen is not the Fourier transform of its projection: the detector
samples F(q) on the Ewald sphere, q_z = -lambda |q_perp|^2 / 2, so slices at depth z reach the pattern
with a defocus phase exp(-2 pi i q_z z). Once the depth T exceeds the depth of field
DOF = 2 dr^2 / lambda (dr the resolution element, `planning`), the phase at the detector edge,
pi |q_z| T, is of order pi and the 2D image of that pattern is blurred by defocus. The Fourier-slice
theorem says the plane q_z = 0 of the 3D transform is the transform of the projection along the beam;
`cxdi assemble3d --slice` takes that plane from the Ewald-corrected volume of a tilt series
(`reduce.slicing`).

The specimen is a sum of uniform ellipsoids (`tilt3d.Particle`, exact analytic transform): a body
elongated along the beam (depth `thickness`, width set by `oversampling`), with small dense granules
and pores spread over its whole depth, so that the front and back features are the ones a flat pattern
defocuses. The frames are the exact transform at every pixel's Ewald q, rotated by R_y(-omega), times
the pixel's solid angle (as in `tilt3d`).

Files written: `tilts.h5` (LIMA, uint32, `/entry_0000/measurement/omega`), `angles.txt`, `truth.cxi`
(the 2D projection along the beam of the zero-tilt frame, as a reconstruction of the default crop sees
it: the analytic F(q_x, q_y, 0) on the crop's q grid, back to real space), `experiment.json` with the
two commands to compare: the curvature-aware slice (`preprocess`) and the zero-tilt frame preprocessed
as a flat 2D pattern (`flat_preprocess`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cxdi_cli import fft, geometry
from cxdi_cli.model import DataError, Geometry, Reconstruction, Run, UsageError, wavelength_from_kev
from cxdi_cli.sim.output import out_dir as make_out_dir, seed_value, write_json
from cxdi_cli.sim.tilt3d import Particle, check_experiment, detector_layout, tilt_angles

SCHEMA = "cxdi.simulate/1"


def make_thick_specimen(width: float, depth: float, seed: int = 0, n_granules: int = 20,
                        n_pores: int = 3) -> Particle:
    """A body of width `width` across and depth `depth` along z (m), with dense granules and pores at all depths.

    Body (density 1; a cell, a polymer bead): a main lobe, semi-axes (0.36, 0.33) width across and
    depth/2 along the beam, and a bud, semi-axes (0.2, 0.18) width and 0.6 depth/2, overlapping it on
    one side (density 2 where they overlap) so that the projected support is not centro-symmetric (an
    ellipse is, and leaves phase retrieval between object and twin). Granules: `n_granules` dense balls
    (radius 0.04-0.07 width, density +10 over the body's: heavy-metal labels, mineral grains), the fine,
    high-contrast detail a flat pattern defocuses; pores: `n_pores` empty balls (radius 0.08-0.12
    width). Their depths are spread evenly over 85 % of the main lobe's depth (in random order), their
    lateral positions random (seeded); each lies fully inside a lobe and apart from the others.
    """
    if width <= 0 or depth <= 0:
        raise UsageError("width and depth of the thick specimen must be positive")
    rng = np.random.default_rng(seed)
    lobes = [(np.array([-0.12 * width, 0.0, 0.0]), np.array([0.36 * width, 0.33 * width, depth / 2])),
             (np.array([0.30 * width, 0.12 * width, 0.0]), np.array([0.20 * width, 0.18 * width, 0.3 * depth]))]
    axes = [np.diag(ax) for _, ax in lobes]
    centres = [ctr for ctr, _ in lobes]
    dens, kinds = [1.0, 1.0], ["body", "body"]
    placed: list[tuple[np.ndarray, float]] = []
    n = n_granules + n_pores
    depths = rng.permutation(np.linspace(-0.85, 0.85, n)) * depth / 2 if n else np.zeros(0)
    for k, z in enumerate(depths):
        kind, rho, radii = ("granule", 10.0, (0.04, 0.07)) if k < n_granules else ("pore", -1.0, (0.08, 0.12))
        for _ in range(5000):
            r = rng.uniform(*radii) * width
            ctr = np.array([*rng.uniform(-0.5, 0.5, 2) * width, z])
            # fully inside one lobe: the ball mapped into the lobe's unit sphere stays within it
            if not any(np.linalg.norm((ctr - lc) / la) + r / la.min() <= 0.97 for lc, la in lobes):
                continue
            if any(np.linalg.norm(ctr - pc) < r + pr + 0.02 * width for pc, pr in placed):
                continue
            placed.append((ctr, r))
            axes.append(np.eye(3) * r)
            centres.append(ctr)
            dens.append(rho)
            kinds.append(kind)
            break
    return Particle(np.array(axes), np.array(centres), np.array(dens, float), kinds)


def projected_support(particle: Particle, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where a line along z through (x, y) (m) crosses a body lobe: the support of the projection."""
    out = np.zeros(np.shape(x), bool)
    for a, c, kind in zip(particle.axes, particle.centres, particle.kinds):
        if kind != "body":
            continue
        m = np.linalg.inv(a @ a.T)
        d = np.stack([x - c[0], y - c[1], np.zeros_like(x)])
        mz_d = np.tensordot(m[2], d, axes=1)
        dmd = np.einsum("i...,ij,j...->...", d, m, d)
        out |= mz_d ** 2 - m[2, 2] * (dmd - 1.0) > 0
    return out


def tilt_frames(particle: Particle, omegas: np.ndarray, shape: tuple[int, int], centre: tuple[float, float],
                distance: float, pixel: float, wavelength: float) -> np.ndarray:
    """Expected relative intensities (k, ny, nx): |F|^2 at every pixel's exact Ewald q, turned into the
    sample frame by R_y(-omega), times the pixel's solid angle (D/r)^3 (DESIGN §4)."""
    qdet = geometry.pixel_q(shape, centre, distance, pixel, wavelength).reshape(3, -1)
    solid = geometry.solid_angle(shape, centre, distance, pixel).reshape(-1)
    out = np.empty((omegas.size, shape[0] * shape[1]))
    for k, om in enumerate(omegas):
        out[k] = np.abs(particle.transform(geometry.rotation_y(np.deg2rad(-om)) @ qdet)) ** 2 * solid
    return out.reshape(omegas.size, *shape)


def simulate_thick(out_dir: str | Path, *, seed: int = 0, size: int = 128, photons: float = 1e8,
                   distance: float = 0.03, energy_kev: float = 8.0, pixel: float = 75e-6,
                   angles: Any = (-60.0, 60.0, 1.0), frames: int | None = None, oversampling: float = 4.0,
                   thickness: float | None = None, noise: bool = True, centre: tuple[float, float] | None = None,
                   command: str = "cxdi simulate thick") -> dict[str, Any]:
    """Simulate a tilt series of a specimen deeper than the depth of field and write the contract files.

    size: detector pixels across; photons: mean expected photons per frame; distance (m), energy (keV),
    pixel (m) (the defaults give a high numerical aperture, theta_max ~ 9 deg, and a depth of field of a
    few nm); angles: (start, stop, step) in degrees or an increasing list, 0 should be among them (the
    flat pattern compared is the frame nearest 0); frames: that many angles evenly over the range;
    oversampling: lambda D / (p W) for the specimen's width W across the beam; thickness: its depth
    along the beam (m) [default: 0.45 lambda D / p, 9.2 depths of field at the default geometry];
    noise: Poisson counts (False: expected counts, rounded); centre: beam centre (row, col).
    Only ratios matter to the physics (Born approximation, no absorption): depth over depth of field,
    curvature in voxels, oversampling. At the defaults the specimen is 15 nm wide and 28 nm deep with
    0.48 nm pixels; energy 1 keV and distance 0.03 m make it 8 times larger, everything else the same.
    Returns the experiment dict (also written as experiment.json).
    """
    check_experiment(size, photons, distance, energy_kev, pixel, oversampling)
    seed = seed_value(seed)
    omegas = tilt_angles(angles, frames)
    lam = wavelength_from_kev(energy_kev)
    field = lam * distance / pixel                      # the real-space box of the detector's q pitch
    width = field / oversampling
    depth = 0.45 * field if thickness is None else float(thickness)
    if not 0 < depth < field:
        raise UsageError(f"thickness {depth:g} m: must be positive and below the field of view "
                         f"lambda D / p = {field:g} m")
    out = make_out_dir(out_dir)
    shape, centre, n, dq = detector_layout(size, centre, pixel, lam, distance)
    particle = make_thick_specimen(width, depth, seed=seed)

    intens = tilt_frames(particle, omegas, shape, centre, distance, pixel, lam)
    scale = photons / float(np.mean(intens.sum(axis=(1, 2))))
    expected = intens * scale
    del intens
    rng = np.random.default_rng(seed)
    counts = rng.poisson(expected) if noise else np.rint(expected)
    if np.max(counts) >= 2 ** 32:
        raise DataError("simulated counts overflow uint32; lower --photons")
    counts = counts.astype(np.uint32)

    # truth: the projection along z, band-limited as the crop sees it (Fourier-slice theorem: F(qx, qy, 0))
    k1 = (np.arange(n) - n // 2) * dq
    qy, qx = np.meshgrid(k1, k1, indexing="ij")
    amp = np.sqrt(scale) * particle.transform(np.stack([qx, qy, np.zeros_like(qx)]))
    truth = fft.icfftn(amp.astype(np.complex128), norm="ortho").astype(np.complex64)
    a = 1.0 / (n * dq)
    r1 = (np.arange(n) - n // 2) * a
    ry, rx = np.meshgrid(r1, r1, indexing="ij")
    support = projected_support(particle, rx, ry)

    from cxdi_cli import io  # noqa: PLC0415

    zero = int(np.argmin(np.abs(omegas)))
    dr = lam * distance / (n * pixel)
    dof = 2 * dr ** 2 / lam
    q_edge = geometry.pixel_q((1, 1), (0.0, -n / 2), distance, pixel, lam)[:, 0, 0]   # n/2 pixels out
    params = dict(seed=seed, size=size, photons=photons, distance=distance, energy_kev=energy_kev, pixel=pixel,
                  angles=[float(omegas[0]), float(omegas[-1]), int(omegas.size)], oversampling=oversampling,
                  thickness=depth, noise=noise)
    step = io.make_step(command, params, [])
    io.write_lima(str(out / "tilts.h5"), counts,
                  extra={"/entry_0000/measurement/omega": omegas.astype(np.float64)})
    (out / "angles.txt").write_text("".join(f"{w:.6f}\n" for w in omegas))
    geom = Geometry(wavelength=lam, distance=distance, pixel=(pixel, pixel), centre=(n // 2, n // 2),
                    q_pitch=(dq, dq))
    run = Run(obj=truth, support=support, metrics={}, params={"kind": "truth", "what": "projection along z"})
    io.write_reconstruction(str(out / "truth.cxi"), Reconstruction(runs=[run], pixel_size=(a, a), geometry=geom),
                            step)
    logbook = f"--energy {energy_kev:g} --distance {distance:g} --pixel {pixel:g} --centre {centre[0]:g},{centre[1]:g}"
    exp = {
        "schema": SCHEMA, "kind": "thick", "energy_kev": energy_kev, "distance_m": distance, "pixel_m": pixel,
        "detector_shape": list(shape), "beam_centre": list(centre), "crop": n, "n_frames": int(omegas.size),
        "angles_deg": [float(omegas[0]), float(omegas[-1])], "angle_step_deg": float(np.median(np.diff(omegas))),
        "photons_total": float(counts.sum(dtype=np.float64)), "photons_expected_total": float(expected.sum()),
        "oversampling": float(field / width), "specimen_width_m": width, "thickness_m": depth,
        "depth_of_field_m": dof, "thickness_over_dof": depth / dof,
        "edge_defocus_phase_rad": float(np.pi * abs(q_edge[2]) * depth),
        "edge_curvature_voxels": float(abs(q_edge[2]) / dq),
        "real_pixel_m": a, "q_pitch_m": dq, "zero_tilt_frame": zero, "zero_tilt_deg": float(omegas[zero]),
        "saturation_adu": None, "adu_per_photon": None, "dark_adu": None,
        "broken_pixels": {"hot": [], "dead": [], "saturated": []},
        "beamstop": {"radius_px": 0.0, "rod_width_px": 0, "rod_direction": None},
        "gaps": {"rows": [], "cols": []},
        "files": {"frames": "tilts.h5", "angles": "angles.txt", "darks": None, "truth": "truth.cxi",
                  "expected": None},
        "preprocess": (f"cxdi assemble3d tilts.h5 --slice -o slice.cxi {logbook} "
                       "--angles tilts.h5::/entry_0000/measurement/omega"),
        "flat_preprocess": f"cxdi preprocess tilts.h5 --frames {zero}:{zero + 1} -o flat.cxi {logbook}",
        "seed": seed,
        "specimen": {"shapes": len(particle.kinds), "granules": particle.kinds.count("granule"),
                     "pores": particle.kinds.count("pore")},
    }
    write_json(out / "experiment.json", exp)
    return exp
