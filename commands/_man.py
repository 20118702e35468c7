"""Generate roff man pages from the command tree: `python -m cxdi_cli.commands._man man/`.

One page for `cxdi` and one per subcommand (`cxdi-phase.1`, git style). Deterministic (no dates), so a
test can regenerate them and compare with the committed pages.
"""
from __future__ import annotations

import sys
from pathlib import Path

EXIT_STATUS = (".SH EXIT STATUS\n.TP\n0\nsuccess\n.TP\n1\nthe data or the computation failed "
               "(one line on stderr names the file and the problem; no output file is left)\n"
               ".TP\n2\nusage error (bad option or value)\n")


#: Bad inputs, what cxdi says, and the exit status: one list makes the DIAGNOSTICS section of cxdi(1) and
#: the tests (tests/test_diagnostics.py runs every row). Each row: (the bad input, the command line,
#: an excerpt of the one error line, exit status). {names} stand for the test's files (FILES below).
DIAGNOSTICS: list[tuple[str, str, str, int]] = [
    ("input file missing", "info {missing}", "{missing}: no such file", 1),
    ("input is a folder", "mask {folder} -o {out}", "{folder}: is a directory, not a file", 1),
    ("not a data file", "preprocess {text} -o {out} {geometry}", "{text}: unknown file format", 1),
    ("standard input empty", "info -", "-: standard input is empty", 1),
    ("truncated HDF5 file", "mask {cut_h5} -o {out}", "{cut_h5}: HDF5 file is truncated or corrupt", 1),
    ("truncated multi-frame EDF", "preprocess {cut_edf} -o {out} {geometry}",
     "{cut_edf}: truncated: frame 2 needs 512 bytes at offset", 1),
    ("CBF cut inside its header", "preprocess {cut_cbf} -o {out} {geometry}",
     "{cut_cbf}: CBF truncated inside the header", 1),
    ("CBF cut inside its data", "preprocess {short_cbf} -o {out} {geometry}",
     "{short_cbf}: truncated: the CBF header promises", 1),
    ("CBF with a damaged byte", "preprocess {flipped_cbf} -o {out} {geometry}",
     "{flipped_cbf}: CBF data do not match their checksum", 1),
    ("truncated TIFF stack", "preprocess {cut_tif} -o {out} {geometry}", "{cut_tif}: truncated TIFF", 1),
    ("truncated npy file", "preprocess {cut_npy} -o {out} {geometry}", "{cut_npy}: truncated .npy", 1),
    ("EDF header claiming a huge frame", "preprocess {huge_edf} -o {out} {geometry}",
     "more than any detector", 1),
    ("HDF5 stack still being written", "preprocess {live_h5} -o {out} {geometry}",
     "promises 4 frames but 2 were never written", 1),
    ("HDF5 link out of the input's folder", "preprocess {link_h5} -o {out} {geometry}",
     "outside the file's folder; refused", 1),
    ("HDF5 file with several candidate datasets", "preprocess {ambiguous_h5} -o {out} {geometry}",
     "{ambiguous_h5}: cannot tell which dataset holds the frames", 1),
    ("HDF5 dataset path that does not exist", "preprocess {raw}::/no/such -o {out} {geometry}",
     "{raw}: no dataset /no/such", 1),
    ("frames of different shapes", "preprocess {a_tif} {b_tif} -o {out} {geometry}",
     "frames of different shapes", 1),
    ("frame selection outside the stack", "preprocess {raw} --frames 10:20 -o {out} {geometry}",
     "the frame selection is empty (the stack has 4 frames)", 1),
    ("pattern holding NaN", "mask {nan_cxi} -o {out}", "{nan_cxi}: data hold NaN or infinite values", 1),
    ("pattern all zero", "mask {zero_cxi} -o {out}", "{zero_cxi}: all unmasked pixels are zero", 1),
    ("a reconstruction where a pattern goes", "mask {runs_cxi} -o {out}",
     "{runs_cxi}: holds a reconstruction", 1),
    ("raw frames where a pattern goes", "mask {raw} -o {out}", "is a stack of 4 raw frames, not a pattern", 1),
    ("output folder missing", "mask {pattern} -o {nofolder}/out.cxi", "folder {nofolder} does not exist", 1),
    ("output is a folder", "mask {pattern} -o {folder}", "{folder}: is a directory; give an output file name", 1),
    ("volume too large for the memory", "assemble3d {raw} -o {out} {geometry} --angles 0:3:1 --size 100000",
     "a 100000^3 volume needs about 24.9 PiB of memory", 1),
    ("crop larger than the detector", "preprocess {raw} --crop 1000 -o {out} {geometry}",
     "--crop 1000 is larger than the detector (64x64 pixels)", 2),
    ("zero distance", "preprocess {raw} -o {out} --energy 8 --distance 0 --pixel 75e-6",
     "--distance 0.0: must be greater than 0", 2),
    ("pixel size not a number", "plan --energy 8 --distance 5 --pixel nan", "--pixel nan: must be a finite number", 2),
    ("negative specimen size", "plan --energy 8 --distance 5 --pixel 75e-6 --size -1e-6",
     "--size -1e-06: must be greater than 0", 2),
    ("angles fewer than frames", "assemble3d {raw} -o {out} {geometry} --angles 1,2",
     "--angles 1,2: 2 angles for 4 frames", 2),
    ("angles repeated", "assemble3d {raw} -o {out} {geometry} --angles 0,1,1,2",
     "--angles 0,1,1,2: duplicated angle 1 deg (frames 1 and 2)", 2),
    ("angles neither a file nor a list", "assemble3d {raw} -o {out} {geometry} --angles ten",
     "--angles 'ten': no such file, and not a comma list", 2),
    ("angle range going the wrong way", "assemble3d {raw} -o {out} {geometry} --angles 0:3:-1",
     "STEP must move from START towards STOP", 2),
    ("malformed frame range", "preprocess {raw} --frames a:b -o {out} {geometry}",
     "--frames 'a:b': expected A:B", 2),
    ("unknown recipe step", "phase {pattern} -o {out} --recipe hio**10,foo**5", "recipe 'hio**10,foo**5'", 2),
    ("config file with an unknown key", "plan --config {bad_toml} --energy 8 --distance 5 --pixel 75e-6",
     "{bad_toml}: unknown option 'nonsense'", 2),
    ("config value of the wrong type", "plan --config {typo_toml} --energy 8 --distance 5 --pixel 75e-6",
     "{typo_toml}: detector = 'many': Input should be a valid integer", 2),
    ("data and --json both on stdout", "mask {pattern} -o - --json", "-o - and --json both want stdout", 2),
]

