"""Shared test helpers: run the CLI in-process with stdout and stderr kept apart."""
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


@pytest.fixture(autouse=True)
def _fresh_stdin_cache():
    """Each test reads its own standard input (io spools stdin once per process)."""
    from cxdi_cli.io import paths

    paths._STDIN_CACHE.clear()
    yield
    paths._STDIN_CACHE.clear()
