"""Benchmark of EMC (`cxdi orient`, not a test): time per iteration against frames and rotations.

    .venv/bin/python -m tests.bench_orient                 # the timing table (64^2 frames, ~2000 photons)
    .venv/bin/python -m tests.bench_orient --full [DIR]    # issue 17's full-size check (minutes to hours)

Timing: Poisson frames of a speckled, radially decaying pattern (the cost does not depend on the content),
one EMC iteration per (frames, level) pair, in this process (`OPENBLAS_NUM_THREADS` bounds the matrix
products' threads). The cost is rotations x frames x pixels for the two matrix products (likelihood,
merge weights) plus rotations x pixels x frame chunks for the slicing and the merge.

--full: `simulate tumbling` (3000 frames of 64^2, ~2000 photons each, its lobed asymmetric particle), EMC
from a random start in the stages `cxdi orient` runs (`orientation.default_stages`: low resolution first),
then: the correlation with the true intensity in the ball holding 90 % of the photons after the best global
rotation, the share of frames whose rotation is within two grid steps of the truth (up to the beam
half-turn), and `cxdi phase` of the volume turned back into the truth's frame, with its NRMSE against the
true object, beside two references phased the same way on the same mask: the noise-free true volume, and
the frames' photons merged at their true rotations (what perfect orientations give at this fluence).

Measured (2 shared cores, niced, 2026-12-02): 0.36-1.0 s per iteration at level 3 up to 3.6-6.9 s at level 6
for 250-2000 frames (about a M P + b M F P: slicing and merging per rotation, matrix products per rotation
and frame). --full with the default stages (level 6, 50 iterations): 307-367 s; correlation in the
90 %-photon ball 0.9995 (anisotropic part 0.996), orientations within two steps (24 deg) 98.8 % (median
error 9.8 deg), phase NRMSE 0.410 (true volume 0.275; frames merged at their true rotations 0.399) for
the run ranked first; with 8 runs and `cxdi average` (what a user keeps): /entry_1 0.413, average 0.316
(true volume 0.272/0.182, true rotations 0.381/0.240); the recovered volume's average over phase seeds
1-3: 0.327, 0.326, 0.380. Since the 3D default recipe closes with the low-signal cut-off (`cut`,
phasing/regularise.py): /entry_1 0.299, average 0.262 (true volume 0.115/0.114, true rotations
0.253/0.201); the recovered volume's average over phase seeds 1-3: 0.262, 0.266, 0.266. EMC
is at the photon limit: 6e6 photons in all leave a noisy 64^3 volume (per-shell correlation with the truth
0.87 at 12-15 voxels and 0.33 at 24-27, against 0.90 and 0.42 at the true rotations). Level 7 (17220
rotations): 646 s, 98.7 %, NRMSE 0.398. With particle3d's particle (an ellipsoidal body whose intensity
is nearly unchanged by its half-turns) EMC kept a mixture of them: 12.6 % within two steps, NRMSE 0.77.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def timing() -> None:
    from cxdi_cli.reduce import orientation as emc

    rng = np.random.default_rng(0)
    size = 64
    det = emc.detector_coordinates((size, size), (size / 2 - 0.3, size / 2 + 0.2), wavelength=1.55e-10,
                                   distance=0.05, pixel=75e-6, size=size)
    r = np.linalg.norm(det.q, axis=0)
    env = 1.0 / (1 + (r / 3) ** 2) ** 2 * (1.5 + np.cos(0.9 * det.q[0]) * np.cos(0.7 * det.q[1]))
    env *= 2000 / env.sum()
    counts_all = rng.poisson(env, (2000, env.size)).astype(np.float32)
    print(f"EMC, one iteration, 64^2 detector ({det.q.shape[1]} pixels used), ~2000 photons per frame, "
          f"64^3 volume; seconds per iteration (in-process)")
    print(f"{'frames':>7} | " + " | ".join(f"level {lv} ({emc.rotation_count(lv):6d} rot.)" for lv in (3, 4, 5, 6)))
    for nf in (250, 500, 1000, 2000):
        row = []
        for lv in (3, 4, 5, 6):
            emc.orient(counts_all[:8], det, level=1, iterations=1)        # compile / warm up
            t = time.perf_counter()
            emc.orient(counts_all[:nf], det, level=lv, iterations=1, beta=0.1)
            row.append(time.perf_counter() - t)
        print(f"{nf:7d} | " + " | ".join(f"{v:24.2f}" for v in row), flush=True)


def full(folder: Path) -> None:
    from cxdi_cli import io
    from cxdi_cli.model import MASK_BITS, Pattern, wavelength_from_kev
    from cxdi_cli.reduce import orientation as emc
    from cxdi_cli.registration import nrms_error
    from cxdi_cli.sim.tumbling import simulate_tumbling
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "experiment.json").exists():
        simulate_tumbling(folder, size=64, frames=3000, photons=2000, seed=1)
    exp = json.loads((folder / "experiment.json").read_text())
    with h5py.File(folder / "frames.h5") as f:
        frames = f["/entry_0000/measurement/data"][()]
        quats = f["/entry_0000/measurement/quaternion"][()]
    truth = io.read_pattern(str(folder / "intensity.cxi")).intensity.astype(np.float64)
    det = emc.detector_coordinates(frames.shape[1:], tuple(exp["beam_centre"]),
                                   wavelength=wavelength_from_kev(exp["energy_kev"]), distance=exp["distance_m"],
                                   pixel=exp["pixel_m"], size=exp["crop"])
    counts = emc.frames_to_counts(frames, det)

    def show(h: dict) -> None:
        print(f"  it {h['iteration']:3d} beta {h['beta']:.3f} llk {h['loglik_per_frame']:.2f} "
              f"MI {h['mutual_information']:.3f} sharp {h['sharpness']:.3f} change {h['model_change']:.4f} "
              f"{h['seconds']:.1f} s", flush=True)

    t0 = time.perf_counter()
    model = None
    for stage in emc.default_stages(level=6, iterations=50, radius=det.radius):
        print(f"stage {stage}:", flush=True)
        res = emc.orient(counts, det, seed=0, model=model, on_iteration=show, **stage)
        model = res.pattern.intensity
    wall = time.perf_counter() - t0
    vol = res.pattern.intensity.astype(np.float64)
    q5, _ = emc.rotation_grid(5)
    g, _ = emc.best_global_rotation(vol, truth, q5)
    turned = emc.rotate_volume(truth, g)
    corr, radius = emc.shell_correlation(vol, turned)
    aniso = emc.anisotropic_correlation(vol, turned, radius)
    ang, _ = emc.orientation_agreement(res.orientations, quats)
    level = int(res.stats["level"])
    within = float(np.mean(ang <= 2 * emc.grid_step(level)))
    sym = np.array([[1.0, 0, 0, 0]] + [[0.0] + ax for ax in exp["particle"]["body_axes"]])
    ang_s, _ = emc.orientation_agreement(res.orientations, quats, sym)
    # the volume turned back into the truth's frame (vol(G^-1 q)), phased, compared with the true object
    back = emc.rotate_volume(vol, emc.quaternion_conjugate(g))
    p = res.pattern
    n = back.shape[0]
    z, y, x = np.indices(back.shape) - n // 2
    inside = x * x + y * y + z * z <= (n - 1 - n // 2 - 1) ** 2
    mask = np.where(inside & (p.mask == 0), np.uint32(0), np.uint32(MASK_BITS["unmeasured"])).astype(np.uint32)
    io.write_pattern(str(folder / "volume.cxi"), p, io.make_step("bench_orient", {}, []))
    # references on the same mask: the noise-free true volume, and the frames' own photons merged at their
    # true rotations (nearest voxel; what perfect orientations would give): phasing's floor at this fluence
    with h5py.File(folder / "frames.h5") as f:
        flu = f["/entry_0000/measurement/fluence"][()]
    c = n // 2
    exposure = np.zeros(n ** 3)
    for f0 in range(0, quats.shape[0], 200):
        u = np.rint(np.einsum("rji,jp->rip", emc.quaternion_matrix(quats[f0:f0 + 200]), det.q) + c).astype(int)
        exposure += np.bincount(((u[:, 2] * n + u[:, 1]) * n + u[:, 0]).ravel(),
                                (det.solid[None, :] * flu[f0:f0 + 200, None]).ravel(), minlength=n ** 3)
    exposure = exposure.reshape(back.shape)
    merged = np.random.default_rng(0).poisson(truth * exposure) / np.maximum(exposure, 1e-12)
    ideal = np.where(exposure > 0, merged, 0.0)
    true_obj = io.read_reconstruction(str(folder / "truth.cxi")).runs[0].obj
    nrmse = {}
    for name, vol_k in (("recovered", back), ("true", truth), ("ideal", ideal)):
        io.write_pattern(str(folder / f"volume_{name}.cxi"),
                         Pattern(intensity=vol_k.astype(np.float32), mask=mask, geometry=p.geometry,
                                 extra=dict(p.extra)), io.make_step("bench_orient", {}, []))
        cxdi = str(Path(sys.executable).parent / "cxdi")
        subprocess.run([cxdi, "phase", str(folder / f"volume_{name}.cxi"), "-o", str(folder / f"runs_{name}.cxi"),
                        "--runs", "8", "--jobs", "2", "--seed", "1", "--threads", "1", "-q"], check=True)
        subprocess.run([cxdi, "average", str(folder / f"runs_{name}.cxi"), "-o", str(folder / f"avg_{name}.cxi"),
                        "-q"], check=True)
        nrmse[name] = nrms_error(io.read_reconstruction(str(folder / f"runs_{name}.cxi")).runs[0].obj, true_obj)
        nrmse[name + "_avg"] = nrms_error(io.read_reconstruction(str(folder / f"avg_{name}.cxi")).runs[0].obj, true_obj)
    print(f"full-size EMC: {counts.shape[0]} frames, {counts.shape[1]} pixels, "
          f"{res.stats['rotations']} rotations (step {res.stats['grid_step_deg']:.1f} deg), {wall:.0f} s in all, "
          f"{res.stats['seconds_per_iteration']:.1f} s per iteration of the last stage")
    print(f"  intensity correlation in the 90 %-photon ball (radius {radius:.1f} voxels): {corr:.4f}; "
          f"anisotropic part: {aniso:.4f}")
    print(f"  orientations within two grid steps ({2 * np.degrees(emc.grid_step(level)):.0f} deg, up to the beam "
          f"half-turn): {100 * within:.1f} %; also up to the body's half-turns: "
          f"{100 * np.mean(ang_s <= 2 * emc.grid_step(level)):.1f} %; "
          f"median error {np.degrees(np.median(ang)):.1f} deg")
    print(f"  phase (8 runs, default recipe; /entry_1, then the average of `cxdi average`) of the volume turned "
          f"back: NRMSE {nrmse['recovered']:.3f}, {nrmse['recovered_avg']:.3f}; of the true volume "
          f"{nrmse['true']:.3f}, {nrmse['true_avg']:.3f}; of the frames merged at their true rotations "
          f"{nrmse['ideal']:.3f}, {nrmse['ideal_avg']:.3f}")


if __name__ == "__main__":
    if "--full" in sys.argv:
        rest = [a for a in sys.argv[1:] if a != "--full"]
        if rest:
            full(Path(rest[0]))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                full(Path(tmp))
    else:
        timing()
