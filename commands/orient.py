"""cxdi orient: frames of a tumbling specimen at unknown orientations into a 3D volume (EMC)."""
from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from cxdi_cli.commands import _common as c


def orient(
    frames: Annotated[List[str], typer.Argument(help="Frame stacks (HDF5 LIMA/NeXus, file.h5::/path) or image "
                                                     "files (TIFF, EDF, CBF, npy) in photons, one specimen "
                                                     "orientation per frame.", show_default=False)],
    output: c.OutputOpt = "-",
    energy: Annotated[Optional[float], typer.Option("--energy", help="Photon energy (keV) [default: from the "
                                                    "frames' file].", show_default=False)] = None,
    distance: Annotated[Optional[float], typer.Option("--distance", help="Sample-detector distance (m) "
                                                      "[default: from the frames' file].", show_default=False)] = None,
    pixel: Annotated[Optional[float], typer.Option("--pixel", help="Detector pixel size (m) [default: from the "
                                                   "frames' file].", show_default=False)] = None,
    centre: c.CentreOpt = "auto",
    size: Annotated[Optional[int], typer.Option("--size", min=4, help="Voxels per axis [default: the detector "
                                                                      "crop around the centre].")] = None,
    iterations: Annotated[int, typer.Option("--iterations", min=1, help="EMC iterations, all stages "
                                                                        "together.")] = 50,
    level: Annotated[int, typer.Option("--level", min=1, max=40, help="Refinement of the rotation grid: "
                                                                      "10 (n + 5 n^3) rotations, step about "
                                                                      "72/n degrees.")] = 6,
    rotations: Annotated[Optional[int], typer.Option("--rotations", min=1, help="At least this many rotations: "
                                                     "the smallest --level that has them (wins over --level).",
                                                     show_default=False)] = None,
    beta: Annotated[Optional[float], typer.Option("--beta", help="Starting likelihood temperature 0 < beta <= 1 "
                                                  "of the first stage [default: 300 / photons per frame].",
                                                  show_default=False)] = None,
    oversample: Annotated[int, typer.Option("--oversample", min=1, max=4, help="EMC works on a grid this many "
                                                                               "times finer than the output "
                                                                               "volume (one more in the "
                                                                               "low-resolution stage).")] = 2,
    scale: Annotated[bool, typer.Option("--scale/--no-scale", help="Fit a fluence factor per frame.")] = True,
    friedel: Annotated[bool, typer.Option("--friedel/--no-friedel", help="Symmetrise the volume by Friedel's "
                                                                         "law, I(q) = I(-q), every iteration.")] = True,
    mask: Annotated[Optional[str], typer.Option("--mask", help="User mask applied to every frame "
                                                               "(non-zero = bad).")] = None,
    auto_mask: Annotated[bool, typer.Option("--auto-mask/--no-auto-mask", help="Detect module gaps, hot/dead "
                                                                               "pixels and the beamstop on the "
                                                                               "sum of the frames.")] = True,
    orientations: Annotated[Optional[str], typer.Option("--orientations", help="Also write each frame's most "
                                                        "probable rotation, its probability and fluence, and "
                                                        "the per-iteration figures to this HDF5 file.",
                                                        show_default=False)] = None,
    seed: c.SeedOpt = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Run chunks of frames in this many local "
                                                                  "processes.")] = 1,
    scheduler: c.SchedulerOpt = None,
    scheduler_file: c.SchedulerFileOpt = None,
    json_report: c.JsonOpt = False,
) -> None:
    """Recover the 3D intensity volume from frames of a specimen at unknown, random orientations (EMC).

    Expand-maximize-compress (Loh & Elser 2009, Phys. Rev. E 79, 026705; Ayyer et al. 2016, J. Appl.
    Cryst. 49, 1320): each iteration slices the current volume at every rotation of a quasi-uniform grid
    (the 600-cell refined --level times) along every pixel's exact Ewald-sphere q, scores each frame at
    each rotation by its Poisson log-likelihood with a per-frame fluence factor, and merges the frames back
    into the volume weighted by the probability of each rotation. beta < 1 tempers the likelihood while
    the volume is still vague (deterministic annealing: doubled every few iterations up to 1).
    The start is the orientation average of the data (spherically symmetric) with random voxel noise
    (--seed). Two stages: 2/5 of the iterations on the pixels within a quarter of the largest |q| (at
    least 6 voxels) on a grid one --level coarser, then all pixels at --level from that volume, beta
    annealed again from 0.1. The
    slice-and-merge of an iteration blurs by about a voxel of the grid it works on, which lowers the
    likelihood of the true speckles and traps EMC in a blurred volume: it works on a grid --oversample
    times finer than the output, one finer still in the low-resolution stage, where the photons are
    dense (memory: 3 x 8 bytes x (oversample x size)^3 per chunk of frames). Finer grids at high q let
    sparse voxels fit single frames' noise. The volume is known up to a global rotation; a frame's rotation up to a half-turn about
    the beam, which only the Ewald curvature tells apart (Friedel's law).

    Geometry as in assemble3d: the volume has q = 0 at N//2 and the detector's q pitch p/(λD); counts are
    divided by the pixel's solid angle (D/r)³; only the good pixels whose q stays inside the grid at every
    rotation are used. Voxels no rotation reached are flagged 'unmeasured'; the per-voxel weight (the
    frames' share of pixels merged there) goes to /entry_1/data_1/weight: phase reads the file as it
    reads an assembled tilt series. The frames are held in memory as the used pixels' counts; the work of
    an iteration is cut into chunks of frames (--jobs, --scheduler) whose memory is two rotations x
    frames matrices.

    Progress per iteration on stderr: log-likelihood per frame (Poisson, without the log K! constant),
    mutual information between frames and rotations (nats; log M at most) and sharpness (mean probability
    of each frame's best rotation). Time per iteration grows as rotations x frames x pixels.

    Example: cxdi orient frames.h5 -o volume.cxi --energy 8 --distance 0.05 --pixel 75e-6 --centre 31.7,32.2
    """
    c.check_stdout(output, json_report)
    c.check_numbers(("--energy", energy, "> 0"), ("--distance", distance, "> 0"), ("--pixel", pixel, "> 0"),
                    ("--beta", beta, "> 0"))
    if beta is not None and beta > 1:
        raise c.usage_error(f"--beta {beta:g}: expected 0 < beta <= 1")
    if orientations is not None and orientations in ("-", output):
        raise c.usage_error("--orientations: give a file other than the output and standard output")
    from cxdi_cli import io  # noqa: PLC0415
    from cxdi_cli.reduce import orientation as emc, pattern as preprocess  # noqa: PLC0415

    book = io.logbook(frames[0]) if frames else {}
    energy = energy if energy is not None else book.get("energy_kev")
    distance = distance if distance is not None else book.get("distance_m")
    pixel = pixel if pixel is not None else book.get("pixel_m")
    missing = [name for name, v in (("--energy", energy), ("--distance", distance), ("--pixel", pixel)) if v is None]
    if missing:
        raise c.usage_error(f"{', '.join(missing)}: not given and not found in {frames[0]}")
    if rotations is not None:
        level = emc.level_for_rotations(rotations)
    if size is not None:  # the working grid's model and accumulators: ~40 bytes a voxel
        io.check_memory(40.0 * ((oversample + 1) * size) ** 3, f"a {(oversample + 1) * size}^3 working grid",
                        "reduce --size or --oversample")
    ctr = preprocess.parse_centre(centre)
    pool = c.executor(jobs, scheduler, scheduler_file)
    params = dict(energy_kev=energy, distance_m=distance, pixel_m=pixel, centre=centre, size=size,
                  iterations=iterations, level=level, beta=beta, oversample=oversample, scale=scale,
                  friedel=friedel, mask=mask, auto_mask=auto_mask, seed=seed or 0)

    def said(h: dict) -> None:
        c.say(f"iteration {h['iteration']:3d} (stage {h['stage']}): beta {h['beta']:.3g}, log-likelihood {h['loglik_per_frame']:.6g} per "
              f"frame, mutual information {h['mutual_information']:.3f}, sharpness {h['sharpness']:.3f}, "
              f"change {h['model_change']:.3g}, {h['seconds']:.1f} s")

    with c.progress("orienting", None) as tick:
        result = emc.orient_files(list(frames), energy_kev=energy, distance=distance, pixel=pixel, centre=ctr,
                                  size=size, mask=mask, auto_mask=auto_mask, on_progress=tick, level=level,
                                  iterations=iterations, seed=seed or 0, beta=beta, oversample=oversample,
                                  update_scale=scale, friedel=friedel, executor=pool, on_iteration=said)
    s = result.stats
    params.update(centre_used=s["beam_centre"], size_used=s["size"], rotations=s["rotations"])
    step = io.make_step(c.command_line(), params, list(frames))
    if orientations is not None:
        hist = result.history
        io.write_results(orientations, {
            "orientation/quaternion": result.orientations, "orientation/probability": result.probability,
            "orientation/fluence": result.scale, "orientation/rotation_index": result.best_index,
            "history/loglik_per_frame": [h["loglik_per_frame"] for h in hist],
            "history/mutual_information": [h["mutual_information"] for h in hist],
            "history/sharpness": [h["sharpness"] for h in hist], "history/beta": [h["beta"] for h in hist]},
            step, signal="orientation/probability")
    io.write_pattern(output, result.pattern, step)
    h = result.history[-1]
    c.say(f"beam centre {s['beam_centre'][0]:.2f},{s['beam_centre'][1]:.2f} ({s['centre_method']}); "
          f"{s['pixels_used']} pixels of {s['n_frames']} frames ({s['photons_per_frame']:.4g} photons each) "
          f"on {s['rotations']} rotations (step {s['grid_step_deg']:.2g} deg)")
    c.say(f"volume {s['size']}^3, q pitch {s['q_pitch_per_m']:.4g} 1/m, real-space pixel "
          f"{s['real_pixel_m'] * 1e9:.3g} nm; reached {100 * s['measured_fraction']:.1f} % of it; "
          f"{s['seconds_per_iteration']:.2f} s per iteration")
    c.report(json_report, "cxdi.orient/1", output=output, size_voxels=s["size"], q_pitch_per_m=s["q_pitch_per_m"],
             real_pixel_m=s["real_pixel_m"], beam_centre_px=s["beam_centre"], centre_method=s["centre_method"],
             n_frames=s["n_frames"], pixels_used=s["pixels_used"], photons_per_frame=s["photons_per_frame"],
             rotations=s["rotations"], level=s["level"], grid_step_deg=s["grid_step_deg"],
             measured_fraction=s["measured_fraction"], seconds_per_iteration=s["seconds_per_iteration"],
             loglik_per_frame=h["loglik_per_frame"], mutual_information=h["mutual_information"],
             sharpness=h["sharpness"], detector_mask_counts=s["detector_mask_counts"])
