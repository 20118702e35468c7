"""Averaging: noisy, shifted, twinned, ramped copies of a known object average closer to it than the
median single copy; outliers are rejected with a reason; selection by metric; the CLI."""
import json

import h5py
import numpy as np
import pytest
from scipy import ndimage

from cxdi_cli.analysis import align, averaging as average
from cxdi_cli import io
from cxdi_cli.model import DataError, Geometry, Reconstruction, Run

from test_align import blob


def noisy_copies(truth, n, seed=0, noise=0.25, outlier=False):
    """Copies with random sub-pixel shift, twin, ramp, global phase and scale, plus complex noise on
    the object's neighbourhood (as phase retrieval leaves it); optionally the last is another object."""
    rng = np.random.default_rng(seed)
    region = ndimage.binary_dilation(np.abs(truth) > 0, iterations=2)
    scale = noise * np.linalg.norm(truth) / np.sqrt(region.sum())
    out = []
    for k in range(n):
        x = truth.astype(np.complex128)
        x = x + scale * region * (rng.normal(size=x.shape) + 1j * rng.normal(size=x.shape)) / np.sqrt(2)
        if outlier and k == n - 1:
            x = (x + align.twin_image(x)) / 2  # stagnated in a twin superposition
        if rng.random() < 0.5:
            x = align.twin_image(x)
        x = align.fourier_shift(x, rng.uniform(-4, 4, truth.ndim))
        x = x * align.phase_ramp(truth.shape, rng.uniform(-1, 1, truth.ndim))
        x = x * rng.uniform(0.8, 1.2) * np.exp(1j * rng.uniform(-np.pi, np.pi))
        out.append(x.astype(np.complex64))
    return out


def test_average_beats_median_run_and_rejects_outlier():
    truth = blob(seed=11)
    runs = noisy_copies(truth, 9, seed=1, outlier=True)
    res = average.average_objects(runs, reference=0)
    single = [align.nrms_error(r, truth) for r in runs[:-1]]
    err_avg = align.nrms_error(res.average, truth)
    assert err_avg < 0.6 * np.median(single)          # 8 copies: noise / sqrt(8) ~ 0.35 of one copy
    assert res.rejected == [8]
    row = res.table[8]
    assert row["used"] is False and "median" in row["reason"] and row["distance"] > 0.3
    assert all(r["used"] for r in res.table[:8])
    assert res.mode_weights[0] > 0.85 and res.mode_weights == sorted(res.mode_weights, reverse=True)
    assert abs(sum(res.mode_weights) - 1) < 0.05        # 5 of 8 modes carry almost all the power
    # the support: the truth's, up to a pixel of the noise region's edge
    truth_support = np.abs(truth) > 0
    aligned_truth, _ = align.align_to(truth, res.average)
    assert (res.support & (np.abs(aligned_truth) > 1e-3 * np.abs(truth).max())).sum() > 0.9 * truth_support.sum()


def test_modes_of_identical_runs():
    truth = blob(seed=12)
    res = average.average_objects([truth] * 4, twin=False, ramp=False, refine=False)
    assert res.mode_weights[0] > 1 - 1e-5
    np.testing.assert_allclose(res.modes[0], truth, atol=1e-4 * np.abs(truth).max())
    np.testing.assert_allclose(res.average, truth, atol=1e-5)


def test_3d_average():
    truth = blob((20, 20, 20), seed=13, radius=0.3)
    runs = noisy_copies(truth, 4, seed=2, noise=0.2)
    res = average.average_objects(runs)
    single = [align.nrms_error(r, truth) for r in runs]
    assert align.nrms_error(res.average, truth) < 0.8 * np.median(single)
    assert res.rejected == []


def test_rank_runs_direction_failed_and_fallback():
    ms = [{"llk_free": 3.0, "llk": 1.0}, {"llk_free": 1.0, "llk": 9.0}, {"llk_free": 2.0, "failed": True},
          {"llk_free": float("nan")}, {"llk_free": 0.5}]
    order, skipped, key = average.rank_runs(ms, best=2)
    assert key == "llk_free" and order == [4, 1]
    reasons = dict(skipped)
    assert "failed" in reasons[2] and "finite" in reasons[3] and "best 2" in reasons[0]
    order, _, key = average.rank_runs([{"llk": 2.0}, {"llk": 1.0}])  # no free LLK anywhere: llk
    assert key == "llk" and order == [1, 0]
    order, skipped, key = average.rank_runs(ms, by="llk")  # lower is better; runs without llk skipped
    assert key == "llk" and order == [0, 1] and sorted(i for i, _ in skipped) == [2, 3, 4]


