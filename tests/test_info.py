"""cxdi info opens every simulated experiment's files; bad inputs give one line, exit 1, no output."""
import json
import os

import numpy as np
import pytest


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    from typer.testing import CliRunner

    from cxdi_cli.commands.main import app

    root = tmp_path_factory.mktemp("sims")
    runner = CliRunner()
    for kind, extra in (("tungsten", []), ("cells", []), ("particle3d", ["--angles", "-30:30:10"])):
        r = runner.invoke(app, ["simulate", kind, "-o", str(root / kind), "--size", "48", "-q", *extra])
        assert r.exit_code == 0, r.stderr
    return root


def test_every_simulated_file_opens(cli, sims):
    kinds = {}
    for folder in sorted(sims.iterdir()):
        for name in sorted(os.listdir(folder)):
            path = folder / name
            if path.suffix in (".h5", ".cxi", ".tif"):
                r = cli("info", path, "--json")
                assert r.exit_code == 0, (path, r.stderr)
                kinds[f"{folder.name}/{name}"] = json.loads(r.stdout)["kind"]
        for tif in sorted((folder / "frames").glob("*.tif"))[:1] if (folder / "frames").exists() else []:
            assert cli("info", tif).exit_code == 0
    assert kinds["tungsten/truth.cxi"] == "reconstruction" and kinds["tungsten/expected.cxi"] == "pattern"
    assert kinds["particle3d/truth.cxi"] == "reconstruction"
    assert kinds["tungsten/frames.h5"] == "hdf5" and kinds["particle3d/tilts.h5"] == "hdf5"


@pytest.mark.parametrize("command", [["mask"], ["phase", "--runs", "1", "-r", "er**2"], ["preprocess",
                         "--energy", "8", "--distance", "5", "--pixel", "75e-6"]])
def test_bad_inputs_one_line_exit_1_no_output(cli, sims, tmp_path, command):
    good = sims / "tungsten" / "expected.cxi"
    truncated = tmp_path / "cut.cxi"
    truncated.write_bytes(good.read_bytes()[:5000])
    out = tmp_path / "out.cxi"
    for bad in (truncated, f"{good}::/entry_1/no/such/data", tmp_path):
        r = cli(command[0], bad, "-o", out, *command[1:])
        assert r.exit_code == 1, (command, bad, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ": error: " in ln]
        assert len(lines) == 1 and str(bad).split("::")[0] in lines[0], r.stderr
        assert not out.exists()
        assert [p.name for p in tmp_path.iterdir()] == ["cut.cxi"]  # no temporary leftovers either


@pytest.mark.parametrize("kind", ["tungsten", "cells"])
def test_info_of_expected_matches_the_experiment(cli, sims, kind):
    """photons_total is the sum over measured pixels, the geometry is the simulated one, and the oversampling
    estimate is close to the simulated sigma."""
    from cxdi_cli import io

    path = sims / kind / "expected.cxi"
    exp = json.loads((sims / kind / "experiment.json").read_text())
    r = cli("info", path, "--json")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["kind"] == "pattern"
    p = io.read_pattern(str(path))
    total = float(p.intensity[p.measured].astype(np.float64).sum())
    assert info["photons_total"] == pytest.approx(total, rel=1e-6)
    g = info["geometry"]
    assert g["energy_kev"] == pytest.approx(exp["energy_kev"], rel=1e-9)
    assert g["distance_m"] == pytest.approx(exp["distance_m"], rel=1e-12)
    assert g["pixel_m"] == pytest.approx([exp["pixel_m"]] * 2, rel=1e-12)
    assert g["beam_centre"] == pytest.approx(exp["beam_centre"], abs=1e-9)
    assert info["oversampling_estimate"] == pytest.approx(exp["oversampling"], rel=0.3)
