"""The executor seam: the same tasks give the same results, in submission order, on every executor;
failed tasks are reported apart from the others; a CxdiError stops the map; an unreachable scheduler
is one ComputeError naming its address, within a few seconds."""
from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest

from cxdi_cli import executor as ex
from cxdi_cli.model import ComputeError, DataError, InputError


def _scaled_sum(shared, k, report):
    """A toy task: a number from the shared array and the task's own argument, with two events."""
    if report is not None:
        report({"task": k, "step": 1, "value": np.float32(k)})   # a numpy scalar in an event
        report({"task": k, "step": 2})
    return float(np.sum(shared["data"]) * k)


def _fails_on_two(shared, k, report):
    if k == 2:
        raise ValueError("two is not allowed")
    return k * shared["data"][0]


def _bad_data(shared, k, report):
    raise DataError("input.cxi: every pixel is masked")


SHARED = {"data": np.arange(10, dtype=np.float64)}


def _run(executor, fn=_scaled_sum, n=5):
    done, events = [], []
    out = executor.map(fn, SHARED, [(k,) for k in range(n)], on_done=lambda k, r: done.append(k),
                       on_event=events.append)
    return out, done, events


def test_in_process_results_in_order_with_events():
    out, done, events = _run(ex.InProcess())
    assert out.results == [45.0 * k for k in range(5)]
    assert not out.failures and done == list(range(5))
    assert [(e["task"], e["step"]) for e in events] == [(k, s) for k in range(5) for s in (1, 2)]


def test_local_processes_match_in_process_and_forward_events():
    with ex.LocalProcesses(2, threads=1) as pool:
        assert pool.workers == 2 and "2 local processes" in pool.describe()
        out, done, events = _run(pool)
        # the pool lives on: a second map (a guided generation) reuses it
        again = pool.map(_scaled_sum, SHARED, [(3,)])
    assert out.results == [45.0 * k for k in range(5)] and again.results == [135.0]
    assert sorted(done) == list(range(5)) and not out.failures
    assert sorted((e["task"], e["step"]) for e in events) == [(k, s) for k in range(5) for s in (1, 2)]


@pytest.mark.parametrize("make", [ex.InProcess, lambda: ex.LocalProcesses(2, threads=1)])
def test_failures_kept_apart(make):
    with make() as executor:
        out, done, _ = _run(executor, _fails_on_two)
    assert list(out.failures) == [2]
    assert "ValueError: two is not allowed" == out.describe(2)
    assert out.results[:2] == [0.0, 0.0] and out.results[3:] == [0.0, 0.0] and out.results[2] is None
    assert 2 not in done and len(out.done()) == 4


def test_cxdi_error_stops_the_map():
    with pytest.raises(DataError, match="every pixel is masked"):
        ex.InProcess().map(_bad_data, SHARED, [(0,), (1,)])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_error_naming_it():
    address = f"tcp://127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(ComputeError) as err:
        ex.connect(address, timeout=2)
    assert address in str(err.value) and "\n" not in str(err.value)
    assert time.monotonic() - t0 < 30            # a few seconds, never the default minutes


def test_choose_and_scheduler_files(tmp_path):
    assert isinstance(ex.choose(1), ex.InProcess)
    with ex.choose(3) as pool:
        assert isinstance(pool, ex.LocalProcesses) and pool.jobs == 3
    f = tmp_path / "scheduler.json"
    f.write_text(json.dumps({"type": "Scheduler", "address": "tcp://127.0.0.1:8786"}))
    assert ex.scheduler_address(str(f)) == "tcp://127.0.0.1:8786"
    assert ex.scheduler_address("tcp://10.0.0.1:8786") == "tcp://10.0.0.1:8786"
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        ex.scheduler_address(str(tmp_path / "bad.json"))
    with pytest.raises(InputError, match="no such scheduler file"):
        ex.choose(scheduler_file=str(tmp_path / "missing.json"))
    with pytest.raises(InputError, match="not an address"):
        ex.scheduler_address(str(tmp_path / "missing.json"))



class _Loses(ex.InProcess):
    """In-process, except that the tasks of some runs die as tasks on a lost cluster worker do."""

    def __init__(self, runs):
        self.runs = set(runs)

    def map(self, fn, shared, args_list, **kw):
        def flaky(shared, *args):
            if args[1] in self.runs:
                raise OSError("worker tcp://10.0.0.9:40000 died")
            return fn(shared, *args)

        return super().map(flaky, shared, args_list, **kw)


def test_phase_keeps_the_runs_whose_tasks_did_not_fail():
    from cxdi_cli.phasing import runs as phasing
    from test_phasing import synthetic

    pattern, _ = synthetic(n=32, seed=2)
    options = phasing.Options(recipe="hio**20,er**10", runs=3, seed=4, positivity=True)
    rec = phasing.phase(pattern, options, executor=_Loses({1}))
    assert sorted(r.params["run_index"] for r in rec.runs) == [0, 2]
    assert rec.extra["phase"]["lost_runs"] == [{"run": 1, "error": "OSError: worker tcp://10.0.0.9:40000 died"}]
    full = phasing.phase(pattern, options)                    # the runs kept are the undisturbed ones
    by_index = {r.params["run_index"]: r.obj for r in full.runs}
    for r in rec.runs:
        assert np.array_equal(r.obj, by_index[r.params["run_index"]])
    with pytest.raises(ComputeError, match="failed: OSError"):       # every run lost: an error, no output
        phasing.phase(pattern, options, executor=_Loses({0, 1, 2}))
