"""cxdi show: a PNG preview (or a text picture in the terminal) of whatever a cxdi file holds."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from cxdi_cli.commands import _common as c


def show(
    input: c.InputArg,
    output: Annotated[Optional[str], typer.Option(
        "-o", "--output", help="PNG file to write (- for stdout).", show_default=False)] = None,
    terminal: Annotated[bool, typer.Option(
        "--terminal", help="Draw the picture as text on stdout (for an SSH session without X).")] = False,
    ascii_only: Annotated[bool, typer.Option(
        "--ascii", help="With --terminal: plain characters, no colours (automatic when stdout is not a "
                        "terminal, TERM=dumb or NO_COLOR is set).")] = False,
    log: Annotated[bool, typer.Option("--log/--linear", help="Intensity scale of diffraction data.")] = True,
    slice_spec: Annotated[Optional[str], typer.Option(
        "--slice", help="3D: one slice instead of the three central ones: z, y or x (central slice normal to "
                        "that axis), AXIS=INDEX (z=40), or an index along z.", show_default=False)] = None,
    crop_support: Annotated[bool, typer.Option(
        "--crop-support", help="Reconstructions: crop to the support plus a 15 % margin.")] = False,
    run: Annotated[Optional[int], typer.Option(
        "--run", min=1, help="Run files: show run K in detail instead of the grid of runs.",
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
    from the real-space pixel size; 3D: central slices through the support and amplitude projections.
    An average: its modes beside it, with their weights. A file of several runs: a grid of runs titled
    with their metrics (llk, llk_free, ...; failed runs flagged). PRTF / FRC files (resolve-prt) and
    other 1-D curves: the curves with their thresholds (PRTF 1/e; FRC 0.5, 1/7 and the file's
    half-bit curve) and where each is crossed, as q and half-period d = 1/(2q). A stack of raw
    detector frames: their sum.

    The PNG is written whole or not at all; -o - writes it to stdout (not to a terminal).
    --terminal draws with Unicode half-blocks in 24-bit colour (COLORTERM=truecolor) or the xterm
    256 colours, or with a plain character ramp ' .:-=+*#%@' (masked pixels 'X').

    Example: cxdi show pattern.cxi -o pattern.png

    Example: cxdi show runs.cxi -o runs.png --crop-support

    Example: cxdi show volume.cxi --terminal --slice y=70

    -o NAME.tif writes the numbers instead of a picture: a float32 ImageJ TIFF of the intensity
    (masked pixels NaN) or of the object's amplitude and phase as two channels, with the pixel size.

    Example: cxdi show prtf.h5 -o - | display

    Example: cxdi show avg.cxi -o avg.tif
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

    if output is not None and output.lower().endswith((".tif", ".tiff")):
        from cxdi_cli.view import export  # noqa: PLC0415
        from cxdi_cli import io  # noqa: PLC0415

        image, axes, pixel = export.tiff_image(input, run=run or 1)
        io.write_tiff(output, image, pixel_size=pixel, axes=axes)
        c.say(f"wrote {output}: float32 TIFF, axes {axes}, shape {'x'.join(map(str, image.shape))}")
        if not terminal:
            return
    pic = render.load_picture(input, log=log, slice_spec=slice_spec, crop_support=crop_support, run=run)
    if output is not None and not output.lower().endswith((".tif", ".tiff")):
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
