"""The planning domain's semantics, below the domain and its AsyncHow reader: an instance as a networkx DAG and
its least total time (the longest START -> END path: networkx computes it), durations read back from text (minutes,
hours, intervals for months and years), the structure of a released Graph or Code question, a Code question's own
answer and chain of thought, and how alike two instances are (Weisfeiler-Lehman features of the DAG and the
durations' histogram: the analogy table of the planning report)."""

from __future__ import annotations

import ast
import re
import warnings
from collections import Counter
from decimal import Decimal
from typing import Any

import networkx as nx

from inweights.core.errors import UserError
from inweights.domains.base import Unit


def longest_path(durations: list[float], edges: list[tuple[int, int]]) -> float:
    """Least total time with unlimited parallelism: the longest START -> END path, edge weight = the
    duration of the step the edge enters (networkx). Whole numbers come back as int."""
    val = nx.dag_longest_path_length(dag(durations, edges), weight="weight")
    return int(val) if float(val).is_integer() else float(val)


def dag(durations: list[float], edges: list[tuple[int, int]]) -> nx.DiGraph:
    """The instance as a networkx DAG over steps 1..n plus START and END."""
    n = len(durations)
    g = nx.DiGraph()
    g.add_nodes_from(["START", "END", *range(1, n + 1)])
    for a, b in edges:
        g.add_edge(a, b, weight=durations[b - 1])
    for s in range(1, n + 1):
        if g.in_degree(s) == 0:
            g.add_edge("START", s, weight=durations[s - 1])
        if g.out_degree(s) == 0:
            g.add_edge(s, "END", weight=0)
    if not nx.is_directed_acyclic_graph(g):
        raise UserError("planning instance: the precedence constraints contain a cycle")
    return g


def _show(m: float) -> str:
    """A number as targets write it: no exponent and every digit its float needs (repr's shortest round trip),
    so the scorer reads back exactly this value (``:g`` wrote 2757960 as 2.75796e+06 and cut fractions)."""
    m = float(m)
    if m.is_integer():
        return str(int(m))
    return format(Decimal(repr(m)), "f")


def make_unit(uid: str, group: str, inst: dict[str, Any], inputs: tuple[str, ...]) -> Unit:
    answer = longest_path(inst["durations"], inst["edges"])
    meta = {**inst, "answer": answer}
    train, test = (inputs, ()) if group in ("train", "prepare") else ((), inputs)
    if group == "prepare":
        test = inputs
    return Unit(id=uid, family="planning", pointer=inst["goal"], instruction="", group=group,
                train_inputs=train, test_inputs=test, meta=meta)


_UNIT_MINUTES = {"min": 1, "minute": 1, "minutes": 1, "m": 1, "mins": 1, "hour": 60, "hours": 60, "h": 60,
                 "hr": 60, "hrs": 60, "second": 1 / 60, "seconds": 1 / 60, "sec": 1 / 60, "secs": 1 / 60, "s": 1 / 60,
                 "day": 1440, "days": 1440, "d": 1440, "week": 10080, "weeks": 10080, "wk": 10080, "wks": 10080}
# calendar units have no single length: a month is 28-31 days, a year 365-366 (AsyncHow's answers are intervals)
_UNIT_RANGE = {"month": (28 * 1440, 31 * 1440), "months": (28 * 1440, 31 * 1440), "mo": (28 * 1440, 31 * 1440),
               "year": (365 * 1440, 366 * 1440), "years": (365 * 1440, 366 * 1440), "yr": (365 * 1440, 366 * 1440),
               "yrs": (365 * 1440, 366 * 1440)}


def parse_duration(text: str | None) -> tuple[float, float] | None:
    """(low, high) minutes of a duration: a bare number is minutes; "2 h 30 min" is summed; months and years
    give an interval; a parenthesised restatement ("90 minutes (1.5 hours)") is not added; unknown units: None."""
    if not text:
        return None
    t = re.sub(r"\([^)]*\)", " ", text.lower().replace(",", ""))
    parts = re.findall(r"(-?\d+(?:\.\d+)?)\s*([a-z]+)?", t)
    if not parts:
        return None
    lo = hi = 0.0
    for num, unit in parts:
        unit = unit or "min"
        if unit in _UNIT_MINUTES:
            a = b = _UNIT_MINUTES[unit]
        elif unit in _UNIT_RANGE:
            a, b = _UNIT_RANGE[unit]
        else:
            return None
        lo, hi = lo + float(num) * a, hi + float(num) * b
    return lo, hi


def parse_minutes(text: str | None) -> float | None:
    """Minutes from an answer when it has one value ("1.5 hours", "2 h 30 min"); None for an unreadable text or
    an interval (months, years: use ``parse_duration``)."""
    d = parse_duration(text)
    return d[0] if d is not None and d[0] == d[1] else None


