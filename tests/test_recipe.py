"""Recipe grammar: left-to-right steps, groups, parameters, errors that point at the fault."""
import pytest

from cxdi_cli.phasing import recipe as rcp
from cxdi_cli.model import UsageError

STEPS = {"er": (), "hio": ("beta",), "raar": ("beta",), "ml": (), "sup": ("threshold", "sigma")}


def names(text):
    return [(s.name, s.count) for s in rcp.flatten(rcp.parse(text, STEPS))]


def test_left_to_right_with_counts():
    assert names("raar**800,er**200") == [("raar", 800), ("er", 200)]
    from cxdi_cli.phasing import runs as phasing

    # sup steps are support updates, not iterations
    assert phasing.count_iterations(phasing.parse_recipe("raar**800, er**200,sup,ml**5")) == 1005


def test_groups_unroll_in_order():
    assert names("(hio**50,er**5)**3,ml") == [("hio", 50), ("er", 5)] * 3 + [("ml", 1)]
    assert names("((er,hio**2)**2,sup)**2") == ([("er", 1), ("hio", 2)] * 2 + [("sup", 1)]) * 2


def test_parameters_and_canonical_text():
    items = rcp.parse("RAAR(beta=0.8)**600 , sup(threshold=0.15, sigma=1)", STEPS)
    steps = rcp.flatten(items)
    assert steps[0].params == (("beta", 0.8),) and steps[0].count == 600
    assert dict(steps[1].params) == {"threshold": 0.15, "sigma": 1.0}
    text = rcp.format_recipe(items)
    assert text == "raar(beta=0.8)**600,sup(threshold=0.15,sigma=1)"
    assert rcp.parse(text, STEPS) == items


@pytest.mark.parametrize("text, where, what", [
    ("hoi**10", 1, "unknown step 'hoi'"),
    ("raar**800,er**", 15, "repeat count"),
    ("raar**0", 7, "at least 1"),
    ("(hio**5,er", 11, "')' closing the group"),
    ("hio(gamma=1)", 5, "no parameter 'gamma'"),
    ("er;hio", 3, "unexpected character ';'"),
    ("", 1, "empty recipe"),
    ("er**2.5", 5, "not a whole number"),
    ("hio(beta=0.9,beta=0.8)", 14, "given twice"),
    ("er hio", 4, "unexpected 'hio'"),
])
def test_errors_point_at_the_fault(text, where, what):
    with pytest.raises(UsageError) as exc:
        rcp.parse(text, STEPS)
    msg = str(exc.value)
    assert what in msg and f"character {where} " in msg, msg
    assert exc.value.exit_code == 2


def test_unknown_step_lists_valid_names():
    with pytest.raises(UsageError, match="valid steps: er, hio, ml, raar, sup"):
        rcp.parse("er**10,xyz**3", STEPS)


def test_never_evaluated():
    with pytest.raises(UsageError):
        rcp.parse("__import__('os').system('true')", STEPS)
