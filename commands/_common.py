"""What every subcommand shares: option types, the error wrapper, progress, stderr messages, --json.

Commands are leaves: they import this module and the library, never each other. Heavy modules
(numpy, h5py, pyfftw) are imported inside functions so `cxdi --help` stays fast.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer

# --------------------------------------------------------------------------- shared option types

InputArg = Annotated[str, typer.Argument(help="Input file: FILE, FILE::/dataset/path, or - for stdin.",
                                         show_default=False)]
#: Beam centre of a frame series (assemble3d, orient).
CentreOpt = Annotated[str, typer.Option("--centre", help="Beam centre: auto (from the sum of frames) or ROW,COL "
                                                         "in detector pixels.")]
OutputOpt = Annotated[str, typer.Option("-o", "--output", help="Output file (- for stdout).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable report on stdout.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Seed for random numbers (reproducible runs).")]
SchedulerOpt = Annotated[Optional[str], typer.Option(
    "--scheduler", envvar="CXDI_SCHEDULER", show_default=False,
    help="Run the tasks on a Dask cluster: the scheduler's address (tcp://host:8786) or its scheduler "
         "file [env CXDI_SCHEDULER; config key scheduler].")]
SchedulerFileOpt = Annotated[Optional[str], typer.Option(
    "--scheduler-file", show_default=False,
    help="Dask scheduler file (the JSON `dask scheduler --scheduler-file FILE` writes), as HPC sites use.")]

_COMMON = [
    inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False,
                      annotation=Annotated[bool, typer.Option("-q", "--quiet",
                                                              help="No progress bars or messages on stderr.")]),
    inspect.Parameter("debug", inspect.Parameter.KEYWORD_ONLY, default=False,
                      annotation=Annotated[bool, typer.Option("--debug",
                                                              help="Show the full traceback on errors.")]),
    inspect.Parameter("threads", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Annotated[Optional[int], typer.Option(
                          "--threads", min=1, help="CPU threads for FFTs [default: all cores].")]),
    inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Annotated[Optional[Path], typer.Option(
                          "--config", help="TOML file of option values; command-line options win.",
                          show_default=False)]),
]


class _State:
    quiet = False
    command = "cxdi"
    activity = ""  # what the command is doing now (the progress label), named when it is interrupted
    interrupt_note: Callable[[], str] | None = None  # e.g. phase: "3 finished runs kept in runs.cxi.partial"


class Interrupted(BaseException):
    """Raised in the main thread by SIGTERM or SIGHUP (a dropped SSH session), as SIGINT raises
    KeyboardInterrupt, so that every `finally` runs and no temporary file is left behind."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


STATE = _State()


# --------------------------------------------------------------------------- messages