# ------------------------------------------------------------------ released AsyncHow-style files


_TIMEDELTA = re.compile(r"timedelta\(([^)]*)\)")


def timedelta_minutes(answer: str) -> float:
    """Minutes of the first ``datetime.timedelta(...)`` in an answer string (read with ``ast``, never eval)."""
    m = _TIMEDELTA.search(answer)
    if not m:
        raise ValueError("no timedelta in the answer")
    return _timedelta(m.group(1))


def _timedelta(args: str) -> float:
    call = ast.parse(f"f({args})", mode="eval").body
    kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    mins = {"weeks": 10080, "days": 1440, "hours": 60, "minutes": 1, "seconds": 1 / 60, "milliseconds": 1 / 60000,
            "microseconds": 1 / 6e7}
    unknown = set(kw) - set(mins)
    if unknown or call.args:
        raise ValueError(f"unexpected timedelta arguments {sorted(unknown)}")
    return sum(float(v) * mins[k] for k, v in kw.items())


def timedelta_interval(answer: Any) -> tuple[float, float]:
    """(low, high) minutes of a released answer: a list of ``datetime.timedelta(...)`` (one value, or two for an
    interval: 28- vs 31-day months, 365- vs 366-day years) or a number of minutes."""
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        return float(answer), float(answer)
    found = [_timedelta(a) for a in _TIMEDELTA.findall(str(answer))]
    if not found:
        d = parse_duration(str(answer))
        if d is None:
            raise ValueError(f"unreadable answer {str(answer)[:60]!r}")
        return d
    return min(found), max(found)


def graph_structure(question: str) -> tuple[list[float], list[float], list[tuple[int, int]]]:
    """(durations low, durations high, edges) in minutes from a Graph-representation question: its two Python dict
    literals. Low and high differ only for months and years."""
    dicts = re.findall(r"\{[^{}]*\}", question)
    if len(dicts) < 2:
        raise ValueError("graph: expected an adjacency dict and a label dict")
    adj, labels = ast.literal_eval(dicts[0]), ast.literal_eval(dicts[1])
    steps = sorted((k for k in adj if k not in ("START", "END")), key=int)
    index = {k: i for i, k in enumerate(steps, 1)}
    lows, highs = [], []
    for k in steps:
        if k not in labels:
            raise ValueError(f"graph: node {k} has no duration label")
        d = parse_duration(str(labels[k]))
        if d is None:
            raise ValueError(f"graph: node {k}: unreadable duration {labels[k]!r}")
        lows.append(d[0])
        highs.append(d[1])
    edges = [(index[a], index[b]) for a in steps for b in adj[a] if b not in ("START", "END")]
    return lows, highs, edges


