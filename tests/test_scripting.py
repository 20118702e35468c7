"""The scripting API: the README's "Scripting" example runs as written, on simulated data with a known
truth, and importing the stages loads nothing heavy."""
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from cxdi_cli import io, registration
from cxdi_cli.model import MASK_BITS

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Scripting\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README: no python block in the Scripting section"
    return blocks[0]


def test_importing_the_stages_loads_no_numpy():
    code = ("import sys\nfrom cxdi_cli import reduce, phasing, analysis\n"
            "phasing.DEFAULT_RECIPE\n"
            "print(','.join(m for m in ('numpy', 'h5py', 'pyfftw', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_stage_names_resolve_to_the_library_calls():
    from cxdi_cli import analysis, phasing, reduce
    from cxdi_cli.analysis import resolution
    from cxdi_cli.phasing import runs
    from cxdi_cli.reduce import assembly, centring, pattern

    assert reduce.preprocess is pattern.preprocess and reduce.assemble is assembly.assemble_files
    assert reduce.mask is centring.mask_pattern and reduce.find_centre is centring.find_centre
    assert phasing.Options is runs.Options and phasing.DEFAULT_RECIPE == runs.Options().recipe
    assert analysis.resolve is resolution.resolve
    with pytest.raises(AttributeError):
        reduce.no_such_name  # noqa: B018


def test_phase_rejects_unknown_options():
    from cxdi_cli import phasing
    from cxdi_cli.model import Pattern, UsageError

    p = Pattern(intensity=np.ones((8, 8), np.float32), mask=np.zeros((8, 8), np.uint32))
    with pytest.raises(UsageError, match="recipee"):
        phasing.phase(p, recipee="er**10")


@pytest.mark.slow
def test_readme_scripting_example(tmp_path, monkeypatch):
    """The example as written; then its results against the simulation's truth."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CXDI_THREADS", os.environ.get("CXDI_THREADS", "1"))
    names: dict = {}
    exec(compile(_readme_example(), "README.md (Scripting)", "exec"), names)  # noqa: S102
    pattern, data, rec, avg, res = (names[k] for k in ("pattern", "data", "rec", "avg", "res"))
    # preprocess found the beamstop; mask kept every bit and only added
    assert np.all((data.mask & pattern.mask) == pattern.mask)
    assert np.count_nonzero(data.mask & MASK_BITS["beamstop"]) > 0
    # 8 runs, best first; the average is closer to the truth than any single run but the best few
    assert len(rec.runs) == 8 and rec.runs[0].metrics["rank"] == 1
    truth = io.read_reconstruction("sim/truth.cxi").runs[0].obj
    err_avg = registration.nrms_error(avg.runs[0].obj, truth)
    err_runs = sorted(registration.nrms_error(r.obj, truth) for r in rec.runs)
    assert err_avg < 0.15, (err_avg, err_runs)
    assert err_avg <= err_runs[1] + 0.01, (err_avg, err_runs)
    # the PRTF resolution: within 1.5 real-space pixels (lambda D / (N p)) of this well-sampled case
    pixel_nm = avg.pixel_size[0] * 1e9
    prtf = res.report["prtf"]
    assert prtf["scale_from"] == "runs" and prtf["resolution_nm"] <= 1.5 * pixel_nm, (prtf, pixel_nm)


def test_history_and_progress_keep_their_own_periods():
    """--history-every 7 records the history every 7 iterations, while progress still comes every 50
    (it used to record every gcd(7, 50) = 1 iterations to line the two up)."""
    from cxdi_cli import fft, phasing
    from cxdi_cli.model import Pattern

    n = 32
    obj = np.zeros((n, n), np.complex64)
    obj[12:20, 13:19] = 1.0
    intensity = (np.abs(fft.cfftn(obj, norm="ortho")) ** 2 * 1e3).astype(np.float32)
    events = []
    rec = phasing.phase(Pattern(intensity=intensity, mask=np.zeros((n, n), np.uint32)), runs=1, seed=1,
                        recipe="hio**60,er**40", record_every=7, positivity=True, check_oversampling=False,
                        on_progress=events.append)
    it = rec.runs[0].history["iteration"]
    assert list(it) == list(range(7, 101, 7))
    assert [e["iteration"] for e in events if not e.get("done")] == [50, 100]
    assert np.all(np.isfinite(rec.runs[0].history["llk"]))
