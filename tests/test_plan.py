"""cxdi plan against the published worked example (DESIGN §1)."""
import json


def test_worked_example(cli):
    r = cli("plan", "--energy", 8, "--distance", 30, "--pixel", "75e-6", "--detector", 2048,
            "--size", "20e-6", "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["schema"] == "cxdi.plan/1"
    assert abs(d["oversampling"] - 3.0) / 3.0 < 0.05
    assert abs(d["resolution_element_m"] - 30e-9) / 30e-9 < 0.05
    assert 11e-6 * 0.95 < d["depth_of_field_m"] < 12e-6 * 1.05
    assert abs(d["max_size_for_sigma3_m"] - 20e-6) / 20e-6 < 0.05
    # 20 um is thicker than the 11.8 um depth of field: warned on stderr
    assert "depth of field" in r.stderr


def test_undersampled_warns(cli):
    r = cli("plan", "--energy", 8, "--distance", 1, "--pixel", "75e-6", "--size", "20e-6")
    assert r.exit_code == 0
    assert "below the 2D limit" in r.stderr


def test_bad_value_is_usage_error(cli):
    r = cli("plan", "--energy", 0, "--distance", 1, "--pixel", "75e-6")
    assert r.exit_code == 2 and "energy" in r.stderr and r.stdout == ""