def code_structure(question: str) -> dict[str, Any]:
    """The input a Code-representation question shows: ``{"adj": {id: [(id, weight), ...]}, "source", "target"}``
    from its python blocks' literal assignments (an adjacency dict, ``source = ...``, ``target = ...``), read with
    ``ast.literal_eval`` (never executed)."""
    found: dict[str, Any] = {}
    blocks = re.findall(r"```(?:python)?\n(.*?)```", question, re.DOTALL) or [question]
    for block in blocks:
        try:
            tree = ast.parse(block)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                try:
                    found[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    continue
    adj = next((v for v in found.values() if isinstance(v, dict) and v and all(isinstance(e, (list, tuple))
                for e in v.values())), None)
    if adj is None or "source" not in found or "target" not in found:
        raise ValueError("code: no adjacency dict with source and target in the question")
    try:
        adj = {u: [(v, float(w)) for v, w in es] for u, es in adj.items()}
    except (TypeError, ValueError):
        raise ValueError("code: the adjacency lists must hold (node, weight) pairs") from None
    return {"adj": adj, "source": found["source"], "target": found["target"]}


def code_longest(adj: dict[Any, list[tuple[Any, float]]], source: Any, target: Any) -> dict[Any, float]:
    """Finish time of every node reachable from ``source`` (longest path from it, networkx's topological order):
    what the shown longest-path program computes on this input."""
    g = nx.DiGraph([(u, v) for u in adj for v, _ in adj[u]])
    if source not in g or target not in g:
        raise ValueError("code: source or target is not in the graph")
    if not nx.is_directed_acyclic_graph(g):
        raise ValueError("code: the graph has a cycle")
    dist: dict[Any, float] = {source: 0.0}
    for u in nx.topological_sort(g):
        if u not in dist:
            continue
        for v, w in adj.get(u, []):
            dist[v] = max(dist.get(v, float("-inf")), dist[u] + w)
    if target not in dist:
        raise ValueError("code: the target is not reachable from the source")
    return dist


def code_steps(adj: dict[Any, list[tuple[Any, float]]], source: Any, target: Any) -> list[str]:
    """The Code chain of thought over the question's own node ids: ``dist[711] = max(10, 25) + 15 = 40``."""
    dist = code_longest(adj, source, target)
    preds: dict[Any, list[tuple[Any, float]]] = {}
    for u, es in adj.items():
        if u in dist:
            for v, w in es:
                preds.setdefault(v, []).append((u, w))
    g = nx.DiGraph([(u, v) for u in adj for v, _ in adj[u]])
    out = []
    for v in nx.topological_sort(g):
        if v == source or v not in dist:
            continue
        ps = sorted(preds[v], key=lambda pw: (pw[0] == source, str(pw[0])))
        weights = {w for _, w in ps}
        if len(weights) == 1:
            w = weights.pop()
            inner = [_show(dist[p]) for p, _ in ps]
            start = f"max({', '.join(inner)})" if len(inner) > 1 else inner[0]
            expr = start if w == 0 else f"{start} + {_show(w)}"
        else:
            expr = "max(" + ", ".join(f"{_show(dist[p])} + {_show(w)}" for p, w in ps) + ")"
        out.append(f"dist[{v}] = {expr} = {_show(dist[v])}")
    return out


def _span(lo: float, hi: float) -> str:
    """A value or interval for a message (rounded to 6 decimals: float noise would only hide the difference)."""
    lo, hi = round(lo, 6), round(hi, 6)
    return _show(lo) if lo == hi else f"{_show(lo)}-{_show(hi)}"


# ------------------------------------------------------------------ analogy analysis
def wl_features(durations: list[float], edges: list[tuple[int, int]], iterations: int = 3) -> Counter:
    """Weisfeiler-Lehman subtree features of the instance's DAG (structure only; node labels START/END/step)."""
    g = dag([int(d) if float(d).is_integer() else d for d in durations], edges)
    for v in g.nodes:
        g.nodes[v]["label"] = str(v) if v in ("START", "END") else "step"
    with warnings.catch_warnings():  # networkx >= 3.5 warns that directed hashes changed (a bug fix); we
        warnings.simplefilter("ignore", UserWarning)  # compare hashes within one run only
        hashes = nx.weisfeiler_lehman_subgraph_hashes(g, node_attr="label", iterations=iterations)
    feats: Counter = Counter(g.nodes[v]["label"] for v in g.nodes)
    for hs in hashes.values():
        feats.update(hs)
    return feats


def wl_kernel(a: Counter, b: Counter) -> float:
    """Normalised WL subtree kernel: <a, b> / sqrt(<a, a> <b, b>)."""
    dot = sum(v * b.get(k, 0) for k, v in a.items())
    na = sum(v * v for v in a.values())
    nb = sum(v * v for v in b.values())
    return dot / (na * nb) ** 0.5 if na and nb else 0.0


def histogram_jaccard(a: list[float], b: list[float]) -> float:
    """Weighted Jaccard of two duration multisets: sum of minimum counts / sum of maximum counts."""
    ca, cb = Counter(a), Counter(b)
    keys = set(ca) | set(cb)
    hi = sum(max(ca[k], cb[k]) for k in keys)
    return sum(min(ca[k], cb[k]) for k in keys) / hi if hi else 0.0


def similarity(u: Unit, v: Unit, fa: Counter | None = None, fb: Counter | None = None) -> float:
    """The paper's analogy similarity: 0.4 x duration-histogram Jaccard + 0.6 x WL kernel (3 iterations)."""
    fa = fa if fa is not None else wl_features(u.meta["durations"], u.meta["edges"])
    fb = fb if fb is not None else wl_features(v.meta["durations"], v.meta["edges"])
    return 0.4 * histogram_jaccard(u.meta["durations"], v.meta["durations"]) + 0.6 * wl_kernel(fa, fb)


def analogy_table(test: list[Unit], train: list[Unit], threshold: float) -> dict[str, dict[str, float]]:
    """Per test unit: similarity to its closest training unit, and how many training units are related
    (similarity >= threshold)."""
    ftr = [wl_features(t.meta["durations"], t.meta["edges"]) for t in train]
    out = {}
    for u in test:
        fu = wl_features(u.meta["durations"], u.meta["edges"])
        sims = [similarity(u, t, fu, f) for t, f in zip(train, ftr)]
        out[u.id] = {"closest": max(sims) if sims else 0.0, "related": sum(s >= threshold for s in sims)}
    return out
