"""cxdi show: a PNG preview (or a text picture in the terminal) of whatever a cxdi file holds."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from cxdi_cli.commands import _common as c


def show(
    input: c.InputArg,
    output: Annotated[Optional[str], typer.Option(
        "-o", "--output", help="File to write: NAME.png (a picture; - for stdout), NAME.tif (float32 ImageJ "
                               "TIFF), NAME.vti (VTK image for ParaView) or NAME.gif (a time series, "
                               "animated).", show_default=False)] = None,
    terminal: Annotated[bool, typer.Option(
        "--terminal", help="Draw the picture as text on stdout (for an SSH session without X).")] = False,
    ascii_only: Annotated[bool, typer.Option(
        "--ascii", help="With --terminal: plain characters, no colours (automatic when stdout is not a "
                        "terminal, TERM=dumb or NO_COLOR is set).")] = False,
    log: Annotated[bool, typer.Option("--log/--linear", help="Intensity scale of diffraction data.")] = True,
    slice_spec: Annotated[Optional[str], typer.Option(
        "--slice", help="3D: one slice instead of the three central ones: z, y or x (central slice normal to "
                        "that axis), AXIS=INDEX (z=40), or an index along z.", show_default=False)] = None,
    crop_support: Annotated[Optional[bool], typer.Option(
        "--crop-support/--full", help="Reconstructions: frame the support plus a 15 % margin, or the whole "
                                      "field. [default: --crop-support for pictures, --full for .tif and "
                                      ".vti]", show_default=False)] = None,
    run: Annotated[Optional[int], typer.Option(
        "--run", min=1, help="Run files: show run K in detail instead of the grid of runs (-o .tif/.vti: "
                             "export run K, by default run 1).",
        show_default=False)] = None,
    width: Annotated[Optional[int], typer.Option(
        "--width", min=1, help="Picture width: pixels for the PNG [default: about 420 per panel], columns "
                               "for --terminal alone [default: the terminal's width].", show_default=False)] = None,
    dpi: Annotated[float, typer.Option("--dpi", min=10, max=1200,
                                       help="PNG resolution (dots per inch): scales the text and lines.")] = 100.0,
) -> None:
    """Draw a cxdi file: diffraction data, a reconstruction, a set of runs, or resolution curves.

    The kind is told by the file's content. Diffraction data: log10 intensity (viridis) with masked
    pixels in pure magenta (255, 0, 255) and q axes in nm⁻¹ (q = 2 sin θ / λ, from the file's
    geometry; pixels without one); 3D volumes: the three central slices through q = 0. Reconstructions:
    phase as hue (0 red, ±π cyan) and amplitude as brightness, global phase removed, with a scale bar
    from the real-space pixel size, framed on the support plus a 15 % margin (--full: the whole
    field); 3D: three orthogonal slices through the object's centre of mass and its amplitude
    projected along z (the beam), side by side. An average: its modes beside it, with their weights.
    A file of several runs: a grid of runs in one frame, titled with their metrics (llk, llk_free,
    ...; failed runs flagged). PRTF / FRC files (resolve-prt) and other 1-D curves: the curves with
    their thresholds (PRTF 1/e; FRC 0.5, 1/7 and the file's half-bit curve) and where each is crossed,
    as q and half-period d = 1/(2q). A stack of raw detector frames: their sum.

    The PNG is written whole or not at all; -o - writes it to stdout (not to a terminal).
    --terminal draws with Unicode half-blocks in 24-bit colour (COLORTERM=truecolor) or the xterm
    256 colours, or with a plain character ramp ' .:-=+*#%@' (masked pixels 'X').

    Example: cxdi show pattern.cxi -o pattern.png

    Example: cxdi show runs.cxi -o runs.png

    Example: cxdi show avg.cxi -o avg-field.png --full

    Example: cxdi show volume.cxi --terminal --slice y=70

    Example: cxdi show prtf.h5 -o - | display

    Time series (phase --series output, or the series data): the frames in time order as a strip
    (at most 24, evenly spaced; reconstructions on one amplitude scale, the summed-frames reference
    first), or every frame as an animated GIF with -o NAME.gif. --run K shows frame K-1 alone.

    Example: cxdi show frames.cxi -o frames.png && cxdi show frames.cxi -o frames.gif

    -o NAME.tif and -o NAME.vti write the numbers instead of a picture, for programs without cxdi.
    TIFF (ImageJ/Fiji, napari): float32 intensity (masked pixels NaN), or the object's amplitude and
    phase as two channels (3D: a ZCYX hyperstack) with the pixel size per axis in the ImageJ metadata.
    VTI (VTK ImageData XML, ParaView): the intensity on the q grid (spacing in µm⁻¹, q = 0 at the
    origin), or the amplitude, phase and support of the object (spacing the voxel size in nm). Both
    write the whole field unless --crop-support is given.

    Example: cxdi show avg.cxi -o avg.tif

    Example: cxdi show avg3d.cxi -o avg3d.vti --crop-support

    Example: cxdi show volume.cxi -o volume.vti
    """
    if output is None and not terminal:
        raise c.usage_error("nothing to do: give -o PREVIEW.png, or --terminal to draw on the terminal")
    if terminal and output == "-":
        raise c.usage_error("-o - and --terminal both want stdout; write the PNG to a file")
    if ascii_only and not terminal:
        raise c.usage_error("--ascii goes with --terminal")
    import os  # noqa: PLC0415
    import shutil  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from cxdi_cli.view import render  # noqa: PLC0415 - matplotlib and numpy only when the command runs

    ext = os.path.splitext(output.lower())[1] if output is not None else ""
    if ext in (".tif", ".tiff", ".vti"):
        from cxdi_cli.view import export  # noqa: PLC0415

        crop = bool(crop_support)  # the numbers: the whole field unless asked
        if ext == ".vti":
            ex = export.write_vti(input, output, run=run or 1, crop=crop)
            shape = next(iter(ex.arrays.values())).shape
            c.say(f"wrote {output}: VTK image, {', '.join(ex.arrays)}, {'x'.join(map(str, shape))}")
        else:
            from cxdi_cli import io  # noqa: PLC0415

            image, axes, pixel = export.tiff_image(input, run=run or 1, crop=crop)
            io.write_tiff(output, image, pixel_size=pixel, axes=axes)
            c.say(f"wrote {output}: float32 TIFF, axes {axes}, shape {'x'.join(map(str, image.shape))}")
        if not terminal:
            return
    crop = crop_support is not False  # pictures: framed on the support unless --full
    from cxdi_cli.view import series as vs  # noqa: PLC0415

    if ext == ".gif":  # a time series, animated
        gif = vs.write_gif(input, output, crop_support=crop, width=width)  # type: ignore[arg-type]
        c.say(f"wrote {output}: animated GIF, {gif['frames']} frames of {'x'.join(map(str, gif['shape']))}")
        return
    kind = vs.what_series(input) if run is None and slice_spec is None else None
    pic = vs.series_picture(input, kind, crop_support=crop, title=input) if kind else \
        render.load_picture(input, log=log, slice_spec=slice_spec, crop_support=crop, run=run)
    if output is not None and ext not in (".tif", ".tiff", ".vti"):
        fig = render.render_figure(pic, width=width, dpi=dpi)
        render.save_png(fig, output, dpi=dpi)
        c.say(f"wrote {output if output != '-' else 'PNG to stdout'}: {pic.kind}, {len(pic.panels or pic.curves)} "
              f"panel(s)")
    if terminal:
        from cxdi_cli.view import terminal as tr  # noqa: PLC0415

        isatty = hasattr(sys.stdout, "isatty") and sys.stdout.isatty()
        mode = "ascii" if ascii_only else tr.terminal_mode(os.environ, isatty)
        columns = (width if output is None else None) or tr.default_columns(shutil.get_terminal_size((80, 24)).columns)
        sys.stdout.write(tr.render_text(pic, width=columns, mode=mode))
        sys.stdout.flush()