#: The files the rows name: placeholder -> the name the man page shows (tests make files of these names).
FILES: dict[str, str] = {
    "missing": "missing.cxi", "folder": "folder", "text": "notes.txt", "out": "out.cxi", "cut_h5": "cut.h5",
    "cut_edf": "cut.edf", "cut_cbf": "cut.cbf", "short_cbf": "short.cbf", "flipped_cbf": "flipped.cbf",
    "cut_tif": "cut.tif", "cut_npy": "cut.npy", "huge_edf": "huge.edf", "live_h5": "live.h5", "link_h5": "link.h5",
    "ambiguous_h5": "ambiguous.h5", "raw": "raw.h5", "a_tif": "a.tif", "b_tif": "b.tif", "nan_cxi": "nan.cxi",
    "zero_cxi": "zero.cxi", "runs_cxi": "runs.cxi", "pattern": "pattern.cxi", "nofolder": "nofolder",
    "bad_toml": "bad.toml", "typo_toml": "typo.toml", "geometry": "--energy 8 --distance 1 --pixel 75e-6",
}


def diagnostics_section() -> str:
    """The DIAGNOSTICS section of cxdi(1), from DIAGNOSTICS."""
    out = [".SH DIAGNOSTICS",
           "Every error is one line on standard error, \\fBcxdi\\fR \\fICOMMAND\\fR\\fB: error:\\fR followed by "
           "the file and what is wrong with it; no output file is written (an existing one is left as it was) and "
           "the exit status is 1 (data, files, computation) or 2 (usage). Interrupted by SIGINT, SIGTERM or "
           "SIGHUP, a command says what it was doing, leaves no output and no temporary file, and exits 130, "
           "143 or 129. Some bad inputs, the command, what cxdi says (an excerpt) and the exit status:"]
    for what, argv, says, status in DIAGNOSTICS:
        out += [".TP", f"\\fB{_esc(what)}\\fR (exit {status})", "\\fBcxdi " + _esc(argv.format(**FILES)) + "\\fR",
                ".br", _esc(f"error: ...{says.format(**FILES)}...")]
    return "\n".join(out)


def _esc(text: str) -> str:
    """Escape roff special characters in running text."""
    text = text.replace("\\", "\\e")
    lines = []
    for line in text.splitlines():
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line.replace("-", "\\-"))
    return "\n".join(lines)


