"""The doubling rule of the converged budget (crapnet_core.engine.selection)."""

import pytest

from crapnet_core.engine.selection import choose_budget, selection_markdown, validation_curve


def _curve(points):
    return dict(points)


def test_smallest_candidate_whose_doubling_gains_less_than_a_point_for_every_method():
    curves = {
        "crapnet": _curve({1000: 50, 2000: 55, 4000: 58, 5000: 59, 10000: 59.5, 20000: 60.0}),
        "alpnet": _curve({1000: 48, 2000: 52, 4000: 57, 5000: 58, 10000: 60.0, 20000: 60.5}),
    }
    choice = choose_budget(curves)
    # B=5000: crapnet gains 0.5 but alpnet 2.0 -> fails; B=10000: both gain 0.5 -> chosen
    assert choice["passed"] and choice["chosen"] == 10000
    assert choice["gains"][5000] == {"crapnet": 0.5, "alpnet": 2.0}


def test_no_candidate_passes_gives_the_longest_trial_and_says_so():
    curves = {"crapnet": {s: s / 100 for s in (1000, 2000, 4000, 5000, 10000, 20000)}}
    choice = choose_budget(curves)
    assert not choice["passed"] and choice["chosen"] == 20000


def test_a_missing_step_is_named():
    with pytest.raises(ValueError, match="alpnet: step 20000"):
        choose_budget({"alpnet": {1000: 1, 2000: 1, 4000: 1, 5000: 1, 10000: 1}})


def test_markdown_and_validation_curve():
    b = {
        "split": "validation",
        "scans": ["36", "37"],
        "dataset": "chaos",
        "fold": 0,
        "run": "r",
        "points": [{"step": s, "dice": {"mean": 0.5 + s / 1e5}} for s in (1000, 2000)],
    }
    assert validation_curve(b) == {1000: pytest.approx(51.0), 2000: pytest.approx(52.0)}
    choice = choose_budget({"crapnet": validation_curve(b)}, candidates=(1000,))
    text = selection_markdown({"crapnet": b}, choice)
    assert "Chosen: 1,000 steps" not in text and "not converged" in text  # gain 1.0 is not < 1.0
    with pytest.raises(ValueError, match="not a validation"):
        validation_curve(dict(b, split="test"))
