"""Time-resolved series: the series file, warm-started per-frame phasing against the truth, warm against
cold convergence, and the --series routes of phase, resolve-prt and show (small frames, fixed seeds)."""
import json

import numpy as np
import pytest

from cxdi_cli import io, registration
from cxdi_cli.model import DataError, measured_from_mask

#: Per-frame NRMSE bound of the warm-started frames (the issue's 0.15; measured 0.084-0.103 here).
NRMSE_BOUND = 0.15


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """4 frames of 100^2 (detector 128) in which a tungsten disc grows, phased warm (3 reference starts)."""
    from cxdi_cli.phasing import runs as rn, series as ps
    from cxdi_cli.sim.series import simulate_series

    d = tmp_path_factory.mktemp("series")
    info = simulate_series(d, size=128, frames=4, seed=3)
    data = io.read_series(str(d / "series.cxi"))
    truth = io.read_reconstruction(str(d / "truth.cxi"))
    result = ps.phase_series(data, rn.Options(runs=3, seed=3, threads=1))
    return {"dir": d, "info": info, "data": data, "truth": truth, "result": result}


def test_series_file_round_trip_and_refused_as_one_pattern(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.poisson(50, (3, 16, 16)).astype(np.float32)
    mask = np.zeros((3, 16, 16), np.uint32)
    mask[1, 2, 3] = 4                                          # a hot pixel in frame 1 only
    s = io.Series(intensity=frames, mask=mask, time=np.array([0.0, 0.5, 2.0]))
    io.write_series(str(tmp_path / "s.cxi"), s, io.make_step("test"))
    back = io.read_series(str(tmp_path / "s.cxi"))
    assert np.array_equal(back.intensity, frames) and np.array_equal(back.mask, mask)
    assert back.time.tolist() == [0.0, 0.5, 2.0]
    summed = back.summed()                                     # bad in one frame: masked in the sum
    assert not measured_from_mask(summed.mask)[2, 3] and summed.intensity[0, 0] == frames[:, 0, 0].sum()
    with pytest.raises(DataError, match="--series"):
        io.read_pattern(str(tmp_path / "s.cxi"))


def test_frames_follow_the_truth_in_time_order(sim):
    rec, truth = sim["result"].frames, sim["truth"]
    assert [r.params["frame_index"] for r in rec.runs] == [0, 1, 2, 3]
    assert [r.params["time_s"] for r in rec.runs] == sim["data"].time.tolist()
    assert rec.runs[0].params["start"].startswith("reference run")
    assert [r.params["start"] for r in rec.runs[1:]] == ["frame 0", "frame 1", "frame 2"]
    errors = [registration.nrms_error(r.obj, t.obj) for r, t in zip(rec.runs, truth.runs)]
    assert max(errors) < NRMSE_BOUND, errors
    # the feature grows: the aligned amplitude where only the last frame's disc lies rises frame by frame
    disc = truth.runs[-1].support & ~truth.runs[0].support
    assert disc.sum() > 10
    grown = [float(np.abs(registration.align_to(r.obj, t.obj)[0])[disc].sum()) for r, t in zip(rec.runs, truth.runs)]
    assert grown[0] < grown[1] < grown[2] < grown[3], grown
    assert grown[0] < 0.2 * grown[3]


def test_warm_start_reaches_the_cold_llk_sooner(sim):
    from cxdi_cli.phasing import runs as rn, series as ps

    warm = sim["result"].frames.runs[2]
    opts = rn.Options(runs=1, seed=3, threads=1, positivity=bool(warm.params["positivity"]), record_every=5)
    cold = ps.cold_frame(sim["data"].frame(2), opts, 2)
    target = (1 + ps.CONVERGED) * max(warm.metrics["llk"], cold.metrics["llk"])
    it_warm, it_cold = ps.iterations_to(warm.history, target), ps.iterations_to(cold.history, target)
    assert it_warm is not None and it_cold is not None
    assert it_warm * 3 < it_cold, (it_warm, it_cold)       # measured 160 against 825


def test_phase_series_cli_resolve_and_show(sim, cli, tmp_path):
    d = sim["dir"]
    out = tmp_path / "frames.cxi"
    r = cli("phase", "--series", d / "series.cxi", "-o", out, "--runs", "2", "--seed", "1", "--threads", "1",
            "--reference", tmp_path / "ref.cxi", "--frame-runs", "2", "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["schema"] == "cxdi.phase-series/1" and rep["frames"] == 4
    rec = io.read_reconstruction(str(out))       # frame by frame in time order, the two chains of each
    assert [(run.params["frame_index"], run.params["chain"]) for run in rec.runs] == \
        [(k, j) for k in range(4) for j in range(2)]
    assert rec.runs[0].params["start"] != rec.runs[1].params["start"]          # chains from two reference runs
    assert rec.arrays["reference"].shape == (100, 100) and "series" in rec.extra
    assert len(io.read_reconstruction(str(tmp_path / "ref.cxi")).runs) == 2
    r = cli("resolve-prt", out, "--data", d / "series.cxi", "--json", "-o", tmp_path / "prtf.h5")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)["prtf_series"]["frames"]
    assert [row["frame_index"] for row in rows] == [0, 1, 2, 3] and all(row["nyquist_fraction"] > 0 for row in rows)
    assert all(row["runs"] == 2 and row["debiased_runs"] == 2 for row in rows)   # the chains averaged per frame
    assert cli("show", out, "-o", tmp_path / "strip.png").exit_code == 0
    r = cli("show", out, "-o", tmp_path / "anim.gif")
    assert r.exit_code == 0, r.stderr
    from PIL import Image

    with Image.open(tmp_path / "anim.gif") as im:
        assert im.n_frames == 4


def test_bad_series_inputs_are_one_line_errors(sim, cli, tmp_path):
    import h5py

    d = sim["dir"]
    io.write_pattern(str(tmp_path / "one.cxi"), sim["data"].frame(0), io.make_step("test"))
    r = cli("phase", "--series", tmp_path / "one.cxi", "-o", tmp_path / "x.cxi")
    assert r.exit_code == 1 and "not a series" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "badmask.cxi"
    with h5py.File(bad, "w") as f:                             # 4 frames, a per-frame mask of 3
        det = f.create_group("entry_1/instrument_1/detector_1")
        det.create_dataset("data", data=sim["data"].intensity).attrs["interpretation"] = "image"
        det.create_dataset("mask", data=np.zeros((3, 100, 100), np.uint32))
    r = cli("phase", "--series", bad, "-o", tmp_path / "x.cxi")
    assert r.exit_code == 1 and "mask shape" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.cxi").exists()
    r = cli("phase", d / "series.cxi", "-o", tmp_path / "x.cxi")            # a series without --series
    assert r.exit_code == 1 and "--series" in r.stderr
    r = cli("phase", tmp_path / "one.cxi", "-o", tmp_path / "x.cxi", "--cold-frames")
    assert r.exit_code == 2
    r = cli("show", tmp_path / "one.cxi", "-o", tmp_path / "x.gif")
    assert r.exit_code == 2 and "time series" in r.stderr
