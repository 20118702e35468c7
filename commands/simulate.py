"""cxdi simulate: write a simulated experiment with known truth, the way a beamline writes its files."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from cxdi_cli.commands import _common as c

def simulate(
    kind: Annotated[str, typer.Argument(help="What to simulate: tungsten, cells, particle3d, series, thick "
                                                     "or tumbling.",
                                        show_default=False)],
    output: Annotated[str, typer.Option("-o", "--output", help="Output folder (created if missing).",
                                        show_default=False)],
    size: Annotated[Optional[int], typer.Option("--size", help="Detector pixels across "
                                                "[default: 516 tungsten, 512 cells, 128 particle3d and thick, 160 series].")] = None,
    photons: Annotated[Optional[float], typer.Option("--photons", help="Expected scattered photons on the "
                                                     "detector, all frames together [default: 1e9 tungsten, "
                                                     "1e8 cells]; particle3d, thick: per frame.")] = None,
    distance: Annotated[Optional[float], typer.Option("--distance", help="Sample-detector distance (m) "
                                                      "[default: 5; particle3d 0.08; thick 0.03].")] = None,
    energy: Annotated[Optional[float], typer.Option("--energy", help="Photon energy (keV) [default: 8].")] = None,
    pixel: Annotated[Optional[float], typer.Option("--pixel", help="Detector pixel size (m) "
                                                   "[default: 75e-6].")] = None,
    frames: Annotated[Optional[int], typer.Option("--frames", help="Number of frames [default: 10; series 20].")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the noise and the broken pixels; "
                                                "the same seed gives identical files [default: 0].")] = None,
    oversampling: Annotated[Optional[float], typer.Option("--oversampling", help="Linear oversampling "
                                                          "sigma = lambda D / (p S); sets the specimen size "
                                                          "S [default: 4].")] = None,
    thickness: Annotated[Optional[float], typer.Option("--thickness", help="tungsten: pattern thickness (m) "
                                                       "[default: 150e-9]; thick: the specimen's depth along "
                                                       "the beam (m) [default: 0.45 lambda D / p].")] = None,
    gap_cross_near_beam: Annotated[Optional[bool], typer.Option(
        "--gap-cross-near-beam/--gap-cross-away", help="Put the module-gap cross a few pixels from the beam "
        "centre, as happens on 2x2-module detectors [default: away].", show_default=False)] = None,
    beamstop: Annotated[Optional[float], typer.Option("--beamstop", help="Beamstop radius in speckles "
                                                      "(one speckle ~ sigma pixels) [default: 1].")] = None,
    rod_angle: Annotated[Optional[float], typer.Option("--rod-angle", help="Direction of the beamstop's "
                                                       "holder rod, degrees counter-clockwise from +column "
                                                       "(rows point down).")] = None,
    gap_through_beam: Annotated[Optional[bool], typer.Option(
        "--gap-through-beam", help="Centre the beam inside the module-gap cross (both gaps run through "
        "q = 0, as on a centred 2x2-module detector).", show_default=False)] = None,
    psf: Annotated[Optional[float], typer.Option("--psf", help="Partially coherent beam: the recorded "
                                                 "intensity is |F|^2 convolved with a Gaussian PSF of this "
                                                 "FWHM in pixels [default: 0, coherent].")] = None,
    processed: Annotated[Optional[str], typer.Option("--processed", help="Also write processed.tif, the "
                                                     "pattern as an earlier program left it: off, subtracted "
                                                     "(background subtracted, ~4 % exact zeros in bright "
                                                     "regions, gaps and broken pixels zeroed) or symmetrised "
                                                     "(the same, made centro-symmetric) [default: off].")] = None,
    pixel_samples: Annotated[Optional[int], typer.Option("--pixel-samples", help="2D kinds: |F|^2 averaged over "
                                                         "K x K points of each pixel's area, as a pixel "
                                                         "integrates it; 1: point samples at the pixel "
                                                         "centres (the simulator before issue 16) [default: 3].")] = None,
    phase_max: Annotated[Optional[float], typer.Option("--phase-max", help="cells: largest phase shift "
                                                       "(rad); above ~1 a strong phase object "
                                                       "[default: ~0.6].")] = None,
    darks: Annotated[Optional[int], typer.Option("--darks", help="cells: number of dark frames "
                                                 "[default: 5].")] = None,
    adu_per_photon: Annotated[Optional[float], typer.Option("--adu-per-photon", help="cells: detector gain "
                                                            "[default: 2].")] = None,
    dark_adu: Annotated[Optional[float], typer.Option("--dark-adu", help="cells: mean dark offset (ADU) "
                                                      "[default: 1000].")] = None,
    read_noise: Annotated[Optional[float], typer.Option("--read-noise", help="cells: read noise (ADU rms) "
                                                        "[default: 1].")] = None,
    angles: Annotated[Optional[str], typer.Option("--angles", help="particle3d, thick: tilt angles in degrees, "
                                                  "START:STOP:STEP or a comma list [default: -70:70:1; "
                                                  "thick -60:60:1].",
                                                  show_default=False)] = None,
    growth: Annotated[Optional[float], typer.Option("--growth", help="series: radius the disc reaches in the "
                                                    "last frame, as a fraction of the specimen size "
                                                    "[default: 0.2].")] = None,
    frame_time: Annotated[Optional[float], typer.Option("--frame-time", help="series: seconds between frames "
                                                        "[default: 1e-3].")] = None,
    fluence_spread: Annotated[Optional[float], typer.Option("--fluence-spread", help="tumbling: relative rms of "
                                                            "the shot-to-shot fluence [default: 0.2].")] = None,
    json_report: c.JsonOpt = False,
) -> None:
    """Write a simulated CXDI experiment with known truth into a folder.

    tungsten: thin tungsten letters at 8 keV on a Maxipix-like 2x2 photon-counting detector (516 x 516,
    75 um, oversampling 4): frames.h5 (LIMA layout, uint32, Poisson noise), beamstop and holder rod,
    module gaps, hot and dead pixels, beam centre off the pixel centres.
    cells: a few weak-phase cells with dense inclusions on an integrating 16-bit detector:
    frames/frame_NNNN.tif and darks/dark_NNNN.tif in ADU (gain, dark offset, read noise), some pixels
    near the beamstop saturated. particle3d: a 3D tilt series (tilts.h5, angles.txt). tumbling: a lobed,
    asymmetric particle at random orientations, photon-sparse frames (frames.h5 with the true quaternions and
    fluences, intensity.cxi: the true volume) for `cxdi orient` [defaults: --size 64, --frames 3000,
    --photons 2000 per frame, --distance 0.05, --oversampling 3].
    series: a time-resolved 2D series (default 20 frames, --size 160 gives 128^2 frames, --photons per
    frame, default 1e8): the tungsten letters with a tungsten disc at their centre growing to --growth;
    series.cxi (the centred, cropped, masked frames, ready for `cxdi phase --series`), expected.cxi and
    truth.cxi (one entry per frame).
    thick: a tilt series (tilts.h5, angles.txt) of a specimen deeper than the depth of field (--thickness,
    default 0.45 lambda D/p: about 9 depths of field at the default 128 pixels, 0.03 m), with dense granules
    at all depths; truth.cxi is its 2D projection along the beam. experiment.json gives both routes to it:
    the curvature-aware slice (`assemble3d --slice`) and the zero-tilt frame as a flat pattern.

    Hard cases (2D kinds): --gap-through-beam, --beamstop 2, --oversampling 3, --psf 2 (partial
    coherence), --processed symmetrised, cells --phase-max 1.8, few --photons; they combine.

    Every kind also writes truth.cxi (the object as a reconstruction of the default crop sees it),
    expected.cxi (2D: noise-free photons on the full detector with the true mask and beam centre) and
    experiment.json (geometry, broken pixels, the preprocess command to type next).
    Options not given take the kind's defaults; an option a kind does not have is a usage error.

    Example: cxdi simulate tungsten -o sim --seed 1 && cxdi info sim/expected.cxi
    """
    c.check_numbers(("--size", size, ">= 16"), ("--photons", photons, "> 0"), ("--distance", distance, "> 0"),
                    ("--energy", energy, "> 0"), ("--pixel", pixel, "> 0"), ("--frames", frames, ">= 1"),
                    ("--oversampling", oversampling, "> 0"), ("--thickness", thickness, "> 0"),
                    ("--beamstop", beamstop, ">= 0"), ("--psf", psf, ">= 0"), ("--phase-max", phase_max, ">= 0"),
                    ("--darks", darks, ">= 0"), ("--adu-per-photon", adu_per_photon, "> 0"),
                    ("--dark-adu", dark_adu, ">= 0"), ("--read-noise", read_noise, ">= 0"),
                    ("--growth", growth, "> 0"), ("--frame-time", frame_time, "> 0"))
    from cxdi_cli.sim import simulate as run  # noqa: PLC0415

    options = dict(size=size, photons=photons, distance=distance, energy_kev=energy, pixel=pixel,
                   frames=frames, seed=seed, oversampling=oversampling, thickness=thickness,
                   gap_cross_near_beam=gap_cross_near_beam, beamstop=beamstop, rod_angle=rod_angle,
                   gap_through_beam=gap_through_beam, psf=psf, processed=processed, phase_max=phase_max,
                   pixel_samples=pixel_samples,
                   darks=darks, adu_per_photon=adu_per_photon, dark_adu=dark_adu, read_noise=read_noise,
                   angles=angles, growth=growth, frame_time=frame_time, fluence_spread=fluence_spread)
    info = run(kind, output, command=c.command_line(), **options)
    if json_report:
        c.report(True, "cxdi.simulate/1", **{k: v for k, v in info.items() if k != "schema"})
        return
    shape = "x".join(str(n) for n in info.get("detector_shape", []))
    c.say(f"{kind}: {info.get('n_frames')} frames of {shape} pixels in {output}/; "
          f"beam centre {info.get('beam_centre')}, crop {info.get('crop')}, seed {info.get('seed')}")
    if info.get("preprocess") or info.get("next"):
        c.say(f"next: {info.get('preprocess') or info['next']}")

