"""Text pictures for a terminal without graphics (an SSH session): the `Picture`s of `render` as text.

Modes:
- 'truecolor': Unicode upper half-blocks '▀' with 24-bit ANSI colours (foreground = upper pixel,
  background = lower pixel), so one character cell shows two square-ish pixels;
- '256': the same with the xterm 256-colour cube, for terminals that lack 24-bit colour;
- 'ascii': a plain brightness ramp (`RAMP`), one character per cell; masked pixels are `MASK_CHAR`.
Curves are drawn on a character grid in every mode. Every line of a picture has the same visible
width (ANSI escape codes aside), `width` columns. Returns strings; prints nothing.
"""
from __future__ import annotations

import math
import re
from typing import Mapping

import numpy as np

from cxdi_cli.model import UsageError
from cxdi_cli.view.picture import MASK_RGB, CurveSet, Panel, Picture, resample

RAMP = " .:-=+*#%@"
MASK_CHAR = "X"
THRESHOLD_MARKS = ".-:~"
MODES = ("truecolor", "256", "ascii")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RESET = "\x1b[0m"


def visible_len(line: str) -> int:
    """Length of a line as the terminal shows it (ANSI escape sequences not counted)."""
    return len(_ANSI.sub("", line))


def terminal_mode(env: Mapping[str, str], isatty: bool) -> str:
    """Pick the colour mode: NO_COLOR, TERM=dumb or a non-terminal output -> 'ascii';
    COLORTERM truecolor/24bit -> 'truecolor'; otherwise '256' (what SSH sessions reliably support)."""
    if env.get("NO_COLOR") or env.get("TERM", "") == "dumb" or not isatty:
        return "ascii"
    if env.get("COLORTERM", "").lower() in ("truecolor", "24bit"):
        return "truecolor"
    return "256"


def _rgb256(rgb: np.ndarray) -> np.ndarray:
    q = np.clip(np.rint(rgb * 5), 0, 5).astype(int)
    return 16 + 36 * q[..., 0] + 6 * q[..., 1] + q[..., 2]


def panel_lines(panel: Panel, width: int, mode: str, max_rows: int = 60) -> list[str]:
    """A panel as lines of exactly `width` visible characters (title first, scale bar last)."""
    h, w = panel.rgb.shape[:2]
    aspect = h * panel.pixel_aspect / w
    ow = width
    if mode == "ascii":
        oh = max(1, int(round(ow * aspect / 2)))  # a character cell is about twice as tall as wide
        if oh > max_rows:
            oh, ow = max_rows, max(1, int(round(max_rows * 2 / aspect)))
    else:
        oh = max(2, 2 * int(round(ow * aspect / 2)))
        if oh > 2 * max_rows:
            oh, ow = 2 * max_rows, max(1, int(round(2 * max_rows / aspect)))
    ow = min(ow, width)
    rgb = np.clip(resample(panel.rgb, oh, ow), 0, 1)
    masked = resample(panel.masked.astype(float), oh, ow) >= 0.5 if panel.masked is not None \
        else np.zeros((oh, ow), bool)
    rgb[masked] = np.asarray(MASK_RGB, float) / 255
    rgb = rgb[::-1]          # row 0 of a Panel is at the bottom
    masked = masked[::-1]
    pad = " " * (width - ow)
    lines = [_fit(panel.title.replace("\n", "  "), width)] if panel.title else []
    if mode == "ascii":
        bright = panel.brightness if panel.brightness is not None else rgb[::-1].mean(axis=-1)
        b = np.clip(resample(bright, oh, ow), 0, 1)[::-1]
        idx = np.clip((b * (len(RAMP) - 1) + 0.5).astype(int), 0, len(RAMP) - 1)
        for r in range(oh):
            lines.append("".join(MASK_CHAR if masked[r, c] else RAMP[idx[r, c]] for c in range(ow)) + pad)
    else:
        v8 = np.clip(np.rint(rgb * 255), 0, 255).astype(int)
        c256 = _rgb256(rgb)
        for r in range(0, oh, 2):
            cells = []
            last_fg = last_bg = ""
            for c in range(ow):
                if mode == "truecolor":
                    t, b = v8[r, c], v8[r + 1, c]
                    fg, bg = f"38;2;{t[0]};{t[1]};{t[2]}", f"48;2;{b[0]};{b[1]};{b[2]}"
                else:
                    fg, bg = f"38;5;{c256[r, c]}", f"48;5;{c256[r + 1, c]}"
                codes = ";".join(x for x, last in ((fg, last_fg), (bg, last_bg)) if x != last)
                cells.append((f"\x1b[{codes}m" if codes else "") + "▀")
                last_fg, last_bg = fg, bg
            lines.append("".join(cells) + _RESET + pad)
    if panel.scalebar is not None:
        length, label = panel.scalebar
        n = max(1, int(round(length * ow / w)))
        lines.append(_fit(f"{'|' + '-' * max(0, n - 2) + '|' if n >= 2 else '|'} {label}", width))
    return lines


def _fit(text: str, width: int) -> str:
    return text[:width].ljust(width)


