"""The released AsyncHow files read into planning units (``domain.planning.asynchow_dir``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inweights.core import rejects
from inweights.core.errors import UserError
from inweights.domains.base import Unit
from inweights.domains.planning_graphs import (
    _show,
    _span,
    code_longest,
    code_structure,
    graph_structure,
    longest_path,
    make_unit,
    timedelta_interval,
)

_FILES = {"nl": "asynchow_natural_{split}.jsonl", "graph": "asynchow_graph_{split}.jsonl",
          "code": "asynchow_python_{split}.jsonl"}


def _record_ok(r: str, rec: dict[str, Any]) -> None:
    if not isinstance(rec.get("question"), str) or "answer" not in rec:
        raise ValueError(f"{r}: needs a string 'question' and an 'answer'")


def load_asynchow(folder: str | Path, representations: tuple[str, ...],
                  eval_representations: tuple[str, ...]) -> list[Unit]:
    """Units from the released AsyncHow-style JSONL files (``asynchow_{natural,graph,python}_{train,test}.jsonl``,
    records ``{"question", "answer"}``, the three representations aligned by line). The questions are shown
    verbatim. The structure — and so the answer and the chain of thought — is read from the Graph question:
    the graph is the ground truth; a released answer that disagrees with it is kept, scored against the graph
    and reported with both values. Durations in months or years make the answer an interval (scored right
    anywhere inside it). A Code question's answer is what its shown program returns on its shown input (its
    weights may be rounded), and its chain of thought uses that input's node ids.

    The released layout may hold the test split only (``asynchow_{natural,graph,python}_test.jsonl``): with no
    training file at all there are no training instances (a recipe that trains then says so in one line); a
    split that has some of its files must have every one its representations need.

    Loader policy (``inweights.core.rejects``): an unreadable record is left out and reported with the others;
    files that do not align line by line, or a split where nothing loads, are errors."""
    from inweights.core.io import read_jsonl

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"planning.asynchow_dir: {folder} is not a folder")
    for r in dict.fromkeys((*representations, *eval_representations)):
        if r not in _FILES:
            raise UserError(f"planning.asynchow_dir: the released AsyncHow files have no '{r}' representation "
                            f"(they hold {', '.join(_FILES)})")
    units = []
    first_seen: dict[tuple[str, str], str] = {}  # (split, graph question) -> where it was read first
    for split, group, inputs in (("train", "train", representations), ("test", "test", eval_representations)):
        need = sorted(set(inputs) | {"graph"})
        files = {r: folder / _FILES[r].format(split=split) for r in need}
        if split == "train" and not any((folder / f.format(split=split)).exists() for f in _FILES.values()):
            continue  # the release's test files alone: no training instances
        for r, p in files.items():
            if not p.is_file():
                raise UserError(f"planning.asynchow_dir: {p} not found (needed for the {r} representation)")
        rows = {r: read_jsonl(p, "AsyncHow file", lenient=True) for r, p in files.items()}
        n = len(rows["graph"])
        for r, rs in rows.items():
            if len(rs) != n:
                raise UserError(f"planning.asynchow_dir: {files[r]} has {len(rs)} records, {files['graph']} has {n}; "
                                "the representations must align line by line")
        made = 0
        for i in range(n):
            where = rows["graph"][i][0]
            recs = {r: rows[r][i][1] for r in need}
            if any(rec is None for rec in recs.values()):  # already reported by read_jsonl, at its own line
                continue
            try:
                for r, rec in recs.items():
                    where = rows[r][i][0]
                    _record_ok(r, rec)
                where = rows["graph"][i][0]
                question = recs["graph"]["question"]
                if (split, question) in first_seen:  # a repeat within a split would count twice
                    raise ValueError(f"the same graph question as {first_seen[split, question]}")
                first_seen[split, question] = where
                if split == "test" and ("train", question) in first_seen:  # kept, but never silently
                    rejects.note(where, f"the same graph question as {first_seen['train', question]}: this test "
                                        f"instance was also trained on")
                lows, highs, edges = graph_structure(recs["graph"]["question"])
                lo, hi = longest_path(lows, edges), longest_path(highs, edges)
                code = None
                if "code" in recs:
                    where = rows["code"][i][0]
                    code = code_structure(recs["code"]["question"])
                    code["answer"] = code_longest(code["adj"], code["source"], code["target"])[code["target"]]
            except (ValueError, SyntaxError, KeyError, TypeError, UserError) as e:
                rejects.reject(where, str(e))
                continue
            for r in ("graph", "nl"):
                if r not in recs:
                    continue
                try:
                    rlo, rhi = timedelta_interval(recs[r]["answer"])
                except (ValueError, SyntaxError) as e:
                    rejects.note(rows[r][i][0], f"released answer unreadable ({e}); scored against the graph")
                    continue
                tol = 1e-6 * max(1.0, hi)
                if abs(rlo - lo) > tol or abs(rhi - hi) > tol:
                    rejects.note(rows[r][i][0], f"released answer {_span(rlo, rhi)} min disagrees with the longest "
                                 f"path of its graph ({_span(lo, hi)} min); scored against the graph")
            if code is not None:
                released = recs["code"]["answer"]
                try:
                    ok = abs(float(released) - code["answer"]) <= 1e-6 * max(1.0, abs(code["answer"]))
                except (TypeError, ValueError):
                    ok = False
                if not ok:
                    rejects.note(rows["code"][i][0], f"released answer {str(released)[:40]} is not what the shown "
                                 f"program returns ({_show(code['answer'])}); scored against the program")
            texts = {r: recs[r]["question"] for r in need}
            inst = {"goal": f"asynchow {split} {i + 1}", "activities": [f"step {k}" for k in range(1, len(lows) + 1)],
                    "durations": lows, "edges": edges, "ids": list(range(1, len(lows) + 3)), "texts": texts}
            if hi != lo:
                inst["answer_high"], inst["durations_high"] = hi, highs
            if code is not None:
                inst["code"] = code
            units.append(make_unit(f"asynchow-{split}-{i + 1}", group, inst, tuple(inputs)))
            made += 1
        rejects.check_any_loaded(made, f"planning.asynchow_dir: {files['graph']}")
    return units
