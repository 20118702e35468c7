"""CLI contract and architecture: layering, lazy imports, man pages, error lines, pipes."""
import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CXDI = pathlib.Path(sys.executable).with_name("cxdi")


def _imports(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_layering():
    """Library never imports the CLI (typer, rich, commands); commands never import each other."""
    for path in (ROOT / "cxdi_cli").rglob("*.py"):
        bad = {n for n in _imports(path) if n.split(".")[0] in ("typer", "rich", "commands")
               or n.startswith("cxdi_cli.commands")}
        assert not bad, f"{path.name} imports {bad}"
    commands = {p.stem for p in (ROOT / "commands").glob("*.py")}
    for path in (ROOT / "commands").glob("*.py"):
        others = {n.rsplit(".", 1)[-1] for n in _imports(path) if n.startswith("cxdi_cli.commands.")}
        others -= {"_common", path.stem}
        if path.stem in ("main", "_man"):
            continue
        assert not (others & commands), f"{path.name} imports commands {others & commands}"


def test_only_fft_module_imports_pyfftw_and_numpy_fft_stays_out_of_library():
    for path in (ROOT / "cxdi_cli").rglob("*.py"):
        names = _imports(path)
        if path.name != "fft.py":
            assert "pyfftw" not in {n.split(".")[0] for n in names}, path.name
        assert "numpy.fft.fftn" not in names and "scipy.fft" not in names, path.name


def test_help_imports_no_heavy_modules():
    code = ("import sys; sys.argv=['cxdi','--help']\n"
            "from cxdi_cli.commands.main import app\n"
            "heavy=[m for m in ('numpy','h5py','pyfftw','scipy','matplotlib') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"cxdi --help imports {out.stdout.strip()}"


def test_every_command_listed_with_example(cli):
    from cxdi_cli.commands.main import app
    import typer

    root = typer.main.get_command(app)
    r = cli("--help")
    assert r.exit_code == 0
    for name, cmd in root.commands.items():
        assert name in r.stdout
        assert "Example" in (cmd.help or ""), f"{name} help has no Example"


def test_man_pages_current():
    from cxdi_cli.commands import _man

    pages = _man.pages()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "man").glob("cxdi*.1")}
    stale = sorted(n for n in set(pages) | set(on_disk) if pages.get(n) != on_disk.get(n))
    assert not stale, f"man pages out of date: {stale}; run `make man`"


def test_error_is_one_line_exit_1_and_nothing_on_stdout(cli, tmp_path):
    r = cli("info", tmp_path / "missing.cxi")
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("cxdi info: error: ")
    assert "missing.cxi" in r.stderr


def test_usage_error_exit_2(cli):
    r = cli("plan", "--energy", "eight", "--distance", 1, "--pixel", 1e-4)
    assert r.exit_code == 2 and r.stdout == ""


def test_config_file_values_and_command_line_wins(cli, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('energy = 8.0\ndistance = 30.0\npixel = 75e-6\n[plan]\ndetector = 2048\n')
    r = cli("plan", "--config", cfg, "--energy", 8, "--distance", 30, "--pixel", "75e-6", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["detector_pixels"] == 2048
    r = cli("plan", "--config", cfg, "--energy", 8, "--distance", 30, "--pixel", "75e-6",
            "--detector", 1024, "--json")
    assert json.loads(r.stdout)["detector_pixels"] == 1024
    bad = tmp_path / "bad.toml"
    bad.write_text("nonsense_option = 1\n")
    r = cli("plan", "--config", bad, "--energy", 8, "--distance", 30, "--pixel", "75e-6")
    assert r.exit_code == 2 and "nonsense_option" in r.stderr


@pytest.mark.skipif(not CXDI.exists(), reason="console script not installed in this environment")
def test_installed_script_reads_stdin(tmp_path):
    """The installed program, run from another folder, reads HDF5 from a pipe."""
    import numpy as np

    from cxdi_cli import io
    from cxdi_cli.model import Pattern

    data = np.random.default_rng(0).poisson(9, (16, 16)).astype(np.float32) + 1
    src = tmp_path / "p.cxi"
    io.write_pattern(str(src), Pattern(data, np.zeros(data.shape, np.uint32)), io.make_step("t"))
    env = dict(os.environ, COLUMNS="100")
    with open(src, "rb") as fh:
        out = subprocess.run([str(CXDI), "info", "-", "--json"], stdin=fh, capture_output=True, cwd=tmp_path,
                             env=env)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["shape"] == [16, 16] and abs(d["photons_total"] - data.sum()) < 1e-3 * data.sum()


def test_angles_as_comma_list_range_or_file_give_the_same_volume(cli, tmp_path):
    """Regression: `assemble3d --angles 1,2` said "no such file"; a list, a range, a text file and an
    HDF5 dataset of the same angles give the same volume."""
    import h5py
    import numpy as np

    from cxdi_cli import io

    rng = np.random.default_rng(0)
    io.write_lima(str(tmp_path / "t.h5"), rng.poisson(5, (3, 32, 32)).astype(np.uint16))
    (tmp_path / "a.txt").write_text("0\n0.5\n1\n")
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["omega"] = np.array([0, 0.5, 1.0])
    volumes = []
    for spec in ("0,0.5,1", "0:1:0.5", tmp_path / "a.txt", f"{tmp_path / 'a.h5'}::/omega"):
        out = tmp_path / "v.cxi"
        r = cli("assemble3d", tmp_path / "t.h5", "-o", out, "--energy", 8, "--distance", 1, "--pixel", 75e-6,
                "--angles", spec, "--threads", 1, "-q")
        assert r.exit_code == 0, (spec, r.stderr)
        volumes.append(io.read_pattern(str(out)).intensity)
    for v in volumes[1:]:
        np.testing.assert_array_equal(v, volumes[0])
    r = cli("assemble3d", tmp_path / "t.h5", "-o", tmp_path / "w.cxi", "--energy", 8, "--distance", 1,
            "--pixel", 75e-6, "--angles", "1,2", "--threads", 1)
    assert r.exit_code == 2 and "--angles 1,2: 2 angles for 3 frames" in r.stderr
    assert not (tmp_path / "w.cxi").exists()


def test_config_values_are_typed_and_checked_like_options(cli, tmp_path):
    """Found by fuzzing: a TOML string where a number goes reached the command (internal error)."""
    for text, said in (('runs = "eight"', "runs = 'eight': Input should be a valid integer"),
                       ("runs = 0", "greater than or equal to 1"), ("runs = [1, 2]", "expected a single value"),
                       ("runs = ", "Invalid value")):
        cfg = tmp_path / "c.toml"
        cfg.write_text(text + "\n")
        r = cli("phase", tmp_path / "missing.cxi", "-o", tmp_path / "r.cxi", "--config", cfg)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"cxdi phase: error: {cfg}: ") and said in r.stderr
