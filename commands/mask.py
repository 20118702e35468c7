"""cxdi mask: build and combine the pixel mask of a pattern or volume (automatic detection + user masks)."""
from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from cxdi_cli.commands import _common as c


def mask(
    input: c.InputArg,
    output: c.OutputOpt = "-",
    no_auto: Annotated[bool, typer.Option("--no-auto", help="Skip automatic detection (beamstop and rod, gaps, "
                                          "hot and dead pixels).")] = False,
    centre: Annotated[Optional[str], typer.Option("--centre", help="q = 0 as ROW,COL in the pattern's pixels "
                                                  "[default: from the file, else N // 2].")] = None,
    detector: Annotated[Optional[str], typer.Option("--detector", help="Detector model whose module gaps to mask "
                                                    "(maxipix, eiger4m, eiger9m, pilatus1m, ...; full-detector "
                                                    "images only).")] = None,
    add: Annotated[Optional[List[str]], typer.Option("--add", help="Mask file (TIFF, npy, HDF5 FILE::/path) of "
                                                     "the pattern's shape; non-zero = bad (repeatable).")] = None,
    circle: Annotated[Optional[List[str]], typer.Option("--circle", help="Mask a disc ROW,COL,R (repeatable).")] = None,
    rect: Annotated[Optional[List[str]], typer.Option("--rect", help="Mask a rectangle R0,C0,R1,C1, corners "
                                                      "included (repeatable).")] = None,
    polygon: Annotated[Optional[List[str]], typer.Option("--polygon", help="Mask a polygon R0,C0,R1,C1,R2,C2,... "
                                                         "(repeatable).")] = None,
    grow: Annotated[int, typer.Option("--grow", min=0, help="Dilate every mask bit by K pixels.")] = 0,
    remove: Annotated[Optional[List[str]], typer.Option("--remove", help="Clear mask bits first, e.g. "
                                                        "'hot,dead' or 'all' (repeatable).")] = None,
    saturation: Annotated[Optional[float], typer.Option("--saturation", help="Flag pixels at or above this "
                                                        "value (photons) as saturated.")] = None,
    margin: Annotated[int, typer.Option("--margin", min=0, help="Pixels added around the detected beamstop.")] = 1,
    zeros: Annotated[str, typer.Option("--zeros", help="Exact zeros: 'auto' masks those photon noise cannot "
                                       "make (their surroundings hold >= 20 photons: an earlier program's "
                                       "masked pixels and zeroed blocks), 'masked' every zero, 'measured' "
                                       "none.")] = "auto",
    oversampling: Annotated[Optional[float], typer.Option("--oversampling", help="Speckle size in pixels for the "
                                                          "central-speckle report [default: estimated].")] = None,
    json_report: c.JsonOpt = False,
) -> None:
    """Build the pixel mask: automatic detection (on by default) of the beamstop and its holder rod,
    module gaps, hot and dead pixels, plus user masks and shapes, all kept as CXI mask bits so a later
    step can tell why a pixel is masked. Reports each bit's pixel count, the masked fraction, and how
    much of the central speckle is missing (beamstop radius against the speckle size, about sigma
    pixels), with a warning when more than the central speckle is lost.

    On 3D volumes (from assemble3d) only hot/dead outliers are detected and the 'unmeasured' voxel
    bits are left alone.

    Examples:

      cxdi mask pattern.cxi -o masked.cxi --circle 120,130,6 --grow 1

      cxdi preprocess raw.h5 -o - --energy 8 --distance 5 --pixel 75e-6 | cxdi mask - -o m.cxi --remove dead
    """
    c.check_stdout(output, json_report)
    c.check_numbers(("--saturation", saturation, "> 0"), ("--oversampling", oversampling, "> 0"))
    import numpy as np  # noqa: PLC0415

    from cxdi_cli import io  # noqa: PLC0415
    from cxdi_cli.reduce import centring, masking  # noqa: PLC0415
    from cxdi_cli.sampling import estimate_oversampling  # noqa: PLC0415
    from cxdi_cli.model import DataError, UsageError, mask_counts, mask_bit, measured_from_mask  # noqa: PLC0415

    if zeros not in masking.ZERO_MODES:
        raise UsageError(f"--zeros {zeros!r}: choose one of {', '.join(masking.ZERO_MODES)}")
    pattern = io.read_pattern(input)
    img = np.asarray(pattern.intensity, np.float64)
    m = np.asarray(pattern.mask, np.uint32).copy()
    ndim = img.ndim
    unmeasured = np.uint32(mask_bit("unmeasured"))
    before_unmeasured = m & unmeasured
    ctr = centring.pattern_centre(pattern, masking.parse_numbers(centre, ndim, "--centre") if centre is not None else None)
    if ndim == 3 and (circle or rect or polygon):
        raise UsageError("--circle, --rect and --polygon draw on 2D patterns; give a 3D mask with --add")
    if remove:
        names = [n for r in remove for n in r.split(",") if n.strip()]
        if ndim == 3 and "unmeasured" in names:
            raise UsageError("--remove unmeasured: on a 3D volume the unmeasured voxels are the missing data; "
                             "they stay masked")
        m = masking.remove_bits(m, names)
        if ndim == 3:
            m |= before_unmeasured
    info: dict = {}
    character = masking.data_character(img, measured_from_mask(m), ctr)
    processed = ndim == 2 and (character["non_integer"] or character["centro_symmetric"])
    if not no_auto:
        m, info = masking.auto_mask(img, m, ctr, detector=detector, margin=margin,
                                    beamstop=ndim == 2, gaps=ndim == 2, zeros=zeros)
    else:
        if detector:
            m[masking.model_gaps(detector, img.shape)] |= np.uint32(mask_bit("gap"))
        if zeros == "masked" and ndim == 2:
            m[masking.detect_zeros(img, ~measured_from_mask(m), mode="masked")] |= np.uint32(mask_bit("zero"))
    if saturation is not None:
        m[img >= saturation] |= np.uint32(mask_bit("saturated"))
    user = np.zeros(img.shape, bool)
    for spec in add or []:
        user |= masking.user_mask(io.read_array(spec, "mask"), img.shape, spec)
    if circle or rect or polygon:
        user |= masking.shapes_mask(img.shape, circle or [], rect or [], polygon or [])
    m[user] |= np.uint32(mask_bit("user"))
    if grow:
        m = masking.grow(m, grow)
    if ndim == 3:  # the unmeasured voxels are what assemble3d said: never added or removed here
        m = (m & ~unmeasured) | before_unmeasured
    good = measured_from_mask(m)
    if not good.any():
        raise DataError(f"{input}: every pixel would be masked")
    sigma = oversampling if oversampling else estimate_oversampling(img, good)
    speck = masking.central_speckle(m, ctr, sigma)
    pattern.mask = m
    params = {"auto": not no_auto, "centre_px": list(ctr), "detector": detector, "add": list(add or []),
              "circle": list(circle or []), "rect": list(rect or []), "polygon": list(polygon or []),
              "grow": grow, "remove": list(remove or []), "saturation": saturation, "margin": margin,
              "beamstop": info.get("beamstop"), "zeros": zeros}
    io.write_pattern(output, pattern, io.make_step(c.command_line(), params, [input] + list(add or [])))
    if speck.get("warning"):
        c.warn(speck["warning"])
    if processed:
        c.say("processed data: " + ", ".join(
            ([f"{100 * character['non_integer_fraction']:.0f} % of the values non-integer"]
             if character["non_integer"] else [])
            + (["centro-symmetrised (I(q) = I(-q) exactly)"] if character["centro_symmetric"] else []))
            + "; Poisson metrics (llk) are approximate")
    counts = mask_counts(m)
    frac = float(1.0 - good.mean())
    c.say("masked: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v) + f"; {100 * frac:.2f} % of pixels"
          + (f"; central speckle {100 * speck['central_speckle_missing_fraction']:.0f} % missing"
             if speck.get("central_speckle_missing_fraction") is not None else ""))
    c.report(json_report, "cxdi.mask/1", input=input, output=output, shape=list(img.shape), centre_px=list(ctr),
             mask_counts=counts, masked_fraction=frac, oversampling=sigma, beamstop=info.get("beamstop"),
             central_speckle=speck, data=dict(character, zeros_mode=zeros,
                                              zeros_flagged=int(counts.get("zero", 0))))
