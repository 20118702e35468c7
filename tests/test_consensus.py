"""Consensus selection: runs that agree after alignment win over a lone outlier with a better likelihood,
in `phase`'s ordering (/entry_1) and in `average` (never averaged)."""
import numpy as np
import pytest

from cxdi_cli import consensus as cns
from cxdi_cli.analysis import align, averaging
from cxdi_cli.model import Geometry, Reconstruction, Run
from cxdi_cli.phasing import runs as phasing

from test_align import blob
from test_average import noisy_copies


def planted(seed=0):
    """3 noisy, shifted, twinned copies of one object (the agreeing good runs) and an outlier: another
    object (a run that found a different support), given the best free LLK."""
    truth = blob(seed=31)
    good = noisy_copies(truth, 3, seed=seed, noise=0.15)
    other = noisy_copies(blob(seed=32, radius=0.18), 1, seed=seed + 7, noise=0.15)[0]
    objs = good + [other]
    runs = [Run(obj=o, support=np.abs(o) > 0.05 * np.abs(o).max(), params={"run_index": k},
                metrics={"llk_free": f, "llk": f, "failed": False})
            for k, (o, f) in enumerate(zip(objs, [1.02, 1.05, 1.08, 1.0]))]
    return truth, runs


def test_distances_symmetric_and_box_invariant():
    truth, runs = planted()
    objs = [r.obj for r in runs]
    d = cns.pairwise_distances(objs, supports=[r.support for r in runs])
    assert np.allclose(d, d.T) and np.all(np.diag(d) == 0)
    assert d[:3, :3].max() < 0.3 < d[3, :3].min()          # the copies agree, the outlier does not
    full = cns.pairwise_distances([np.pad(o, 40) for o in objs], supports=[np.pad(r.support, 40) for r in runs])  # more empty space: same distances
    assert np.allclose(d, full, atol=0.02)
    wrapped = [np.roll(o, (30, -25), axis=(0, 1)) for o in objs]  # a run wrapping round the edges
    sups = [np.abs(o) > 0.05 * np.abs(o).max() for o in wrapped]
    assert np.allclose(d, cns.pairwise_distances(wrapped, supports=sups), atol=0.02)


def test_largest_group_and_ties():
    d = np.array([[0, .1, .1, .9, .9], [.1, 0, .1, .9, .9], [.1, .1, 0, .9, .9],
                  [.9, .9, .9, 0, .1], [.9, .9, .9, .1, 0]])
    con = cns.find_consensus(None, [3, 4, 0, 1, 2], distance=d, threshold=0.3)
    assert con.group == [0, 1, 2] and con.labels == [1, 1, 1, 2, 2]   # size beats the better-ranked pair
    tie = cns.largest_agreeing_group(d[:4, :4][[0, 1, 3]][:, [0, 1, 3]], 0.3, [2, 1, 0])
    assert tie == [1, 0]
    alone = cns.find_consensus(None, [2, 0, 1], distance=np.ones((3, 3)) - np.eye(3), threshold=0.3)
    assert alone.group == [2]                                  # nobody agrees: the best run alone


def test_phase_order_puts_the_agreeing_group_first():
    _, runs = planted()
    ordered, info = phasing._consensus_order(runs, phasing.Options())
    assert [r.params["run_index"] for r in ordered] == [0, 1, 2, 3]   # the outlier (best llk_free) is last
    assert info["size"] == 3 and info["runs"] == [0, 1, 2]
    assert ordered[0].metrics["consensus_group"] == 1 and ordered[3].metrics["consensus_group"] == 2
    assert ordered[3].metrics["consensus_distance"] > 0.3 > ordered[0].metrics["consensus_distance"]
    plain, _ = phasing._consensus_order(runs, phasing.Options(consensus=False))
    assert plain[0].params["run_index"] == 3                  # by llk_free alone the outlier would win


