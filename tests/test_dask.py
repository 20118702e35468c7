"""On a Dask cluster (a `distributed.LocalCluster` of two one-thread worker processes on 127.0.0.1):
the same runs as in-process for the same seed, written in the same order; a worker killed while runs
are in flight loses nothing; failed tasks are reported apart; an assembled tilt series matches the
single-process volume; an unreachable scheduler is one line and exit 1 with nothing written."""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from cxdi_cli import executor as ex, io  # noqa: E402
from cxdi_cli.model import InputError  # noqa: E402
from test_phasing import synthetic  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes (one task thread each), listening on 127.0.0.1 only."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as lc:
        yield lc


@pytest.fixture(scope="module")
def monitor(cluster):
    """A second client, to look at and disturb the cluster while a command runs."""
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        yield client


def _sum_times(shared, k, report):
    if report is not None:
        report({"task": k, "value": np.float64(k)})
    return float(np.sum(shared) * k)


def _fails_on_one(shared, k, report):
    if k == 1:
        raise ValueError("one is not allowed")
    return k


def test_map_on_workers_matches_in_process(cluster):
    shared = np.arange(100, dtype=np.float32)
    with ex.connect(cluster.scheduler_address) as dask:
        assert "2 workers" in dask.describe() and dask.workers == 2
        events, done = [], []
        out = dask.map(_sum_times, shared, [(k,) for k in range(6)], on_done=lambda k, r: done.append(k),
                       on_event=events.append)
        local = ex.InProcess().map(_sum_times, shared, [(k,) for k in range(6)])
        assert out.results == local.results and not out.failures
        assert sorted(done) == list(range(6))
        assert sorted(e["task"] for e in events) == list(range(6))     # events reach the client
        assert all(isinstance(e["value"], float) for e in events)
        failed = ex.Dask(dask.client, retries=1).map(_fails_on_one, shared, [(k,) for k in range(3)])
    assert list(failed.failures) == [1] and failed.results == [0, None, 2]
    assert failed.describe(1) == "ValueError: one is not allowed"


# --------------------------------------------------------------------------- phase


@pytest.fixture(scope="module")
def pattern_file(tmp_path_factory):
    pattern, _ = synthetic(n=128, seed=1)
    path = tmp_path_factory.mktemp("dask_phase") / "pattern.cxi"
    io.write_pattern(str(path), pattern, io.make_step("test"))
    return path


PHASE = ("--runs", 4, "--seed", 7, "--recipe", "hio**600,er**100", "--positivity", "-q")


def _runs(path):
    rec = io.read_reconstruction(str(path))
    return [(r.params["run_index"], r.obj) for r in rec.runs]


def _same_runs(a, b):
    assert [k for k, _ in a] == [k for k, _ in b]                     # the same runs in the same order
    for (_, x), (_, y) in zip(a, b):
        assert np.linalg.norm(x - y) / np.linalg.norm(y) < 1e-4


@pytest.fixture(scope="module")
def in_process_runs(pattern_file, tmp_path_factory):
    from typer.testing import CliRunner

    from cxdi_cli.commands.main import app

    out = tmp_path_factory.mktemp("dask_ref") / "runs.cxi"
    r = CliRunner().invoke(app, ["phase", str(pattern_file), "-o", str(out), *map(str, PHASE), "--jobs", "1"])
    assert r.exit_code == 0, r.stderr
    return _runs(out)