def _paragraphs(help_text: str) -> tuple[str, list[str], list[str]]:
    """Split a docstring into (summary, description paragraphs, example lines)."""
    paras = [p.strip() for p in (help_text or "").strip().split("\n\n") if p.strip()]
    summary = " ".join(paras[0].split()) if paras else ""
    body, examples = [], []
    for p in paras[1:]:
        if p.startswith("Example"):
            for line in p.splitlines():
                line = line.strip()
                if line.startswith("Example"):
                    line = line.split(":", 1)[1].strip()
                if line:
                    examples.append(line)
        else:
            body.append(p if "\n  " in p else " ".join(p.split()))
    return summary, body, examples


def _arg_name(param) -> str:
    return (param.metavar or param.name or "ARG").upper()


def _option_line(param) -> str:
    opts = ", ".join(list(param.opts) + list(param.secondary_opts))
    if getattr(param, "is_flag", False):
        return opts
    ann = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    metavar = {int: "N", float: "X", str: "TEXT"}.get(ann, "VALUE")
    if "Path" in str(ann):
        metavar = "FILE"
    return f"{opts} {metavar}"


def page(name: str, command, parent: str = "cxdi", commands: list[str] | tuple[str, ...] = ()) -> str:
    """The roff source of one command's man page; `commands` (the command tree's names) go in SEE ALSO."""
    full = f"{parent} {name}" if name else parent
    title = full.replace(" ", "-")
    summary, body, examples = _paragraphs(command.help or "")
    out = [f'.TH "{title.upper()}" 1 "" "cxdi" "cxdi manual"', ".SH NAME", f"{_esc(title)} \\- {_esc(summary)}"]
    args = [p for p in command.params if p.param_type_name == "argument"]
    opts = [p for p in command.params if p.param_type_name == "option"]
    synopsis = f"\\fB{_esc(full)}\\fR [\\fIOPTIONS\\fR]"
    for a in args:
        synopsis += f" \\fI{_esc(_arg_name(a))}\\fR" + ("..." if a.nargs == -1 else "")
    sub = getattr(command, "commands", None)
    if sub:
        synopsis += " \\fICOMMAND\\fR [\\fIARGS\\fR]..."
    out += [".SH SYNOPSIS", synopsis, ".SH DESCRIPTION", _esc(summary)]
    for para in body:
        out += [".PP", _esc(para)]
    if sub:
        out += [".SH COMMANDS"]
        for cname in sorted(sub):
            out += [".TP", f"\\fB{_esc(cname)}\\fR", _esc(_paragraphs(sub[cname].help or "")[0])]
    if args:
        out.append(".SH ARGUMENTS")
        for a in args:
            helptext = getattr(a, "help", "") or ""
            out += [".TP", f"\\fI{_esc(_arg_name(a))}\\fR", _esc(helptext)]
    if opts:
        out.append(".SH OPTIONS")
        for o in opts:
            helptext = (o.help or "").strip()
            default = o.default
            if not o.required and default not in (None, False, "", ()) and not callable(default):
                helptext += f" [default: {default}]"
            if o.required:
                helptext += " [required]"
            out += [".TP", f"\\fB{_esc(_option_line(o))}\\fR", _esc(helptext)]
    if not name:
        out.append(diagnostics_section())
    out.append(EXIT_STATUS.rstrip("\n"))
    if examples:
        out.append(".SH EXAMPLES")
        for ex in examples:
            out += [".PP", ".nf", _esc(ex), ".fi"]
    others = sorted(n for n in commands if n != name)
    out += [".SH SEE ALSO", ", ".join(f"\\fBcxdi\\-{_esc(n)}\\fR(1)" for n in others)]
    return "\n".join(out) + "\n"


def pages() -> dict[str, str]:
    """All man pages keyed by file name."""
    import typer  # noqa: PLC0415

    from cxdi_cli.commands.main import app  # noqa: PLC0415

    root = typer.main.get_command(app)
    names = sorted(root.commands)
    result = {"cxdi.1": page("", root, commands=names)}
    for name, cmd in sorted(root.commands.items()):
        result[f"cxdi-{name}.1"] = page(name, cmd, commands=names)
    return result


def main(argv: list[str]) -> int:
    """Write every page into the folder argv[0] (default man/), removing stale cxdi pages."""
    folder = Path(argv[0] if argv else "man")
    folder.mkdir(parents=True, exist_ok=True)
    new = pages()
    for old in folder.glob("cxdi*.1"):
        if old.name not in new:
            old.unlink()
    for fname, text in new.items():
        (folder / fname).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