def test_average_never_averages_the_outlier():
    truth, runs = planted(seed=4)
    rec = Reconstruction(runs=runs, pixel_size=(1e-8, 1e-8), geometry=Geometry())
    out = averaging.average_runs([("runs.cxi", rec)])
    assert out.runs[0].metrics["n_runs"] == 3
    assert "runs.cxi::entry_4" not in [row["run"] for row in out.extra["alignment"]]
    reason = {s["run"]: s["reason"] for s in out.extra["skipped"]}["runs.cxi::entry_4"]
    assert reason.startswith("disagrees with the consensus group of 3")
    assert "consensus group: 3 of the 4 best" in out.extra["summary"]
    assert align.nrms_error(out.runs[0].obj, truth) < 0.15
    everything = averaging.average_runs([("runs.cxi", rec)], consensus=False, outlier=0)
    assert everything.runs[0].metrics["n_runs"] == 4
    assert align.nrms_error(everything.runs[0].obj, truth) > align.nrms_error(out.runs[0].obj, truth) + 0.02


@pytest.mark.parametrize("n", [1, 2])
def test_few_runs(n):
    _, runs = planted()
    ordered, info = phasing._consensus_order(runs[:n], phasing.Options())
    assert len(ordered) == n and info["used"] == (n >= 2)


def test_agreeing_stalled_runs_do_not_outvote_a_run_that_fits():
    """Two stagnated starts that agree with each other but fit the data 5x worse than a lone start:
    the lone start stays /entry_1 (the consensus is drawn from runs within 2x of the best free LLK)."""
    truth = blob(seed=31)
    good = noisy_copies(truth, 1, seed=1, noise=0.15)[0]
    stuck = noisy_copies(blob(seed=32, radius=0.18), 2, seed=2, noise=0.1)
    runs = [Run(obj=o, support=np.abs(o) > 0.05 * np.abs(o).max(), params={"run_index": k},
                metrics={"llk_free": f, "llk": f}) for k, (o, f) in enumerate(zip([good] + stuck, [1.0, 5.0, 5.2]))]
    ordered, info = phasing._consensus_order(runs, phasing.Options())
    assert ordered[0].params["run_index"] == 0 and info["size"] == 1
    assert ordered[1].metrics["consensus_group"] == 2 and ordered[1].metrics["consensus_group_size"] == 2
    # `average` draws its group the same way: the lone run that fits, not the agreeing stalled pair
    # (it had averaged the pair: 2-px-blurred 504^2 tungsten, average 0.885 where /entry_1 was 0.30)
    rec = Reconstruction(runs=ordered, pixel_size=(1e-8, 1e-8), geometry=Geometry())
    out = averaging.average_runs([("runs.cxi", rec)])
    assert out.runs[0].metrics["n_runs"] == 1 and out.runs[0].metrics["reference"] == "runs.cxi::entry_1"
    reasons = [s["reason"] for s in out.extra["skipped"]]
    assert len(reasons) == 2 and all("stalled start" in r for r in reasons)
    assert align.nrms_error(out.runs[0].obj, truth) < 0.2


def test_threshold_follows_photon_noise_but_not_stagnation():
    """Photon-limited runs all 0.37-0.42 apart still agree (threshold 1.25 x their nearest distance);
    a stagnated run 0.9 away stays out, and the threshold never passes 0.6."""
    rng = np.random.default_rng(0)
    d = rng.uniform(0.37, 0.42, (6, 6))
    d = np.triu(d, 1) + np.triu(d, 1).T
    d = np.pad(d, (0, 1), constant_values=0.9)
    d[6, 6] = 0
    con = cns.find_consensus(None, list(range(7)), distance=d)
    assert sorted(con.group) == [0, 1, 2, 3, 4, 5] and 0.42 < con.threshold <= 0.6
    far = np.full((4, 4), 0.9) - 0.9 * np.eye(4)
    assert cns.effective_threshold(far) == cns.MAX_THRESHOLD
    assert cns.find_consensus(None, [0, 1, 2, 3], distance=far).group == [0]
    tight = np.full((3, 3), 0.05) - 0.05 * np.eye(3)
    assert cns.effective_threshold(tight) == cns.DEFAULT_THRESHOLD