def test_phase_on_the_cluster_gives_the_in_process_runs(cli, cluster, pattern_file, in_process_runs, tmp_path):
    out = tmp_path / "runs.cxi"
    r = cli("phase", pattern_file, "-o", out, *PHASE, "--scheduler", cluster.scheduler_address, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["runs_requested"] == 4
    _same_runs(_runs(out), in_process_runs)


def test_scheduler_from_env_and_scheduler_file(cli, cluster, pattern_file, in_process_runs, tmp_path,
                                                monkeypatch):
    sfile = tmp_path / "scheduler.json"
    sfile.write_text(json.dumps({"type": "Scheduler", "address": cluster.scheduler_address}))
    r = cli("phase", pattern_file, "-o", tmp_path / "a.cxi", *PHASE, "--scheduler-file", sfile)
    assert r.exit_code == 0, r.stderr
    _same_runs(_runs(tmp_path / "a.cxi"), in_process_runs)
    monkeypatch.setenv("CXDI_SCHEDULER", cluster.scheduler_address)
    r = cli("phase", pattern_file, "-o", tmp_path / "b.cxi", *PHASE[:-1], "--progress-json")
    assert r.exit_code == 0, r.stderr
    done = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    assert sorted(ev["run"] for ev in done if ev.get("done")) == [0, 1, 2, 3]   # progress from the workers
    assert any("iteration" in ev for ev in done)
    _same_runs(_runs(tmp_path / "b.cxi"), in_process_runs)


def _kill_a_busy_worker(monitor, killed, stop):
    """Wait until a worker is running a task for a while, then SIGKILL its process (its nanny restarts it)."""
    pids = monitor.run(os.getpid)
    busy_since = None
    while not stop.is_set():
        busy = [w for w, keys in monitor.processing().items() if keys and w in pids]
        if busy and busy_since is None:
            busy_since = time.monotonic()
        if busy and time.monotonic() - busy_since > 0.5:
            os.kill(pids[busy[0]], signal.SIGKILL)
            killed.append(busy[0])
            return
        time.sleep(0.05)


def test_a_worker_killed_mid_run_loses_nothing(cli, cluster, monitor, pattern_file, in_process_runs, tmp_path):
    killed: list[str] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_a_busy_worker, args=(monitor, killed, stop), daemon=True)
    killer.start()
    out = tmp_path / "runs.cxi"
    try:
        r = cli("phase", pattern_file, "-o", out, *PHASE, "--recipe", "hio**3000,er**100",
                "--scheduler", cluster.scheduler_address)
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was busy long enough to be killed"
    assert r.exit_code == 0, r.stderr
    ref = tmp_path / "ref.cxi"
    r = cli("phase", pattern_file, "-o", ref, *PHASE, "--recipe", "hio**3000,er**100")
    assert r.exit_code == 0, r.stderr
    _same_runs(_runs(out), _runs(ref))
    monitor.wait_for_workers(2, timeout=60)   # the nanny brought the worker back for the next tests


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_one_line_exit_1_nothing_written(cli, pattern_file, tmp_path):
    address = f"tcp://127.0.0.1:{_closed_port()}"
    out = tmp_path / "runs.cxi"
    t0 = time.monotonic()
    r = cli("phase", pattern_file, "-o", out, *PHASE, "--scheduler", address)
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cxdi phase: error:") and address in lines[0]
    assert time.monotonic() - t0 < 30 and not out.exists()
    config = tmp_path / "cxdi.toml"                      # the config key does what --scheduler does
    config.write_text(f'[phase]\nscheduler = "{address}"\n')
    r = cli("phase", pattern_file, "-o", out, *PHASE, "--config", config)
    assert r.exit_code == 1 and address in r.stderr and not out.exists()
    with pytest.raises(InputError, match="no such scheduler file|not an address"):
        ex.connect(str(tmp_path / "nowhere"))


# --------------------------------------------------------------------------- assemble3d


@pytest.fixture(scope="module")
def tilt_series(tmp_path_factory):
    from cxdi_cli.sim.tilt3d import simulate_particle3d

    path = tmp_path_factory.mktemp("dask_tilts")
    exp = simulate_particle3d(path, size=32, distance=0.3, noise=True, angles=(-60, 60, 3), seed=5)
    return path, exp


@pytest.mark.parametrize("method", ["interp", "splat"])
def test_assemble3d_on_the_cluster_matches_single_process(cli, cluster, tilt_series, tmp_path, method):
    path, exp = tilt_series
    args = ("assemble3d", path / "tilts.h5", "--energy", 8, "--distance", exp["distance_m"], "--pixel", 75e-6,
            "--angles", f"{path / 'tilts.h5'}::/entry_0000/measurement/omega", "--method", method, "-q")
    r = cli(*args, "-o", tmp_path / "one.cxi")
    assert r.exit_code == 0, r.stderr
    r = cli(*args, "-o", tmp_path / "many.cxi", "--scheduler", cluster.scheduler_address)
    assert r.exit_code == 0, r.stderr
    one, many = io.read_pattern(str(tmp_path / "one.cxi")), io.read_pattern(str(tmp_path / "many.cxi"))
    assert np.array_equal(one.mask, many.mask)
    diff = np.linalg.norm(many.intensity - one.intensity) / np.linalg.norm(one.intensity)
    assert diff < 1e-5, diff
    assert np.allclose(many.extra["weight"], one.extra["weight"], rtol=1e-6)
