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
