"""Where tasks run: in this process, in local processes, or on the workers of a Dask cluster.

The one seam between the algorithms and the machines. A task is a pure function called as
``fn(shared, *args, report)``: `shared` is the large read-only input every task needs (a prepared
phasing problem, a calibration), sent to each worker once; `args` are the task's own small arguments;
`report` is a callable for progress events (plain dicts) or None. The algorithms never know which
executor runs them, and the same task gives the same result on every executor.

- `InProcess`: one task after the other (``--jobs 1``).
- `LocalProcesses(jobs)`: a pool of spawned processes, each with max(1, cores // jobs) FFT threads.
- `Dask(client)`: a `distributed` client (``--scheduler tcp://host:8786`` or a scheduler file). The
  shared input is scattered once to every worker (``broadcast=True``), tasks are submitted with
  ``retries`` and gathered as they complete; a worker that dies loses only its tasks, which the
  scheduler reruns elsewhere.

`Executor.map` returns an `Outcome`: the results in submission order and, separately, the tasks that
still failed (after the retries). A task that raises a `CxdiError` (bad data, bad usage: every task
would say the same) stops the map and the error is raised as it is.
"""
from __future__ import annotations

import dataclasses
import json
import os
import queue as queue_mod
import time
import uuid
from typing import Any, Callable, Sequence

from cxdi_cli.model import ComputeError, CxdiError, InputError

#: Seconds to wait for a Dask scheduler to answer before giving up (an unreachable address fails fast).
CONNECT_TIMEOUT = 5.0
#: Seconds to wait for the first worker to join a scheduler that has none (a batch job may be starting).
WORKER_TIMEOUT = 60.0
#: Times Dask reruns a task that raised, on top of the reruns of tasks whose worker died.
RETRIES = 2
#: The environment variable naming a scheduler (address or scheduler file), as --scheduler does.
SCHEDULER_ENV = "CXDI_SCHEDULER"

Task = Callable[..., Any]
OnDone = Callable[[int, Any], None]
OnEvent = Callable[[dict[str, Any]], None]