def say(message: str) -> None:
    """An informational line on stderr (silenced by --quiet)."""
    if not STATE.quiet:
        print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A warning on stderr; shown even with --quiet."""
    print(f"{STATE.command}: warning: {message}", file=sys.stderr, flush=True)


def usage_error(message: str) -> typer.Exit:
    """Print a usage error line and return an Exit(2) for the caller to raise."""
    print(f"{STATE.command}: error: {message}", file=sys.stderr, flush=True)
    return typer.Exit(2)


_RULES = {">": lambda v, b: v > b, ">=": lambda v, b: v >= b, "<": lambda v, b: v < b, "<=": lambda v, b: v <= b,
          "!=": lambda v, b: v != b}
_SAID = {">": "greater than", ">=": "at least", "<": "less than", "<=": "at most", "!=": "other than"}


def check_numbers(*rules: tuple[str, Any, str]) -> None:
    """Refuse nonsense numeric option values as a usage error (exit 2) naming the option, before any
    work: each rule is (option, value, condition), conditions like '> 0', '>= 1', '0..1' (inclusive), '!= 0',
    several joined by ' and '. None values (option not given) pass; NaN and infinities never do.

        c.check_numbers(("--distance", distance, "> 0"), ("--threshold", threshold, ">= 0"))
    """
    import math  # noqa: PLC0415

    for option, value, condition in rules:
        if value is None:
            continue
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise usage_error(f"{option} {value!r}: not a number") from None
        if not math.isfinite(v):
            raise usage_error(f"{option} {value}: must be a finite number")
        for cond in condition.split(" and "):
            cond = cond.strip()
            if ".." in cond:
                lo, hi = (float(x) for x in cond.split(".."))
                if not lo <= v <= hi:
                    raise usage_error(f"{option} {value}: must be between {lo:g} and {hi:g}")
                continue
            op, _, bound = cond.partition(" ")
            if not _RULES[op](v, float(bound)):
                raise usage_error(f"{option} {value}: must be {_SAID[op]} {float(bound):g}")


def check_stdout(output: str | None, json_report: bool) -> None:
    """stdout carries the data (-o -) or the --json report, never both."""
    if output == "-" and json_report:
        raise usage_error("-o - and --json both want stdout; write the data to a file or drop --json")
    if output == "-" and sys.stdout.isatty():
        raise usage_error("no output file: give -o FILE (or pipe stdout: binary data never goes to a terminal)")


def report(enabled: bool, schema: str, **data: Any) -> None:
    """Print the --json report (one object, versioned schema) on stdout."""
    if enabled:
        from cxdi_cli.io.cxi import _jsonable  # noqa: PLC0415

        print(json.dumps({"schema": schema, **_jsonable(data)}, indent=1))


def command_line() -> str:
    """The exact command line, for provenance."""
    return " ".join(shlex.quote(a) for a in ["cxdi"] + sys.argv[1:]) if sys.argv else "cxdi"


def executor(jobs: int = 1, scheduler: str | None = None, scheduler_file: str | None = None) -> Any:
    """The executor for --jobs / --scheduler / --scheduler-file; connecting to a scheduler fails here, in
    seconds, before any input is read. It is closed when the command ends, however it ends."""
    import click  # noqa: PLC0415

    from cxdi_cli import executor as ex  # noqa: PLC0415

    pool = ex.choose(jobs, scheduler, scheduler_file)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.with_resource(pool)
    return pool


@contextlib.contextmanager
def progress(label: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """Yield a tick(advance=1, **fields) callback; draws a rich bar on stderr only on a terminal.
    Either way the label and count are kept in STATE.activity, to say what an interruption stopped."""
    count = [0, total]

    def note(advance: int = 1, total: int | None = None, **_: Any) -> None:
        count[0] += advance
        count[1] = total if total is not None else count[1]
        STATE.activity = f"{label} ({count[0]}/{count[1]})" if count[1] else f"{label} ({count[0]} done)"

    STATE.activity = label
    if STATE.quiet or not sys.stderr.isatty():
        yield note
        return
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: PLC0415

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total, info="")

        def tick(advance: int = 1, total: int | None = None, info: str = "", **_: Any) -> None:
            note(advance, total)
            if total is not None:
                bar.update(task, total=total)
            bar.update(task, advance=advance, info=info)

        yield tick


# --------------------------------------------------------------------------- the wrapper


def _apply_config(fn: Callable, kwargs: dict[str, Any], config: Path | None, ctx: Any) -> None:
    if config is None:
        return
    try:
        import tomllib  # noqa: PLC0415
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # noqa: PLC0415

    try:
        values = tomllib.loads(Path(config).read_text())
    except FileNotFoundError:
        raise usage_error(f"{config}: no such file") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise usage_error(f"{config}: {exc}") from None
    section = values.get(fn.__name__.replace("_", "-"), values.get(fn.__name__, {}))
    merged = {k: v for k, v in values.items() if not isinstance(v, dict)}
    merged.update(section if isinstance(section, dict) else {})
    names = set(inspect.signature(fn).parameters)
    for key, val in merged.items():
        name = key.replace("-", "_")
        if name not in names:
            raise usage_error(f"{config}: unknown option {key!r} for this command")
        source = ctx.get_parameter_source(name) if ctx is not None else None
        if source is None or getattr(source, "name", "") in ("DEFAULT", "DEFAULT_MAP"):
            kwargs[name] = _config_value(ctx, name, key, val, config)


def _config_value(ctx: Any, name: str, key: str, val: Any, config: Path) -> Any:
    """A config value converted and range-checked by the option's own type, as if typed on the command
    line (a string where a number goes is a usage error naming the file and the key, never a crash)."""
    param = next((p for p in getattr(getattr(ctx, "command", None), "params", []) if p.name == name), None)
    if param is None:
        return val
    if getattr(param, "multiple", False) and not isinstance(val, list):
        val = [val]
    if isinstance(val, dict) or (isinstance(val, list) and not getattr(param, "multiple", False)
                                 and getattr(param, "nargs", 1) == 1):
        raise usage_error(f"{config}: {key} = {val!r}: expected a single value")
    try:
        return param.process_value(ctx, val)
    except typer.BadParameter as exc:
        raise usage_error(f"{config}: {key} = {val!r}: {exc.message}") from None
    except (TypeError, ValueError) as exc:
        raise usage_error(f"{config}: {key} = {val!r}: {exc}") from None


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    """While a command runs: SIGTERM and SIGHUP raise Interrupted (a second one is ignored while the
    first is cleaned up), and SIGXFSZ is ignored so a file-size limit fails the write (EFBIG) instead of
    killing the process. Previous handlers come back afterwards (tests run commands in-process)."""
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    catch = [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    old = {s: signal.getsignal(s) for s in catch + [getattr(signal, "SIGXFSZ", None)] if s is not None}

    def handler(signum: int, frame: Any) -> None:
        for s in catch:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    for s in catch:
        signal.signal(s, handler)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def _interrupted(name: str, signame: str, output: Any) -> None:
    """The one line an interruption prints: which signal, what was running, that no output was written."""
    what = f" while {STATE.activity}" if STATE.activity else ""
    left = f"; {output} not written" if isinstance(output, str) and output not in ("", "-") else ""
    note = ""
    if STATE.interrupt_note is not None:
        with contextlib.suppress(Exception):
            note = f"; {STATE.interrupt_note()}"
    print(f"cxdi {name}: interrupted by {signame}{what}{left}{note}", file=sys.stderr, flush=True)


def _damaged_hdf5(exc: BaseException, kwargs: dict[str, Any]) -> str | None:
    """The input a failure inside h5py reading comes from (a damaged HDF5 file met by code that reads
    it directly), or None when the exception did not come out of h5py."""
    if not isinstance(exc, (OSError, RuntimeError, KeyError, ValueError)):
        return None
    tb = exc.__traceback__
    inside = False
    while tb is not None:
        inside = inside or tb.tb_frame.f_globals.get("__name__", "").startswith("h5py")
        tb = tb.tb_next
    if not inside:
        return None
    files = [v for k, v in kwargs.items() if k != "output" for v in (v if isinstance(v, list) else [v])
             if isinstance(v, str) and v != "-" and os.path.isfile(v.partition("::")[0])]
    return ", ".join(files) or "input"


def cli_command(name: str, fn: Callable) -> Callable:
    """Wrap a command: add the common options, apply --config, map errors to one line and an exit code."""
    sig = inspect.signature(fn, eval_str=True)  # resolve string annotations in fn's own module

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        quiet = kwargs.pop("quiet", False)
        debug = kwargs.pop("debug", False) or os.environ.get("CXDI_DEBUG") == "1"
        threads = kwargs.pop("threads", None)
        config = kwargs.pop("config", None)
        ctx = kwargs.pop("cxdi_ctx", None)
        STATE.quiet = quiet
        STATE.command = f"cxdi {name}"
        STATE.activity = ""
        STATE.interrupt_note = None
        if not debug:  # tifffile logs damaged-file details on stderr; the error line says what matters
            import logging  # noqa: PLC0415

            logging.getLogger("tifffile").setLevel(logging.CRITICAL)
        _apply_config(fn, kwargs, config, ctx)
        if threads is not None:
            os.environ["CXDI_THREADS"] = str(threads)
        try:
            with _signals():
                if threads is not None:
                    from cxdi_cli import fft  # noqa: PLC0415

                    fft.set_threads(threads)
                return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            _interrupted(name, "SIGINT", kwargs.get("output"))
            raise typer.Exit(130) from None
        except Interrupted as exc:
            import signal  # noqa: PLC0415

            _interrupted(name, signal.Signals(exc.signum).name, kwargs.get("output"))
            raise typer.Exit(128 + exc.signum) from None
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as SIGPIPE would
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            raise typer.Exit(141) from None
        except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
            from cxdi_cli.model import CxdiError  # noqa: PLC0415

            if debug:
                traceback.print_exc()
            if isinstance(exc, CxdiError):
                print(f"cxdi {name}: error: {exc}", file=sys.stderr, flush=True)
                raise typer.Exit(exc.exit_code) from None
            if isinstance(exc, MemoryError):
                print(f"cxdi {name}: error: out of memory", file=sys.stderr, flush=True)
                raise typer.Exit(1) from None
            if isinstance(exc, typer.BadParameter) or type(exc).__name__ in ("BadParameter", "UsageError"):
                raise
            msg = str(exc).splitlines()[0] if str(exc) else ""
            damaged = _damaged_hdf5(exc, kwargs)
            if damaged:
                print(f"cxdi {name}: error: {damaged}: corrupt HDF5 file ({msg})", file=sys.stderr, flush=True)
                raise typer.Exit(1) from None
            print(f"cxdi {name}: error: internal error: {type(exc).__name__}: {msg} "
                  "(rerun with --debug for the traceback)", file=sys.stderr, flush=True)
            raise typer.Exit(1) from None
        finally:
            if "cxdi_cli.io.paths" in sys.modules:
                sys.modules["cxdi_cli.io.paths"].release_stdin()

    params = list(sig.parameters.values())
    names = {p.name for p in params}
    params += [p for p in _COMMON if p.name not in names]
    params.append(inspect.Parameter("cxdi_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))
    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper
