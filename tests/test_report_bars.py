"""The PBB bar and the skill-kept note, on synthetic rows (what a report says is computed, not typed)."""

from inweights.eval.stats import wilson
from inweights.regimes.experiment.report import bars_check, meaningfulness, nothing_near_chance


def cell(k, n):
    lo, hi = wilson(k, n)
    return {"n": n, "correct": k, "acc": k / n, "ci95": [lo, hi], "chance": 0.1}


def rows(pro_wo, pro_wi, base_wo, s2_wo, s2_ic=95):
    return {
        "base": {"cells": {"without_io/in_weights/cot": cell(base_wo, 100), "without_io/in_context/cot": cell(95, 100),
                           "with_io/in_context/cot": cell(95, 100)}},
        "proactive": {"cells": {"without_io/in_weights/cot": cell(pro_wo, 100), "with_io/in_weights/cot": cell(pro_wi, 200),
                                "without_io/in_context/cot": cell(90, 100), "with_io/in_context/cot": cell(180, 200)}},
        "stage2_only": {"cells": {"without_io/in_weights/cot": cell(s2_wo, 100), "with_io/in_weights/cot": cell(10, 200),
                                  "without_io/in_context/cot": cell(s2_ic, 100), "with_io/in_context/cot": cell(90, 100)}},
    }


def test_the_bar_needs_30_percent_a_separated_interval_and_with_io():
    met = bars_check(rows(78, 167, 6, 5))
    assert met[0].startswith("PBB bar") and "**meets**" in met[1]
    assert "**misses**" in bars_check(rows(25, 167, 6, 5))[1]  # under 30%
    assert "**misses**" in bars_check(rows(35, 167, 6, 28))[1]  # intervals overlap stage2_only's
    assert "**misses**" in bars_check(rows(78, 80, 6, 5))[1]  # with_io held-out under 50%
    no_base = rows(78, 167, 6, 5)
    del no_base["base"]
    assert "base not run" in bars_check(no_base)[1] and "**misses**" in bars_check(no_base)[1]


def test_a_model_that_wore_the_skill_down_is_named():
    notes = meaningfulness(rows(78, 167, 6, 5, s2_ic=64))
    worn = [n for n in notes if "stage2_only" in n]
    assert len(worn) == 1 and "less than 80%" in worn[0] and "64.0" in worn[0]
    # stage2_only never trains with_io executions: its with_io in-weights accuracy is not called a failed skill
    assert not any("execution skill was not learned" in n for n in notes)
    assert not any("proactive" in n for n in notes)


def test_above_chance_is_said_only_of_cells_that_were_measured():
    assert nothing_near_chance(rows(78, 167, 6, 5)) == "- every compared cell is above chance."
    # eval groups that made no probes (issue 38): no cell, no verdict
    empty = {"base": {"cells": {}}, "proactive": {"cells": {}}}
    assert not meaningfulness(empty) and "above chance" not in nothing_near_chance(empty)
    assert "nothing was measured" in nothing_near_chance(empty)
    composed = {"proactive": {"cells": {"composed/in_weights/cot": cell(5, 100)}}}
    assert "above chance" not in nothing_near_chance(composed)
