"""Keep every finished run of `phase` in a checkpoint beside the output, and resume from it.

`Checkpointing` wraps any executor (`cxdi_cli.executor`): each run that finishes (a task of the last
stage, the one without a stop) is added to the checkpoint `OUT.partial`, a CXI file of the finished
runs rewritten atomically; runs already in the checkpoint are not computed again. Runs are
deterministic functions of (data, options, seed, index), and the stages before the last are
recomputed, so a resumed `phase` writes the same runs as one that was never interrupted.

The checkpoint records a fingerprint of what decides the runs (the input file, the options, the
seed): resuming with other data or options is refused instead of mixing runs.

    done = load(ckpt, fingerprint(options, input))    # {} when there is no checkpoint
    with Checkpointing(executor.choose(jobs), ckpt, fingerprint(...), done) as ex:
        rec = runs.phase(pattern, options, executor=ex, problem=problem)
    discard(ckpt)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Any, Sequence

from cxdi_cli.executor import Executor, Outcome
from cxdi_cli.model import InputError, Reconstruction, Run, UsageError

#: The checkpoint's name is the output's name with this added.
SUFFIX = ".partial"


def checkpoint_path(output: str) -> str:
    """The checkpoint beside `output` (`runs.cxi` -> `runs.cxi.partial`)."""
    return f"{output}{SUFFIX}"


def fingerprint(parameters: dict[str, Any], inputs: Sequence[str] = ()) -> str:
    """A digest of what decides the runs: the parameters (JSON) and each input file's path, size and
    modification time (a re-written input invalidates the checkpoint)."""
    ident = []
    for name in inputs:
        path = str(name).partition("::")[0]
        try:
            st = os.stat(path)
            ident.append([os.path.realpath(path), st.st_size, st.st_mtime_ns])
        except OSError:
            ident.append([str(name)])
    text = json.dumps({"parameters": parameters, "inputs": ident}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def task_key(options: Any) -> str:
    """What tells one pass of a job from another for the same run index: a digest of the task's
    options (`phase` may run the starts twice, e.g. on deconvolved data with another PSF)."""
    params = options.as_dict() if hasattr(options, "as_dict") else repr(options)
    return fingerprint({"task": params})[:16]


def load(path: str, expected: str | None) -> tuple[dict[tuple[str, int], Run], dict[str, Any]]:
    """The finished runs of a checkpoint by (task key, run index), and what it recorded ({} when there
    is none). A checkpoint made with other data or options (`expected` fingerprint) is a UsageError."""
    from cxdi_cli import io  # noqa: PLC0415

    if not os.path.exists(path):
        return {}, {}
    try:
        rec = io.read_reconstruction(path)
    except InputError as exc:
        raise InputError(f"{path}: unreadable checkpoint ({exc}); remove it to start afresh") from None
    info = rec.extra.get("checkpoint", {}) if isinstance(rec.extra, dict) else {}
    if expected is not None and info.get("fingerprint") != expected:
        raise UsageError(f"--resume: {path} was made from other data or options; remove it, or rerun the "
                         "command that made it")
    keys = info.get("task_keys") or [""] * len(rec.runs)
    return {(str(k), int(r.params["run_index"])): r for k, r in zip(keys, rec.runs)}, info


def discard(path: str) -> None:
    """Remove the checkpoint (the whole output has been written)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class Checkpointing(Executor):
    """An executor that keeps each finished run in the checkpoint and skips runs already there.

    Relies on the task layout of `phasing.runs._worker`: (options, index, start, stop), where the last
    stage's tasks have stop None and return a `Run`."""

    kind = "checkpointing"

    def __init__(self, inner: Executor, path: str, fprint: str, done: dict[tuple[str, int], Run] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        self.inner, self.path, self.fprint = inner, path, fprint
        self.done: dict[tuple[str, int], Run] = dict(done or {})
        self.extra = dict(extra or {})
        self.reused = 0

    @property
    def workers(self) -> int:
        return self.inner.workers          # a property of every executor (cxdi_cli.executor.Executor)

    def describe(self) -> str:
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()

    def _save(self) -> None:
        from cxdi_cli import io  # noqa: PLC0415

        keys = sorted(self.done)
        runs = [self.done[k] for k in keys]
        finished = [i for _, i in keys]
        extra = {"checkpoint": {"fingerprint": self.fprint, "finished_runs": finished,
                                "task_keys": [t for t, _ in keys], **self.extra}}
        io.write_reconstruction(self.path, Reconstruction(runs=runs, extra=extra),
                                io.make_step("cxdi phase (checkpoint)", {"finished_runs": finished}))

    def map(self, fn: Any, shared: Any, args_list: Sequence[tuple], *, on_done: Any = None,
            on_event: Any = None, keep: bool = True) -> Outcome:
        """As `Executor.map`; last-stage tasks of finished runs are answered from the checkpoint. A run
        is the same when its index and its task's options are (`task_key`): a second pass of the job
        over the same indices is computed, not answered with the first pass's runs."""
        keys = [(task_key(a[0]), int(a[1])) for a in args_list]
        reuse = {k: self.done[keys[k]] for k, a in enumerate(args_list) if a[3] is None and keys[k] in self.done}
        todo = [k for k in range(len(args_list)) if k not in reuse]

        def finished(j: int, result: Any) -> None:
            k = todo[j]
            if args_list[k][3] is None and isinstance(result, Run):
                self.done[keys[k]] = result
                self._save()
            if on_done is not None:
                on_done(k, result)

        out = self.inner.map(fn, shared, [args_list[k] for k in todo], on_done=finished, on_event=on_event,
                             keep=keep) if todo else Outcome(results=[])
        results: list[Any] = [None] * len(args_list)
        failures = {}
        for j, k in enumerate(todo):
            results[k] = out.results[j]
            if j in out.failures:
                failures[k] = out.failures[j]
        for k, run in reuse.items():
            results[k] = run
            self.reused += 1
            if on_done is not None:
                on_done(k, run)
        return Outcome(results=results, failures=failures)


class Session:
    """What `cxdi phase` does about its checkpoint, in three calls: `start` before the problem is prepared
    (on --resume: loads the finished runs and takes the checkpoint's seed when none was given),
    `executor` around the phasing, `finish` once the output is written (removes the checkpoint).

    Without --resume an old checkpoint is replaced as runs finish. Output `-` keeps no checkpoint."""

    def __init__(self, path: str | None, fprint: str, done: dict[tuple[str, int], Run], seed: int | None) -> None:
        self.path, self.fprint, self.done, self.seed = path, fprint, done, seed
        self.ex: Checkpointing | None = None

    @classmethod
    def start(cls, output: str, resume: bool, options: Any, inputs: Sequence[str | None]) -> "Session":
        """Load the checkpoint of `output` when resuming; `options` (phasing.runs.Options) get its seed
        when they have none. UsageError when resuming another command's checkpoint or into stdout."""
        files = [str(x) for x in inputs if x]
        params = {k: v for k, v in options.as_dict().items() if k not in ("seed", "threads")}
        fprint = fingerprint(params, files)
        if output == "-":
            if resume:
                raise UsageError("--resume: the checkpoint lies beside the output; give -o FILE")
            return cls(None, fprint, {}, options.seed)
        path = checkpoint_path(output)
        done: dict[tuple[str, int], Run] = {}
        if resume:
            done, info = load(path, fprint)
            saved = info.get("seed")
            if done and options.seed is not None and saved is not None and int(saved) != int(options.seed):
                raise UsageError(f"--resume: {path} was made with --seed {saved}, not {options.seed}")
            if done and options.seed is None and saved is not None:
                options.seed = int(saved)
        return cls(path, fprint, done, options.seed)

    def executor(self, inner: Executor, seed: int | None) -> Executor:
        """`inner` wrapped to keep finished runs (the problem's `seed` is recorded), or `inner` for stdout."""
        if self.path is None:
            return inner
        self.ex = Checkpointing(inner, self.path, self.fprint, self.done, {"seed": seed})
        return self.ex

    def note(self) -> str:
        """For an interruption: where the finished runs are and how to continue."""
        if self.ex is None or not self.ex.done:
            return ""
        return f"{len(self.ex.done)} finished run(s) kept in {self.path}; add --resume to continue"

    def finish(self) -> None:
        """The output is written: the checkpoint goes."""
        if self.path is not None:
            discard(self.path)
