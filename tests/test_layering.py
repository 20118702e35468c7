"""The architecture, written down once: which stage may import which, checked on the source with `ast`.

Every module of the library and of the CLI belongs to a stage (`STAGE_OF`, longest prefix wins); an
import is allowed when its arrow is in `ALLOWED` (an import inside a function counts as much as one at
the top). On top of the table: a command imports no other command (only the helper modules), no
library module imports the CLI, and the library has no import cycle at module level, nor two modules
importing each other at any level. A new module outside every stage fails until the table names it.
"""
from __future__ import annotations

import ast
import dataclasses
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: Module (or package) -> stage; the longest matching dotted prefix decides (the top package itself
#: matches only itself, so a new top-level module must be given a stage here).
STAGE_OF = {
    "cxdi_cli": "root",                 # __version__ and lazy access to the stages; imports nothing
    "cxdi_cli.model": "model",          # errors, mask bits, the dataclasses
    "cxdi_cli.fft": "fft",
    "cxdi_cli.io": "io",
    "cxdi_cli.geometry": "base",
    "cxdi_cli.planning": "base",
    "cxdi_cli.sampling": "base",
    "cxdi_cli.inspect_file": "base",
    "cxdi_cli.executor": "base",        # where tasks run: in-process, local processes, Dask
    "cxdi_cli.registration": "base",    # alignment of runs: analysis and phasing (consensus) both use it
    "cxdi_cli.consensus": "base",       # agreement between runs: phase picks /entry_1, average its runs
    "cxdi_cli.reduce": "reduce",
    "cxdi_cli.phasing": "phasing",
    "cxdi_cli.analysis": "analysis",
    "cxdi_cli.view": "view",
    "cxdi_cli.sim": "sim",
    "cxdi_cli.commands": "commands",
}

_BOTTOM = {"root", "model"}
_BASE = _BOTTOM | {"fft", "io", "base"}
_LIBRARY = _BASE | {"reduce", "phasing", "analysis", "view", "sim"}

#: The allowed arrows: stage -> the stages it may import (its own stage is always allowed).
ALLOWED = {
    "root": set(),
    "model": {"root"},
    "fft": _BOTTOM,                                 # the bottom: formats and the FFT use only the model
    "io": _BOTTOM,
    "base": _BASE,                                  # geometry, planning, sampling, inspect_file
    "reduce": _BASE,                                # the three numerical stages stand side by side
    "phasing": _BASE,
    "analysis": _BASE,
    "view": _LIBRARY,                               # pictures of what every stage makes
    "sim": _LIBRARY,                                # simulations may run every stage
    "commands": _LIBRARY,
}

#: Third-party packages only some stages may import (any other package is free for everyone).
EXTERNAL = {
    "h5py": {"io"}, "hdf5plugin": {"io"}, "tifffile": {"io"}, "fabio": {"io"},
    "pyfftw": {"fft"},
    "typer": {"commands"}, "rich": {"commands"}, "click": {"commands"},
}

#: Command modules that may be imported by other command modules (shared CLI code lives there).
COMMAND_HELPERS = {"cxdi_cli.commands", "cxdi_cli.commands._common", "cxdi_cli.commands.main",
                   "cxdi_cli.commands._man"}


@dataclasses.dataclass(frozen=True)
class Import:
    source: str          # importing module
    target: str          # imported module (the most specific one that exists), or a third-party name
    line: int
    top_level: bool      # executed at import time (not inside a function)


def find_modules(package_dirs: dict[str, pathlib.Path]) -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for each package name and the folder installed under it."""
    found = {}
    for package, folder in package_dirs.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _resolve(name: str, modules: dict[str, pathlib.Path]) -> str:
    """The longest prefix of `name` that is one of our modules (`pkg.mod.func` -> `pkg.mod`)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        candidate = ".".join(parts[:k])
        if candidate in modules:
            return candidate
    return name


def _inside_function(tree: ast.AST) -> set[int]:
    inner = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inner.update(id(n) for n in ast.walk(node) if n is not node)
    return inner


def imports_of(module: str, modules: dict[str, pathlib.Path]) -> list[Import]:
    """Every import statement of `module`, resolved to our modules where it names one."""
    path = modules[module]
    tree = ast.parse(path.read_text(), str(path))
    inner = _inside_function(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` names the submodule when there is one, else pkg itself
            targets = [_resolve(f"{base}.{a.name}", modules) for a in node.names]
        for target in targets:
            found.append(Import(module, _resolve(target, modules), node.lineno, id(node) not in inner))
    return found


def stage_of(module: str, table: dict[str, str]) -> str | None:
    """The stage of `module`: its longest prefix in `table` (a top-level package matches only itself)."""
    if module in table:
        return table[module]
    parts = module.split(".")
    for k in range(len(parts) - 1, 1, -1):
        stage = table.get(".".join(parts[:k]))
        if stage is not None:
            return stage
    return None


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (or a self-import)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def check(package_dirs: dict[str, pathlib.Path], stages: dict[str, str] = STAGE_OF,
          allowed: dict[str, set[str]] = ALLOWED, external: dict[str, set[str]] = EXTERNAL,
          helpers: set[str] = COMMAND_HELPERS, command_stage: str = "commands") -> list[str]:
    """Every breach of the table, one line each (empty when the code follows it)."""
    modules = find_modules(package_dirs)
    problems = []
    top_edges: dict[str, set[str]] = {}
    any_edges: dict[str, set[str]] = {}
    for module in sorted(modules):
        source = stage_of(module, stages)
        if source is None:
            problems.append(f"{module}: in no stage (add it to STAGE_OF)")
            continue
        for imp in imports_of(module, modules):
            where = f"{module}:{imp.line} imports {imp.target}"
            if imp.target not in modules:
                top = imp.target.split(".")[0]
                if top in external and source not in external[top]:
                    problems.append(f"{where}: only {sorted(external[top])} may import {top}")
                continue
            if imp.target == module:
                continue
            target = stage_of(imp.target, stages)
            if target != source and target not in allowed[source]:
                problems.append(f"{where}: {source} may not import {target}")
            if (source == command_stage and target == command_stage and module not in helpers
                    and imp.target not in helpers):
                problems.append(f"{where}: a command imports another command (shared code goes in "
                                f"a helper module or the library)")
            if source != command_stage and target != command_stage:
                any_edges.setdefault(module, set()).add(imp.target)
                if imp.top_level:
                    top_edges.setdefault(module, set()).add(imp.target)
    for cycle in _cycles(top_edges):
        problems.append(f"import cycle at module level: {' <-> '.join(cycle)}")
    for a in sorted(any_edges):
        for b in sorted(any_edges[a]):
            if a < b and a in any_edges.get(b, ()):
                problems.append(f"{a} and {b} import each other")
    return problems


PROJECT = {"cxdi_cli": ROOT / "cxdi_cli", "cxdi_cli.commands": ROOT / "commands"}


def test_project_follows_the_table():
    problems = check(PROJECT)
    assert not problems, "\n".join(problems)


def test_the_table_covers_every_stage():
    assert set(ALLOWED) == set(STAGE_OF.values())
    for stage, targets in ALLOWED.items():
        assert targets <= set(ALLOWED), stage
    assert "commands" not in _LIBRARY
    modules = find_modules(PROJECT)
    # every stage in the table has at least one module (no stale rows)
    assert set(STAGE_OF.values()) == {stage_of(m, STAGE_OF) for m in modules}


# ---- the checker on a tiny fake package ----------------------------------------------------------

FAKE_STAGES = {"pkg": "root", "pkg.model": "model", "pkg.io": "io", "pkg.reduce": "reduce",
               "pkg.phasing": "phasing", "pkg.view": "view", "pkg.commands": "commands"}
FAKE_HELPERS = {"pkg.commands", "pkg.commands._common"}


def _fake(tmp_path: pathlib.Path, files: dict[str, str]) -> dict[str, pathlib.Path]:
    lib = tmp_path / "pkg"
    cli = tmp_path / "cmds"
    base = {"pkg/__init__.py": "", "pkg/model.py": "import numpy\n", "pkg/io/__init__.py": "",
            "pkg/io/cxi.py": "from pkg.model import X\nimport h5py\n",
            "pkg/reduce/__init__.py": "", "pkg/reduce/pattern.py": "from pkg import io\n",
            "pkg/phasing/__init__.py": "", "pkg/phasing/runs.py": "from . import algos\n",
            "pkg/phasing/algos.py": "from pkg.model import X\n",
            "pkg/view/__init__.py": "", "pkg/view/render.py": "from pkg.phasing import runs\n",
            "cmds/__init__.py": "", "cmds/_common.py": "import typer\n",
            "cmds/phase.py": "from pkg.commands import _common as c\n"
                             "def phase():\n    from pkg.phasing import runs\n"}
    for name, text in {**base, **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"pkg": lib, "pkg.commands": cli}


def _check_fake(dirs):
    return check(dirs, FAKE_STAGES, ALLOWED, EXTERNAL, FAKE_HELPERS)


def test_checker_passes_a_clean_fake_package(tmp_path):
    assert _check_fake(_fake(tmp_path, {})) == []


def test_checker_fails_an_arrow_against_the_table(tmp_path):
    # phasing -> reduce, inside a function (function-level imports count too)
    dirs = _fake(tmp_path, {"pkg/phasing/algos.py": "def f():\n    from pkg.reduce.pattern import g\n"})
    problems = _check_fake(dirs)
    assert len(problems) == 1 and "phasing may not import reduce" in problems[0], problems
    # io at the bottom: io -> phasing, relative import from a package __init__
    dirs = _fake(tmp_path, {"pkg/io/__init__.py": "from ..phasing import runs\n"})
    assert any("io may not import phasing" in p for p in _check_fake(dirs))
    # the library never imports the CLI
    dirs = _fake(tmp_path, {"pkg/view/render.py": "import pkg.commands._common\n"})
    assert any("view may not import commands" in p for p in _check_fake(dirs))
    # typer only in the CLI
    dirs = _fake(tmp_path, {"pkg/reduce/pattern.py": "import typer.testing\n"})
    assert any("may import typer" in p for p in _check_fake(dirs))


def test_checker_fails_a_command_importing_a_command(tmp_path):
    dirs = _fake(tmp_path, {"cmds/average.py": "from pkg.commands.phase import phase\n"})
    problems = _check_fake(dirs)
    assert len(problems) == 1 and "another command" in problems[0], problems
    # the helper module is fine
    dirs = _fake(tmp_path, {"cmds/average.py": "from pkg.commands import _common\n"})
    assert _check_fake(dirs) == []


def test_checker_fails_cycles(tmp_path):
    # a three-module cycle at module level, all arrows allowed by the table
    dirs = _fake(tmp_path, {"pkg/phasing/algos.py": "from pkg.phasing import sup\n",
                            "pkg/phasing/sup.py": "import pkg.phasing.runs\n"})
    problems = _check_fake(dirs)
    assert len(problems) == 1 and "cycle" in problems[0], problems
    assert "pkg.phasing.algos <-> pkg.phasing.runs <-> pkg.phasing.sup" in problems[0]
    # two modules importing each other, one of them only inside a function
    dirs = _fake(tmp_path, {"pkg/phasing/algos.py": "def f():\n    from pkg.phasing.runs import r\n"})
    problems = _check_fake(dirs)
    assert problems == ["pkg.phasing.algos and pkg.phasing.runs import each other"], problems


def test_checker_fails_a_module_in_no_stage(tmp_path):
    dirs = _fake(tmp_path, {"pkg/extra.py": ""})
    assert _check_fake(dirs) == ["pkg.extra: in no stage (add it to STAGE_OF)"]
