from inweights.config import ProgramsConfig
from inweights.domains.programs import ProgramsDomain
from inweights.eval.probes import evaluate  # noqa: F401
from inweights.eval.stats import wilson


def test_wilson_interval():
    lo, hi = wilson(50, 100)
    assert lo < 0.5 < hi and abs((lo + hi) / 2 - 0.5) < 1e-9 and 0.39 < lo < 0.41
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == 1.0
    assert wilson(0, 0) == (0.0, 1.0)
    # the interval holds the estimate at every n (a rounding error once put 16/16 outside it and broke a plot)
    assert all(wilson(k, n)[0] <= k / n <= wilson(k, n)[1] for n in range(1, 300) for k in (0, 1, n - 1, n))


def test_code_recall_counts_exact_statements():
    d = ProgramsDomain(ProgramsConfig(min_statements=3, max_statements=3), 0)
    u = d.build()[0]
    x = u.test_inputs[0]
    perfect = "\n".join(d.steps(u, x))
    assert d.recall(u, perfect) == 1.0
    broken = perfect.replace(d.statements(u)[1], "b = (a + 0) % 10", 1)
    assert d.recall(u, broken) == 3 / 4
    assert d.recall(u, "Answer: 3") == 0.0
