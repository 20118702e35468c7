"""cxdi preprocess: raw detector frames -> one calibrated, centred, cropped, masked pattern in photons."""
from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from cxdi_cli.commands import _common as c


def _half_names(output: str) -> tuple[str, str]:
    from pathlib import Path  # noqa: PLC0415

    p = Path(output)
    suffix = p.suffix or ".cxi"
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return str(p.with_name(f"{stem}_a{suffix}")), str(p.with_name(f"{stem}_b{suffix}"))


def preprocess(
    raw: Annotated[List[str], typer.Argument(help="Raw frames: HDF5 (LIMA, Eiger/NeXus master, FILE::/path), "
                                                  "TIFF (multi-page, list, 'glob*.tif', folder), EDF, CBF.",
                                             show_default=False)],
    output: c.OutputOpt = "-",
    energy: Annotated[Optional[float], typer.Option("--energy", help="Photon energy (keV) [default: from the file].")] = None,
    distance: Annotated[Optional[float], typer.Option("--distance", help="Sample-detector distance (m) [default: from the file].")] = None,
    pixel: Annotated[Optional[float], typer.Option("--pixel", help="Detector pixel size (m) [default: from the file].")] = None,
    centre: Annotated[str, typer.Option("--centre", help="Beam centre: 'auto' (centro-symmetry, sub-pixel) or "
                                                         "ROW,COL in detector pixels.")] = "auto",
    crop: Annotated[Optional[int], typer.Option("--crop", help="Crop size in detector pixels "
                                                "[default: largest FFT-friendly size around the centre].")] = None,
    binning: Annotated[int, typer.Option("--bin", min=1, help="Sum K x K pixels (mask bits combined).")] = 1,
    pad: Annotated[Optional[int], typer.Option("--pad", help="Pad the output to N x N; added pixels are "
                                               "flagged 'unmeasured'.")] = None,
    dark: Annotated[Optional[List[str]], typer.Option("--dark", help="Dark frame(s) in ADU; a stack or several "
                                                      "files are averaged (repeatable, globs allowed).")] = None,
    flat: Annotated[Optional[str], typer.Option("--flat", help="Flat field (relative pixel efficiency).")] = None,
    adu_per_photon: Annotated[float, typer.Option("--adu-per-photon", help="Detector gain for integrating "
                                                  "detectors: ADU per photon.")] = 1.0,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Photon-rounding threshold (photons): "
                                                       "per frame, below it 0, else rounded to whole photons.")] = None,
    frames: Annotated[Optional[str], typer.Option("--frames", help="Frames to use, A:B (B excluded) or A:B:S.")] = None,
    saturation: Annotated[Optional[float], typer.Option("--saturation", help="Saturation level (raw units) "
                                                        "[default: from the file, else the largest value of an "
                                                        "integer frame type].")] = None,
    detector: Annotated[Optional[str], typer.Option("--detector", help="Detector model for its module gaps "
                                                    "(maxipix, eiger4m, eiger9m, pilatus1m, ...).")] = None,
    no_auto_mask: Annotated[bool, typer.Option("--no-auto-mask", help="Do not detect beamstop, gaps, hot and "
                                               "dead pixels (saturated pixels are always flagged).")] = False,
    margin: Annotated[int, typer.Option("--margin", min=0, help="Pixels added around the detected beamstop.")] = 1,
    split_half: Annotated[bool, typer.Option("--split-half", help="Also write two independent half-data sets "
                                             "OUT_a.cxi and OUT_b.cxi (even / odd frames; binomial thinning "
                                             "of a single frame).")] = False,
    seed: c.SeedOpt = None,
    json_report: c.JsonOpt = False,
) -> None:
    """Turn raw detector frames into one calibrated, centred, cropped diffraction pattern in photons,
    with the pixel mask and the geometry of the output pixels.

    Frames are read a block at a time (memory: a few frames, whatever the stack length). Calibration:
    photons = (frame - dark) / flat / adu-per-photon, summed over the frames. Pixels saturated in any
    frame, hot (far above their own time series, their neighbours and their centro-symmetric mate),
    dead (dark where both are lit), module gaps and the beamstop with its holder rod are flagged with
    their CXI mask bits. The beam centre is found from the centro-symmetry of the far-field pattern
    to a fraction of a pixel; q = 0 lands at index N // 2 of the output (its sub-pixel residual is
    stored in the geometry's centre). --bin K makes the output pixel K times larger.

    Examples:

      cxdi preprocess frames.h5 -o pattern.cxi --energy 8 --distance 5 --pixel 75e-6

      cxdi preprocess 'frames/frame_*.tif' --dark 'darks/*.tif' --adu-per-photon 2 -o p.cxi --energy 8 --distance 5 --pixel 75e-6 --bin 2
    """
    c.check_stdout(output, json_report)
    c.check_numbers(("--energy", energy, "> 0"), ("--distance", distance, "> 0"), ("--pixel", pixel, "> 0"),
                    ("--crop", crop, ">= 2"), ("--pad", pad, ">= 2"), ("--adu-per-photon", adu_per_photon, "> 0"),
                    ("--threshold", threshold, ">= 0"), ("--saturation", saturation, "> 0"))
    if split_half and output == "-":
        raise c.usage_error("--split-half writes OUT_a.cxi and OUT_b.cxi beside OUT: give -o a file name")
    from cxdi_cli import io  # noqa: PLC0415
    from cxdi_cli.io.frames import parse_frames  # noqa: PLC0415
    from cxdi_cli.reduce import pattern as pp  # noqa: PLC0415

    with c.progress("frames") as tick:
        result = pp.preprocess(
            raw, energy_kev=energy, distance=distance, pixel=pixel, centre=pp.parse_centre(centre), crop=crop,
            binning=binning, pad=pad, dark=dark, flat=flat, adu_per_photon=adu_per_photon, threshold=threshold,
            frames=parse_frames(frames), saturation=saturation, auto_mask=not no_auto_mask, detector=detector,
            margin=margin, split_half=split_half, seed=seed, on_progress=tick)
    rep, params = result.report, result.parameters
    inputs = list(raw) + list(dark or []) + ([flat] if flat else [])
    halves_out = None
    if result.halves is not None:
        halves_out = _half_names(output)
        for name, half, tag in zip(halves_out, result.halves, ("a", "b")):
            io.write_pattern(name, half, io.make_step(c.command_line(), dict(params, half=tag), inputs))
    io.write_pattern(output, result.pattern, io.make_step(c.command_line(), params, inputs))
    speck = rep["central_speckle"]
    if speck.get("warning"):
        c.warn(speck["warning"])
    cy, cx = rep["centre_px"]
    c.say(f"centre ({cy:.2f}, {cx:.2f}) px [{rep['centre_method']}], {rep['frames']} frames, output "
          f"{rep['output_shape'][0]}x{rep['output_shape'][1]}, {rep['photons_total']:.4g} photons, "
          f"{100 * rep['masked_fraction']:.1f} % masked"
          + (f", oversampling ~{rep['oversampling']:.1f}" if rep["oversampling"] else ""))
    c.report(json_report, "cxdi.preprocess/1", output=output, halves=list(halves_out) if halves_out else None,
             energy_kev=params["energy_kev"], distance_m=params["distance_m"], **rep)
