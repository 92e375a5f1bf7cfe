"""The documentation cannot drift: every results table marked in the docs is regenerated from the run file it
names, every relative link resolves, and the README stays a front page."""

import json
import re

import pytest

from inweights.report.tables import marked_tables, pooled_table, table_options

DOCS = ["README.md", *[f"docs/{p}" for p in ("api.md", "architecture.md", "commands.md", "data.md", "domains.md",
                                             "gpus.md", "models.md", "papers.md", "performance.md", "regimes.md",
                                             "results.md")]]


@pytest.mark.parametrize("doc", DOCS)
def test_marked_tables_match_their_runs(root, doc):
    path = root / doc
    for src, table, opts in marked_tables(path.read_text()):
        summaries = [json.loads((path.parent / one).read_text()) for one in src.split(",")]  # several: seeds pooled
        assert table == pooled_table(summaries, table_options(opts)), f"{doc}: the table from {src} has drifted"


def test_some_tables_are_generated(root):
    assert sum(len(marked_tables((root / d).read_text())) for d in DOCS) >= 2


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve(root, doc):
    path = root / doc
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), f"{doc}: broken link {target}"


def test_readme_is_a_front_page(root):
    text = (root / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for needle in ("make smoke", "make demo", "make test", "## Results at a glance", "## Glossary"):
        assert needle in text


def test_cli_prints_the_table(root, capsys, tmp_path):
    from inweights.cli import main

    src = next(s for d in DOCS for s, _, _ in marked_tables((root / d).read_text()))
    doc = next(d for d in DOCS if any(s == src for s, _, _ in marked_tables((root / d).read_text())))
    assert main(["report", str((root / doc).parent / src), "--markdown-table"]) == 0
    assert capsys.readouterr().out.startswith("| ")
    (tmp_path / "summary.json").write_text("{}")
    assert main(["report", str(tmp_path / "summary.json"), "--markdown-table"]) == 2
    assert "no results table" in capsys.readouterr().err


def test_seeds_pool_into_one_table(tmp_path, capsys):
    """Several seeds' summaries: pooled accuracy over every instance (Wilson CI), each seed's own after it."""
    from inweights.cli import main

    def summary(a, b):
        def cell(k):
            return {"n": 100, "correct": k, "acc": k / 100, "ci95": [0, 1]}

        return {"rows": {"base": {"cells": {"test/in_weights/cot/nl": cell(a)}},
                         "two_stage": {"cells": {"test/in_weights/cot/nl": cell(b)}}}}

    files = []
    for i, (a, b) in enumerate([(20, 30), (22, 50)]):
        files.append(tmp_path / f"s{i}.json")
        files[-1].write_text(json.dumps(summary(a, b)))
    table = pooled_table([json.loads(f.read_text()) for f in files])
    assert "| base | 21.0 [16–27] (20 / 22) |" in table and "| two_stage | 40.0 [33–47] (30 / 50) |" in table
    assert main(["report", *map(str, files), "--markdown-table"]) == 0
    assert capsys.readouterr().out.strip() == table
    for other, why in (({"rows": {"base": summary(1, 1)["rows"]["base"]}}, "same recipes"),
                       ({**summary(1, 1), "name": "other"}, "different configs"),
                       ({**summary(1, 1), "seed": 0}, "seed is given twice")):
        files[0].write_text(json.dumps({**summary(20, 30), "seed": 0}))
        files[1].write_text(json.dumps(other))
        assert main(["report", *map(str, files), "--markdown-table"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0]
    assert main(["report", *map(str, files), str(files[0].parent / "missing.json"), "--markdown-table"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["report", *map(str, files)]) == 2  # several runs: only as one table


def test_ilf_seeds_pool_pass_at_k_over_every_task_with_paired_differences(tmp_path, capsys):
    """ILF summaries: pass@k pooled over both seeds' test tasks (unbiased estimator per task), each seed's own after
    it, and ILF's paired differences on the same tasks; a summary without per-task counts is one clear line."""
    from inweights.cli import main

    def summary(seed, ilf, gold):  # per test task: (samples, passed)
        def rec(counts):
            k1 = sum(c / n for n, c in counts) / len(counts)
            return {"pass@1": k1, "pass@1_ci": [0, 1], "per_task": [list(x) for x in counts]}

        return {"name": "ilf_x", "seed": seed, "recipes": {"sft_gold": rec(gold), "ilf": rec(ilf)}}

    a = summary(0, [(10, 10), (10, 0)], [(10, 5), (10, 5)])
    b = summary(1, [(10, 10), (10, 10)], [(10, 0), (10, 0)])
    table = pooled_table([a, b])
    rows = {ln.split(" | ")[0].strip("| "): ln for ln in table.splitlines()[2:]}
    assert rows["ilf"].startswith("| ilf | 75.0 [") and rows["ilf"].endswith("(50.0 / 100.0) |")
    assert rows["sft_gold"].startswith("| sft_gold | 25.0 [") and "(50.0 / 0.0)" in rows["sft_gold"]
    assert rows["ilf − sft_gold (paired)"].startswith("| ilf − sft_gold (paired) | 50.0 [")
    files = [tmp_path / "a.json", tmp_path / "b.json"]
    for f, s in zip(files, (a, b)):
        f.write_text(json.dumps(s))
    assert main(["report", *map(str, files), "--markdown-table"]) == 0
    assert capsys.readouterr().out.strip() == table
    del b["recipes"]["ilf"]["per_task"]
    files[1].write_text(json.dumps(b))
    assert main(["report", *map(str, files), "--markdown-table"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no per-task counts" in err[0]