@dataclasses.dataclass
class Outcome:
    """What `Executor.map` gives back: `results[k]` is task k's result (None where it failed) and
    `failures` maps the index of each task that failed for good to its exception."""

    results: list[Any]
    failures: dict[int, BaseException] = dataclasses.field(default_factory=dict)

    def done(self) -> list[Any]:
        """The results of the tasks that succeeded, in submission order."""
        return [r for k, r in enumerate(self.results) if k not in self.failures]

    def finish(self, k: int, result: Any, keep: bool, on_done: OnDone | None) -> None:
        """Task k succeeded: keep its result (unless `keep` is False) and hand it to `on_done`."""
        if keep:
            self.results[k] = result
        if on_done is not None:
            on_done(k, result)

    def describe(self, k: int) -> str:
        """One line saying why task k failed."""
        exc = self.failures[k]
        text = str(exc).splitlines()[0] if str(exc) else ""
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Executor:
    """Runs tasks ``fn(shared, *args, report)``; see the module docstring. Use as a context manager."""

    kind = "executor"

    def map(self, fn: Task, shared: Any, args_list: Sequence[tuple], *, on_done: OnDone | None = None,
            on_event: OnEvent | None = None, keep: bool = True) -> Outcome:
        """Run one task per entry of `args_list`. `on_done(k, result)` and `on_event(event)` are called
        in the caller's thread as tasks finish and report; the results come back in submission order
        (`keep=False`: not kept, `on_done` consumes each one, so the caller holds one result at a time)."""
        raise NotImplementedError

    @property
    def workers(self) -> int:
        """Tasks that can run at once."""
        return 1

    def describe(self) -> str:
        """A few words for messages and provenance: where the tasks run."""
        return self.kind

    def close(self) -> None:
        """Release the processes or the connection this executor holds."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _collect(k: int, exc: BaseException, out: Outcome) -> None:
    """A failed task: CxdiErrors (the same for every task) stop the map; anything else is recorded."""
    if isinstance(exc, CxdiError):
        raise exc
    out.failures[k] = exc


class InProcess(Executor):
    """Tasks one after the other in this process; events go straight to `on_event`."""

    kind = "in-process"

    def map(self, fn: Task, shared: Any, args_list: Sequence[tuple], *, on_done: OnDone | None = None,
            on_event: OnEvent | None = None, keep: bool = True) -> Outcome:
        out = Outcome(results=[None] * len(args_list))
        for k, args in enumerate(args_list):
            try:
                result = fn(shared, *args, on_event)
            except Exception as exc:  # noqa: BLE001 - a failed task is reported, the others go on
                _collect(k, exc, out)
                continue
            out.finish(k, result, keep, on_done)
        return out


# --------------------------------------------------------------------------- local processes

_LOCAL_EVENTS: Any = None


def _local_init(threads: int, events: Any) -> None:
    """Process-pool initialiser: the FFT thread share of this process and the event queue."""
    global _LOCAL_EVENTS
    from cxdi_cli import fft  # noqa: PLC0415

    if not os.environ.get("CXDI_THREADS"):
        fft.set_threads(threads)
    _LOCAL_EVENTS = events


def _local_task(fn: Task, shared: Any, args: tuple, with_events: bool) -> Any:
    events = _LOCAL_EVENTS if with_events else None
    return fn(shared, *args, events.put if events is not None else None)


class LocalProcesses(Executor):
    """A pool of `jobs` spawned processes (FFTW's thread pool does not survive fork), each with
    max(1, cores // jobs) FFT threads unless CXDI_THREADS says otherwise. The pool lives until `close`,
    so successive maps (guided generations) do not pay the start-up again."""

    kind = "local processes"

    def __init__(self, jobs: int, threads: int | None = None) -> None:
        if jobs < 1:
            raise ValueError(f"jobs {jobs}: at least one process is needed")
        self.jobs = int(jobs)
        if threads is None:
            from cxdi_cli import fft  # noqa: PLC0415

            threads = max(1, fft.threads() // self.jobs)
        self.threads = int(threads)
        self._pool: Any = None
        self._manager: Any = None
        self._events: Any = None

    @property
    def workers(self) -> int:
        return self.jobs

    def describe(self) -> str:
        return f"{self.jobs} local processes"

    def _start(self) -> None:
        import concurrent.futures as cf  # noqa: PLC0415
        import multiprocessing as mp  # noqa: PLC0415

        ctx = mp.get_context("spawn")
        self._manager = ctx.Manager()
        self._events = self._manager.Queue()
        self._pool = cf.ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx, initializer=_local_init,
                                            initargs=(self.threads, self._events))

    def map(self, fn: Task, shared: Any, args_list: Sequence[tuple], *, on_done: OnDone | None = None,
            on_event: OnEvent | None = None, keep: bool = True) -> Outcome:
        import concurrent.futures as cf  # noqa: PLC0415

        if self._pool is None:
            self._start()
        out = Outcome(results=[None] * len(args_list))
        futures = {self._pool.submit(_local_task, fn, shared, tuple(args), on_event is not None): k
                   for k, args in enumerate(args_list)}
        pending = set(futures)
        try:
            while pending:
                finished, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
                self._drain(on_event)
                for fut in sorted(finished, key=futures.__getitem__):
                    k = futures.pop(fut)             # the pool's future lets go of the result
                    exc = fut.exception()
                    if exc is not None:
                        _collect(k, exc, out)
                        continue
                    result = fut.result()
                    out.finish(k, result, keep, on_done)
            self._drain(on_event)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
        if any(type(e).__name__ == "BrokenProcessPool" for e in out.failures.values()):
            self.close()                     # a dead pool cannot take tasks: the next map starts a new one
        return out

    def _drain(self, on_event: OnEvent | None) -> None:
        while self._events is not None:
            try:
                ev = self._events.get_nowait()
            except queue_mod.Empty:
                return
            if on_event is not None:
                on_event(ev)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        if self._manager is not None:
            self._manager.shutdown()
            self._manager = self._events = None


# --------------------------------------------------------------------------- Dask distributed


def _plain(value: Any) -> Any:
    """An event made msgpack-safe: numpy scalars become Python numbers, containers are copied."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (TypeError, ValueError):
            return str(value)
    return value


_TASK_THREADS: int | None = None


def _task_threads(worker: Any) -> int:
    """FFT threads of one task on a Dask worker: the host's cores shared among every task slot of the
    workers on that host (``dask worker --nworkers 4 --nthreads 2`` on 32 cores: 4 threads a task), so
    the host is used whole and never oversubscribed. Found once per worker process."""
    global _TASK_THREADS
    if _TASK_THREADS is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cores = os.cpu_count() or 1
        slots = max(1, worker.state.nthreads)
        try:
            from distributed import get_client  # noqa: PLC0415
            from distributed.comm import get_address_host  # noqa: PLC0415

            host = get_address_host(worker.address)
            peers = get_client().scheduler_info()["workers"]
            slots = max(slots, sum(w.get("nthreads", 1) for a, w in peers.items() if get_address_host(a) == host))
        except Exception:  # noqa: BLE001 - without the scheduler's view, this worker's own slots
            pass
        _TASK_THREADS = max(1, cores // slots)
    return _TASK_THREADS


def _dask_task(fn: Task, shared: Any, args: tuple, topic: str | None, index: int) -> Any:
    """Runs on a Dask worker: FFT threads from `_task_threads` (unless CXDI_THREADS is set there; a task
    that sets its own count wins), events sent to the client through the scheduler's event log."""
    from distributed import get_worker  # noqa: PLC0415

    from cxdi_cli import fft  # noqa: PLC0415

    worker = get_worker()
    if not os.environ.get("CXDI_THREADS"):
        fft.set_threads(_task_threads(worker))
    report = None
    if topic is not None:
        def report(event: dict[str, Any]) -> None:
            worker.log_event(topic, {"task": index, "event": _plain(event)})
    return fn(shared, *args, report)


class Dask(Executor):
    """Tasks on the workers of a Dask `distributed` scheduler (see `connect`).

    The shared input is scattered once, to every worker; each task is submitted with `retries` and
    `pure=False` (a rerun is a new task, never a cached result); results are gathered as they
    complete and released at once, so the client holds one result at a time on top of those kept."""

    kind = "dask"

    def __init__(self, client: Any, *, retries: int = RETRIES, own: bool = False,
                 worker_timeout: float = WORKER_TIMEOUT) -> None:
        self.client = client
        self.retries = int(retries)
        self.own = own
        self.worker_timeout = float(worker_timeout)

    @property
    def address(self) -> str:
        return str(self.client.scheduler.address)

    @property
    def workers(self) -> int:
        return max(1, sum(w.get("nthreads", 1) for w in self.client.scheduler_info()["workers"].values()))

    def describe(self) -> str:
        n = len(self.client.scheduler_info()["workers"])
        return f"Dask scheduler {self.address} ({n} worker{'s' if n != 1 else ''})"

    def _wait_for_workers(self) -> None:
        if self.client.scheduler_info()["workers"]:
            return
        try:
            self.client.wait_for_workers(1, timeout=self.worker_timeout)
        except (TimeoutError, OSError):
            raise ComputeError(f"the Dask scheduler at {self.address} has no workers "
                               f"(waited {self.worker_timeout:g} s): start some with `dask worker "
                               f"{self.address}`") from None

    def map(self, fn: Task, shared: Any, args_list: Sequence[tuple], *, on_done: OnDone | None = None,
            on_event: OnEvent | None = None, keep: bool = True) -> Outcome:
        from distributed import as_completed  # noqa: PLC0415

        out = Outcome(results=[None] * len(args_list))
        if not args_list:
            return out
        self._wait_for_workers()
        token = uuid.uuid4().hex[:12]
        name = getattr(fn, "__name__", "task").replace("_", "-")
        topic = f"cxdi-events-{token}" if on_event is not None else None
        events: queue_mod.SimpleQueue = queue_mod.SimpleQueue()
        if topic is not None:
            self.client.subscribe_topic(topic, lambda ev: events.put(ev[1]))
        futures: dict[Any, int] = {}
        shared_f = None
        try:
            shared_f = self.client.scatter(shared, broadcast=True, hash=False)
            for k, args in enumerate(args_list):
                fut = self.client.submit(_dask_task, fn, shared_f, tuple(args), topic, k, key=f"cxdi-{name}-{token}-{k}",
                                         retries=self.retries, pure=False)
                futures[fut] = k
            ac = as_completed(list(futures), loop=self.client.loop)
            while not ac.is_empty():
                batch = ac.next_batch(block=False) if ac.has_ready() else []
                if not batch:
                    time.sleep(0.05)
                self._drain(events, on_event, futures)
                for fut in sorted(batch, key=futures.__getitem__):
                    k = futures.pop(fut)
                    if fut.status == "finished":
                        try:
                            result = fut.result()
                        except Exception as exc:  # noqa: BLE001 - lost between finish and fetch
                            _collect(k, exc, out)
                            continue
                        fut.release()
                        out.finish(k, result, keep, on_done)
                    else:
                        try:
                            exc = fut.exception()
                        except BaseException as err:  # noqa: BLE001 - a cancelled future raises here
                            exc = err
                        fut.release()
                        _collect(k, exc if exc is not None else ComputeError(f"task {k} {fut.status}"), out)
        finally:
            if topic is not None:
                self.client.unsubscribe_topic(topic)
            pending = [f for f in futures if not f.done()]
            if pending:
                self.client.cancel(pending)
            if shared_f is not None:
                shared_f.release()
        return out

    @staticmethod
    def _drain(events: queue_mod.SimpleQueue, on_event: OnEvent | None, running: dict[Any, int]) -> None:
        """Pass on the events of tasks still running (an event can arrive after its task's result, and a
        task rerun after a worker died reports its steps again)."""
        live = set(running.values())
        while True:
            try:
                msg = events.get_nowait()
            except queue_mod.Empty:
                return
            if on_event is not None and msg.get("task") in live:
                on_event(msg["event"])

    def close(self) -> None:
        if self.own:
            self.client.close()


def scheduler_address(spec: str) -> str:
    """The scheduler address from `spec`: an address (``tcp://host:8786``, ``host:8786``) or the path of
    a scheduler file (the JSON that ``dask scheduler --scheduler-file`` writes)."""
    if os.path.isfile(spec):
        try:
            with open(spec, encoding="utf-8") as fh:
                address = json.load(fh).get("address")
        except (OSError, ValueError, AttributeError) as exc:
            raise InputError(f"{spec}: not a Dask scheduler file ({str(exc).splitlines()[0]})") from None
        if not isinstance(address, str) or not address:
            raise InputError(f"{spec}: not a Dask scheduler file (no 'address')")
        return address
    if "://" not in spec and ":" not in spec:
        raise InputError(f"{spec}: no such scheduler file, and not an address (tcp://host:port)")
    return spec


def connect(scheduler: str, *, timeout: float = CONNECT_TIMEOUT, retries: int = RETRIES) -> Dask:
    """A `Dask` executor on the scheduler `scheduler` (address or scheduler file; see `scheduler_address`).

    Fails within about `timeout` seconds with a ComputeError naming the address when nobody answers."""
    address = scheduler_address(scheduler)
    try:
        from distributed import Client  # noqa: PLC0415
    except ImportError:  # pragma: no cover - dask is a dependency of cxdi
        raise ComputeError("a Dask scheduler was given but `distributed` is not installed "
                           "(pip install distributed)") from None
    import logging  # noqa: PLC0415

    quiet = logging.getLogger("distributed")   # a failed connection is our one-line error, not a log
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ComputeError(f"cannot reach the Dask scheduler at {address}: {why}") from None
    finally:
        quiet.setLevel(level)
    return Dask(client, retries=retries, own=True)


def choose(jobs: int = 1, scheduler: str | None = None, scheduler_file: str | None = None) -> Executor:
    """The executor for a command: a Dask scheduler when one is named (a scheduler file wins over an
    address), else `jobs` local processes, else in-process."""
    spec = scheduler_file or scheduler
    if spec:
        if scheduler_file and not os.path.isfile(scheduler_file):
            raise InputError(f"{scheduler_file}: no such scheduler file")
        return connect(spec)
    if jobs > 1:
        return LocalProcesses(jobs)
    return InProcess()

