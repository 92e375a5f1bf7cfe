"""The documentation cannot drift: every results table marked in the docs is regenerated from the run file it
names, every relative link resolves, and the README stays a front page."""

import json
import re

import pytest

from inweights.report.tables import markdown_table, marked_tables, table_options

DOCS = ["README.md", *[f"docs/{p}" for p in ("api.md", "architecture.md", "commands.md", "data.md", "domains.md",
                                             "gpus.md", "models.md", "papers.md", "performance.md", "regimes.md",
                                             "results.md")]]


@pytest.mark.parametrize("doc", DOCS)
def test_marked_tables_match_their_runs(root, doc):
    path = root / doc
    for src, table, opts in marked_tables(path.read_text()):
        summary = json.loads((path.parent / src).read_text())
        assert table == markdown_table(summary, table_options(opts)), f"{doc}: the table from {src} has drifted"


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