def curve_lines(cs: CurveSet, width: int, height: int = 16) -> list[str]:
    """Curves on a character grid `width` wide: y axis labels, one marker per curve, thresholds dotted."""
    marks = "*o+x#@%&"
    ys = [np.asarray(y, float) for _, y in cs.curves]
    thr = [(lab, np.full(cs.x.shape, float(t)) if np.ndim(t) == 0 else np.asarray(t, float))
           for lab, t in cs.thresholds]
    finite = np.concatenate([y[np.isfinite(y)] for y in ys + [t for _, t in thr]] or [np.zeros(1)])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo >= 0 and hi <= 1.2:  # correlations and PRTFs: show 0..1
        lo, hi = 0.0, max(1.0, hi)
    if hi <= lo:
        hi = lo + 1.0
    label_w = 8
    pw = max(8, width - label_w - 1)
    x = np.asarray(cs.x, float)
    ok = np.isfinite(x)
    x0, x1 = (float(x[ok].min()), float(x[ok].max())) if ok.any() else (0.0, 1.0)
    if x1 <= x0:
        x1 = x0 + 1.0
    grid = [[" "] * pw for _ in range(height)]
    cols = np.linspace(x0, x1, pw)
    order = np.argsort(x[ok])

    def row_of(v: float) -> int:
        return int(round((hi - v) / (hi - lo) * (height - 1)))

    for k, (lab, t) in enumerate(thr):
        tv = np.interp(cols, x[ok][order], t[ok][order])
        for c, v in enumerate(tv):
            if np.isfinite(v) and lo <= v <= hi:
                grid[row_of(v)][c] = THRESHOLD_MARKS[k % len(THRESHOLD_MARKS)]
    for k, y in enumerate(ys):
        good = ok & np.isfinite(y)
        if good.sum() < 1:
            continue
        o = np.argsort(x[good])
        yv = np.interp(cols, x[good][o], y[good][o])
        for c, v in enumerate(yv):
            if lo <= v <= hi:
                grid[row_of(v)][c] = marks[k % len(marks)]
    lines = [_fit(cs.title, width)]
    for r in range(height):
        val = hi - r * (hi - lo) / (height - 1)
        lab = f"{val:7.3g} " if r in (0, height // 2, height - 1) else " " * label_w
        lines.append(_fit(lab[:label_w] + "|" + "".join(grid[r]), width))
    axis = " " * label_w + "+" + "-" * pw
    lines.append(_fit(axis, width))
    left, right = f"{x0:.3g}", f"{x1:.3g}"
    lines.append(_fit(" " * (label_w + 1) + left + " " * max(1, pw - len(left) - len(right)) + right, width))
    lines.append(_fit(" " * (label_w + 1) + cs.xlabel, width))
    legend = "  ".join(f"{marks[k % len(marks)]} {lab}" for k, (lab, _) in enumerate(cs.curves))
    legend += "".join(f"  {THRESHOLD_MARKS[k % len(THRESHOLD_MARKS)]} {lab}" for k, (lab, _) in enumerate(thr))
    lines.append(_fit(legend, width))
    for note in cs.notes:
        lines.append(_fit(note, width))
    return lines


def _join_columns(blocks: list[list[str]], col_w: int, gap: int) -> list[str]:
    height = max(len(b) for b in blocks)
    out = []
    blank = " " * col_w
    for r in range(height):
        out.append((" " * gap).join(b[r] if r < len(b) else blank for b in blocks))
    return out


def render_text(pic: Picture, width: int = 80, mode: str = "truecolor") -> str:
    """The picture as text `width` columns wide (every line, ANSI codes aside), ending in a newline."""
    if mode not in MODES:
        raise UsageError(f"unknown terminal mode {mode!r}; valid: {', '.join(MODES)}")
    if width < 20:
        raise UsageError(f"--width {width}: a terminal picture needs at least 20 columns")
    lines = [_fit(t, width) for t in pic.title.split("\n") if t]
    lines += [_fit(n.replace("in magenta", f"as '{MASK_CHAR}'") if mode == "ascii" else n, width)
              for n in pic.notes]
    gap = 2
    items = pic.panels or pic.curves
    ncols = max(1, min(pic.ncols or 1, len(items)))
    min_w = 16 if pic.panels else 40
    while ncols > 1 and (width - gap * (ncols - 1)) // ncols < min_w:
        ncols -= 1
    col_w = (width - gap * (ncols - 1)) // ncols
    for start in range(0, len(items), ncols):
        row = items[start:start + ncols]
        if pic.panels:
            blocks = [panel_lines(p, col_w, mode) for p in row]  # type: ignore[arg-type]
        else:
            blocks = [curve_lines(cs, col_w) for cs in row]  # type: ignore[arg-type]
        lines.append("")
        body = _join_columns(blocks, col_w, gap)
        lines += [b + " " * (width - visible_len(b)) for b in body]
    lines = [ln if ln else " " * width for ln in lines]
    return "\n".join(lines) + "\n"


def default_columns(columns: int) -> int:
    """Terminal width to use from the terminal's column count: all of it, 40 to 160 columns."""
    return int(min(160, max(40, columns if math.isfinite(columns) else 80)))