def test_select_runs_never_averages_failed_runs():
    items = [(f"r{i}", (8, 8), (1e-8, 1e-8), None) for i in range(2)]
    with pytest.raises(DataError, match="no usable run.*r0: the run failed"):
        average.select_runs(items, [{"failed": True}, {"failed": True}])
    order, _, key = average.select_runs(items, [{"failed": True}, {}])  # no metric anywhere: order given
    assert order == [1] and key == "none"
    with pytest.raises(DataError, match="shape"):
        average.select_runs([items[0], ("r1", (8, 9), None, None)], [{}, {}])


# --------------------------------------------------------------------------- CLI


def write_runs(path, objs, metrics, pixel=(10e-9, 10e-9), geometry=None):
    runs = [Run(obj=o, support=np.abs(o) > 0.05 * np.abs(o).max(), metrics=m) for o, m in zip(objs, metrics)]
    rec = Reconstruction(runs=runs, pixel_size=pixel, geometry=geometry or Geometry(
        wavelength=1.5e-10, distance=5.0, pixel=(55e-6, 55e-6)))
    io.write_reconstruction(str(path), rec, io.make_step("test", {}, []))


@pytest.fixture
def run_files(tmp_path):
    truth = blob(seed=21)
    runs = noisy_copies(truth, 6, seed=3, noise=0.2)
    a, b = tmp_path / "a.cxi", tmp_path / "b.cxi"
    write_runs(a, runs[:3], [{"llk_free": 1.0 + 0.1 * k, "llk": 1.0} for k in range(3)])   # converged runs:
    write_runs(b, runs[3:], [{"llk_free": 1.05 + 0.1 * k, "llk": 1.0} for k in range(3)])  # within 2x of the best
    return truth, a, b


def test_cli_average(cli, run_files, tmp_path):
    truth, a, b = run_files
    out = tmp_path / "avg.cxi"
    r = cli("average", a, b, "-o", out, "--best", "5", "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["schema"] == "cxdi.average/1"
    assert rep["metric"] == "llk_free" and rep["n_used"] == 5
    assert rep["reference"] == f"{a}::entry_1"
    labels = [row["run"] for row in rep["runs"]]
    assert labels[:2] == [f"{a}::entry_1", f"{b}::entry_1"]   # best first (1.0, 1.05)
    assert any(s["run"] == f"{b}::entry_3" and "best 5" in s["reason"] for s in rep["skipped"])
    rec = io.read_reconstruction(str(out))
    assert len(rec.runs) == 1 and rec.pixel_size == pytest.approx((10e-9, 10e-9))
    assert align.nrms_error(rec.runs[0].obj, truth) < 0.2
    assert rec.extra["alignment"][0]["run"] == f"{a}::entry_1"
    assert len(rec.extra["mode_weights"]) >= 1 and rec.extra["mode_weights"][0] > 0.8
    with h5py.File(out) as f:
        assert f["/entry_1/mode_1"].shape == truth.shape
        assert f["/entry_1/run_intensity"].shape == truth.shape
        steps = [json.loads(f[f"/entry_1/{k}/json"][()]) for k in f["/entry_1"] if k.startswith("process_")]
    assert steps[-1]["command"].startswith("cxdi") and str(a) in steps[-1]["inputs"]


def test_cli_average_incompatible_runs(cli, run_files, tmp_path):
    truth, a, _ = run_files
    c = tmp_path / "c.cxi"
    write_runs(c, [blob((48, 48), seed=1)], [{"llk_free": 0.1}])
    out = tmp_path / "avg.cxi"
    r = cli("average", a, c, "-o", out)
    assert r.exit_code == 1
    assert "c.cxi" in r.stderr and "shape" in r.stderr
    assert not out.exists()
    d = tmp_path / "d.cxi"
    write_runs(d, [truth], [{"llk_free": 0.1}], geometry=Geometry(wavelength=1.0e-10, distance=5.0,
                                                                  pixel=(55e-6, 55e-6)))
    r = cli("average", a, d, "-o", out)
    assert r.exit_code == 1 and "wavelength" in r.stderr and not out.exists()


def test_cli_average_usage(cli, run_files, tmp_path):
    _, a, _ = run_files
    r = cli("average", a, "-o", tmp_path / "x.cxi", "--best", "0")
    assert r.exit_code == 2
    r = cli("average", a, "-o", tmp_path / "x.cxi", "--by", "banana")
    assert r.exit_code == 2
    r = cli("average", tmp_path / "missing.cxi", "-o", tmp_path / "x.cxi")
    assert r.exit_code == 1 and not (tmp_path / "x.cxi").exists()


def test_cli_average_without_metrics_tiff_like(cli, tmp_path):
    truth = blob(seed=22)
    runs = noisy_copies(truth, 3, seed=5, noise=0.1)
    f = tmp_path / "nometric.cxi"
    write_runs(f, runs, [{}, {}, {}])
    out = tmp_path / "avg.cxi"
    r = cli("average", f, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert "no run carries a metric" in r.stderr
    assert align.nrms_error(io.read_reconstruction(str(out)).runs[0].obj, truth) < 0.1
