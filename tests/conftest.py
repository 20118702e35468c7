"""Shared test helpers: run the CLI in-process with stdout and stderr kept apart; a simulated tilt
series assembled into a volume as a user does it."""
import json
import os

import pytest

os.environ.setdefault("CXDI_WISDOM", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "wisdom.json"))
os.environ.setdefault("CXDI_FFTW_PLANNER", "FFTW_ESTIMATE")  # tests: fast planning, results identical to float rounding


@pytest.fixture
def cli():
    """cli(*args, input=None) -> Result with exit_code, stdout, stderr."""
    from typer.testing import CliRunner

    from cxdi_cli.commands.main import app

    runner = CliRunner()

    def run(*args, input=None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    return run


@pytest.fixture
def assembled(cli):
    """assembled(folder, *simulate_options) -> (sim folder, volume path): `cxdi simulate particle3d`
    into folder/sim, then `cxdi assemble3d` of its tilt series with the logbook values of
    experiment.json into folder/vol.cxi."""

    def make(folder, *options):
        sim = folder / "sim"
        r = cli("simulate", "particle3d", "-o", sim, *options, "-q")
        assert r.exit_code == 0, r.stderr
        exp = json.loads((sim / "experiment.json").read_text())
        tilts, vol = sim / "tilts.h5", folder / "vol.cxi"
        r = cli("assemble3d", tilts, "-o", vol, "--energy", exp["energy_kev"], "--distance", exp["distance_m"],
                "--pixel", exp["pixel_m"], "--angles", f"{tilts}::/entry_0000/measurement/omega", "-q")
        assert r.exit_code == 0, r.stderr
        return sim, vol

    return make


@pytest.fixture(autouse=True)
def _fresh_stdin_cache():
    """Each test reads its own standard input (io spools stdin once per process)."""
    from cxdi_cli.io import paths

    paths._STDIN_CACHE.clear()
    yield
    paths._STDIN_CACHE.clear()
