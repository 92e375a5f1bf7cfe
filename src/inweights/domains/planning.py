"""Scheduling problems across representations (docs/papers.md §3, AsyncHow-style).

An instance is a task made of steps with durations and precedence constraints (a DAG on the steps). With
unlimited parallelism the least total time is the longest START -> END path, which ``networkx`` computes
(``dag_longest_path_length``); nothing here re-implements it. Each instance is rendered isomorphically as

- ``nl``: "Step 1. Boil the water (10 minutes)" lines and "Step 1 must precede step 3." constraints, in
  several phrasings, some durations written in hours (the reader converts);
- ``graph``: an adjacency dict with START/END nodes and a duration dict (AsyncHow's Graph layout);
- ``code``: a networkx longest-path function and its input, a weighted adjacency list over random
  integer node ids (AsyncHow's Code layout); the rendered program is run to check the answer (tests).

A unit is one instance; its "inputs" are the representations it is shown in (``train`` instances in
``representations``, ``test`` instances probed in ``eval_representations``). Answers are minutes, in
``<answer>`` tags; the chain of thought gives each step's finish time in topological order.
``load_asynchow`` (``domains/asynchow.py``) reads the released NL / Graph / Code JSONL files (aligned by line) into the
same units; the DAG semantics, duration parsing and instance similarity are in ``domains/planning_graphs.py``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any, ClassVar, Literal

import networkx as nx
from pydantic import Field, model_validator

from inweights.core.errors import UserError
from inweights.core.schema import Strict
from inweights.core.seeds import derive_seed
from inweights.domains.asynchow import load_asynchow
from inweights.domains.base import Domain, Unit, register_domain
from inweights.domains.capabilities import FreshUnits, ReleaseLayout, Representations
from inweights.domains.planning_graphs import _show, analogy_table, code_steps, dag, make_unit, parse_duration

Rep = Literal["nl", "template", "graph", "code"]
# what the released AsyncHow files hold (``asynchow_{natural,graph,python}_{split}.jsonl``)
RELEASED_REPRESENTATIONS = ("nl", "graph", "code")


class PlanningConfig(Strict):
    """Scheduling problems (docs/papers.md §3): steps with durations and precedence constraints (a DAG); the answer
    is the least total time with unlimited parallelism (the longest START->END path, in minutes). Every
    instance is rendered isomorphically as natural language, a graph, and code, with the same answer."""

    n_train: int = Field(300, gt=0)
    n_test: int = Field(100, gt=0)
    # validation instances (group ``val``, probed like test ones, in eval_representations): for choosing settings
    # (learning rates, KL weights) without looking at test numbers; drawn after train and test, never repeating them
    n_val: int = Field(0, ge=0)
    min_steps: int = Field(3, ge=2)
    max_steps: int = Field(6, ge=2)
    edge_prob: float = Field(0.4, ge=0, le=1)  # chance of a precedence constraint between two steps i < j
    durations: list[int] = Field(default_factory=lambda: [5, 10, 15, 20, 25, 30, 40, 45, 60, 90, 120],
                                 min_length=2)  # minutes
    hours_prob: float = Field(0.3, ge=0, le=1)  # NL: a whole/half-hour duration is written in hours
    # representations the training views may use, and the ones probed on test instances
    # ``template``: templated English in graph order (one fixed phrasing, minutes only, no activity names), the
    # middle rung of the representation ladder graph -> template -> nl
    representations: list[Rep] = Field(default_factory=lambda: ["nl", "graph", "code"], min_length=1)
    eval_representations: list[Rep] = Field(default_factory=lambda: ["nl"], min_length=1)
    # the preparation stage trains on fresh instances in these representations (not the experiment's)
    prepare_representations: list[Rep] = Field(default_factory=lambda: ["code"], min_length=1)
    # relative weight of each of ``prepare_representations`` (unnamed ones weigh 1): e.g. {nl: 0.1, graph: 1,
    # code: 1} shows NL in about one preparation example in 21 -- a base strong in symbols and weaker in language
    # (issue 42). With shares, each preparation instance is drawn in one representation, and the gate measures
    # the same mixture; without them every instance may be shown in any of them, evenly.
    prepare_shares: dict[Rep, float] = Field(default_factory=dict)
    # the chain of thought: ``finish`` gives each step's finish time in topological order ("Step 3 ends at
    # max(10, 25) + 15 = 40"); ``rewrite`` first rewrites the problem in one graph form whatever it was shown in
    # ("Durations: 1=10 2=25 3=15", "Edges: 1>3 2>3") and solves from that, each step with the steps it waits for:
    # "Step 3 after 1 2: max(10, 25) + 15 = 40". Reading the problem and solving it are then separate, visible parts
    # of the trace.
    # The code rendering always traces its own node ids.
    trace: Literal["finish", "rewrite"] = "finish"
    # AsyncHow-style released files instead of the generator: a folder holding the NL / Graph / Code JSON
    asynchow_dir: str | None = None
    # analogy analysis: a training instance is "related" to a test one when their similarity >= this
    related_threshold: float = Field(0.8, gt=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> PlanningConfig:
        if self.max_steps < self.min_steps:
            raise ValueError("max_steps must be >= min_steps")
        if any(d <= 0 for d in self.durations):
            raise ValueError("durations must be positive minutes")
        if stray := [r for r in self.prepare_shares if r not in self.prepare_representations]:
            raise ValueError(f"prepare_shares names {', '.join(repr(r) for r in stray)}, which prepare_representations "
                             f"({', '.join(self.prepare_representations)}) does not list")
        if any(w < 0 for w in self.prepare_shares.values()) or not any(
                self.prepare_shares.get(r, 1.0) > 0 for r in self.prepare_representations):
            raise ValueError("prepare_shares must be >= 0, with at least one representation above 0")
        if self.asynchow_dir:  # the released files hold three representations; a fourth cannot be read from them
            for key in ("representations", "eval_representations"):
                lacking = [r for r in getattr(self, key) if r not in RELEASED_REPRESENTATIONS]
                if lacking:
                    raise ValueError(f"{key} names {', '.join(repr(r) for r in lacking)}, which the released "
                                     f"AsyncHow files (asynchow_dir) do not have (they hold "
                                     f"{', '.join(RELEASED_REPRESENTATIONS)}): remove it, with any recipe that trains "
                                     f"on it (ladder: template), or generate the instances (no asynchow_dir)")
        return self


THEMES = {
    "bake a cake": ["Preheat the oven", "Weigh the flour", "Beat the eggs", "Melt the butter", "Mix the batter",
                    "Grease the tin", "Bake the cake", "Make the icing", "Let the cake cool", "Ice the cake"],
    "paint a room": ["Move the furniture", "Cover the floor", "Fill the cracks", "Sand the walls", "Tape the edges",
                     "Buy the paint", "Paint the ceiling", "Paint the walls", "Let the paint dry", "Clean the brushes"],
    "plant a garden": ["Clear the weeds", "Dig the beds", "Buy the seeds", "Add compost", "Rake the soil",
                       "Sow the seeds", "Water the beds", "Set up a fence", "Label the rows", "Spread mulch"],
    "host a dinner": ["Write the menu", "Buy the food", "Clean the house", "Set the table", "Cook the soup",
                      "Roast the meat", "Chill the drinks", "Make a dessert", "Light the candles", "Greet the guests"],
    "move house": ["Book a van", "Pack the books", "Pack the kitchen", "Wrap the mirrors", "Load the van",
                   "Drive to the new house", "Unload the van", "Clean the old house", "Return the keys",
                   "Unpack the boxes"],
    "repair a bike": ["Remove the wheel", "Find the puncture", "Patch the tube", "Clean the chain", "Oil the chain",
                      "Adjust the brakes", "Refit the wheel", "Pump the tyres", "Check the gears", "Test ride"],
}

NL_HEADERS = [
    "To {goal}, here are the steps and the times needed for each step.",
    "Here is how to {goal}. Each step and how long it takes:",
    "You want to {goal}. These are the steps, with their durations.",
    "Steps to {goal} (with the time each one takes):",
]
NL_CONSTRAINT_HEADERS = [
    "These ordering constraints need to be obeyed when executing above steps:",
    "The steps must respect this order:",
    "Ordering rules:",
]
NL_CONSTRAINTS = [
    "Step {a} must precede step {b}.",
    "Step {b} can only start after step {a} is finished.",
    "Finish step {a} before starting step {b}.",
    "Step {b} depends on step {a}.",
]
NL_QUESTIONS = [
    ("Question: Assume that you need to execute all the steps to {goal} and that infinite resources are available. "
    "What is the shortest possible time to {goal}, in minutes?"),
    ("Question: With as many helpers as you like, working in parallel, how many minutes does it take at least to "
    "{goal}?"),
    ("Question: If steps can run at the same time whenever the order allows, what is the least total time in "
    "minutes to {goal}?"),
]
ANSWER_HINT = "Encode your final answer in <answer></answer> (e.g. <answer>15</answer>)."
TEMPLATE_QUESTION = ("Question: If steps run in parallel whenever the order allows, what is the least total time in "
                     "minutes? " + ANSWER_HINT)
GRAPH_TEXT = (
    "You have a graph whose adjacency list representation is as follows:\n{adj}\n\n"
    "The graph is a directed graph, and the nodes are labelled as follows (START and END are special nodes "
    "which take no time to traverse):\n{labels}\n\n"
    "Suppose you have to traverse from node 'START' to node 'END', how long does the longest path take, in "
    "minutes? " + ANSWER_HINT
)
CODE_FUNCTION = '''import networkx as nx

def longest_path(adj, source, target):
    graph = nx.DiGraph([(u, v) for u in adj for v, _ in adj[u]])
    dist = {source: 0}
    for u in nx.topological_sort(graph):
        for v, w in adj[u]:
            dist[v] = max(dist.get(v, 0), dist[u] + w)
    return dist[target]'''
CODE_TEXT = (
    "This python function finds the longest path length from source to target in a directed acyclic graph "
    "given as a weighted adjacency list.\n\n"
    "```python\n" + CODE_FUNCTION + "\n```\nSuppose your inputs are as follows:\n```python\n"
    "adj_list = {adj}\nsource = {source}\ntarget = {target}\n```\n"
    "What does longest_path(adj_list, source, target) return? "
    "Encode the output of the function in <answer></answer> (e.g. <answer>15</answer>)."
)

# draws in a row without a new instance before the settings are declared too narrow (distinct instances are drawn
# at random; a narrow space makes duplicates, and an exhausted one would otherwise loop for ever)
MAX_MISSES = 2000


def instance_pool(signature: str) -> str:
    """'experiment' or 'prepare': a fixed split of all instances by a hash of their structure."""
    return "prepare" if hashlib.sha256(signature.encode()).digest()[0] % 2 else "experiment"


def fmt_minutes(m: float, rng: random.Random, hours_prob: float) -> str:
    """A duration as NL writes it: minutes, or hours when it is a whole or half hour (sometimes)."""
    if m >= 60 and m % 30 == 0 and rng.random() < hours_prob:
        h = m / 60
        hs = f"{h:g}"
        return f"{hs} hour" if h == 1 else f"{hs} hours"
    return rng.choice([f"{m:g} minutes", f"{m:g} min"])


def rewrite_steps(durations: list[float], g: nx.DiGraph) -> list[str]:
    """The ``rewrite`` chain of thought: the problem in one graph form — the durations, the precedence edges in the
    order both NL and the graph list them (by first step, then second) — then each step with the steps it waits for
    (read off the edge line), in topological order (ties by number), each line closing with its finish time."""
    out = ["Durations: " + " ".join(f"{i}={_show(d)}" for i, d in enumerate(durations, 1)),
           "Edges: " + (" ".join(f"{a}>{b}" for a, b in sorted((a, b) for a, b in g.edges
                                                             if a != "START" and b != "END")) or "none")]
    finish: dict[Any, float] = {"START": 0}
    order = [v for v in nx.lexicographical_topological_sort(g, key=lambda v: (v == "END", str(v).zfill(6)))
             if v != "START"]
    for v in order:
        preds = sorted(g.predecessors(v), key=lambda p: (p == "START", str(p).zfill(6)))
        before = [finish[p] for p in preds]
        start = "max(" + ", ".join(_show(b) for b in before) + ")" if len(before) > 1 else _show(before[0])
        names = " ".join(str(p) for p in preds)
        if v == "END":
            finish[v] = max(before)
            out.append(f"END after {names}: {start}" + (f" = {_show(finish[v])}" if len(before) > 1 else ""))
        else:
            dur = durations[v - 1]
            finish[v] = max(before) + dur
            out.append(f"Step {v} after {names}: {start} + {_show(dur)} = {_show(finish[v])}")
    return out


@register_domain
class PlanningDomain(Domain, FreshUnits, Representations, ReleaseLayout):
    name = "planning"
    config_class = PlanningConfig
    prepared_base = "configs/prepare_planning.yaml"
    unit_noun = "instances"
    groups = ("train", "test", "val")
    eval_groups = ("test",)
    gate_format = "cot"
    answer_template = "<answer>{}</answer>"
    decl_templates: ClassVar[list[str]] = []  # no declarative view: the instance is the whole prompt
    all_inputs = ("nl", "template", "graph", "code")

    def __init__(self, cfg, seed: int):
        self.cfg, self.seed = cfg, seed

    # ------------------------------------------------------------------ instances
    def random_instance(self, rng: random.Random) -> dict[str, Any]:
        c = self.cfg
        n = rng.randint(c.min_steps, c.max_steps)
        goal = rng.choice(sorted(THEMES))
        acts = rng.sample(THEMES[goal], n)
        durations = [rng.choice(c.durations) for _ in range(n)]
        edges = [(a, b) for a in range(1, n + 1) for b in range(a + 1, n + 1) if rng.random() < c.edge_prob]
        ids = rng.sample(range(10, 1000), n + 2)  # code: random integer node ids (the last two: source, target)
        return {"goal": goal, "activities": acts, "durations": durations, "edges": edges, "ids": ids}

    make_unit = staticmethod(make_unit)

    @staticmethod
    def signature(unit: Unit) -> str:
        m = unit.meta
        return json.dumps([m["durations"], sorted(map(list, m["edges"]))])

    def build(self) -> list[Unit]:
        c = self.cfg
        if c.asynchow_dir:
            return load_asynchow(c.asynchow_dir, tuple(c.representations), tuple(c.eval_representations))
        rng = random.Random(derive_seed(self.seed, "planning"))
        seen: set[str] = set()
        units = []
        for group, n, inputs in (("train", c.n_train, tuple(c.representations)),
                                 ("test", c.n_test, tuple(c.eval_representations)),
                                 ("val", c.n_val, tuple(c.eval_representations))):
            made, misses = 0, 0
            while made < n:
                if misses >= MAX_MISSES:
                    raise UserError(f"domain.planning: only {made} distinct {group} instances found ({n} asked; "
                                    f"{MAX_MISSES} draws in a row gave nothing new): too few distinct problems with "
                                    f"these settings; lower n_train/n_test, or allow more steps (max_steps) or "
                                    f"durations")
                misses += 1
                inst = self.random_instance(rng)
                u = self.make_unit(f"plan-{group}-{made}", group, inst, inputs)
                sig = self.signature(u)
                if sig in seen or instance_pool(sig) != "experiment":  # a test instance never repeats a training one (nor a training one itself)
                    continue
                seen.add(sig)
                units.append(u)
                made, misses = made + 1, 0
        return units

    def fresh_unit(self, rng: random.Random, pool: str = "prepare", taken: set[str] | None = None) -> Unit:
        """A preparation instance (shown in ``prepare_representations``). Instances are split into two
        disjoint pools by a hash of their structure (durations and constraints): experiments draw only from
        one, preparation only from the other, so a prepared base never saw a test instance whatever seeds
        the two use."""
        reps = tuple(self.cfg.prepare_representations)
        for _ in range(MAX_MISSES):
            inst = self.random_instance(rng)
            shown = reps
            if self.cfg.prepare_shares:  # one representation per instance, drawn by its share
                shown = tuple(rng.choices(reps, [self.cfg.prepare_shares.get(r, 1.0) for r in reps]))
            u = self.make_unit(f"prep-{rng.getrandbits(32):08x}", "prepare", inst, shown)
            if instance_pool(self.signature(u)) == "prepare":
                return u
        raise UserError("domain.planning: no preparation instance found; allow more steps (max_steps) or durations")

    # ------------------------------------------------------------------ renderings
    def instruction_text(self, unit: Unit) -> str:
        return ""  # the instance is the whole prompt; there is no separate instruction

    def question(self, unit: Unit, x: str, rng: random.Random) -> str:
        m = unit.meta
        if "texts" in m:  # loaded from released files: shown verbatim
            if x not in m["texts"]:
                raise UserError(f"planning: instance {unit.id} was read from the released files without its '{x}' "
                                f"representation; add it to domain.planning.representations / eval_representations")
            return m["texts"][x]
        if x == "nl":
            return self.render_nl(m, rng)
        if x == "template":
            return self.render_template(m)
        if x == "graph":
            return self.render_graph(m)
        if x == "code":
            return self.render_code(m)
        raise UserError(f"planning: unknown representation '{x}' (nl, template, graph, code)")

    @staticmethod
    def render_template(m: dict[str, Any]) -> str:
        """Templated English in graph order: one phrasing, durations in minutes, steps by number only."""
        lines = [f"Step {i} takes {_show(d)} minutes." for i, d in enumerate(m["durations"], 1)]
        lines += [f"Step {a} comes before step {b}." for a, b in m["edges"]]
        return "\n".join([*lines, "", TEMPLATE_QUESTION])

    def render_nl(self, m: dict[str, Any], rng: random.Random) -> str:
        lines = [rng.choice(NL_HEADERS).format(goal=m["goal"])]
        for i, (act, d) in enumerate(zip(m["activities"], m["durations"]), 1):
            lines.append(f"Step {i}. {act} ({fmt_minutes(d, rng, self.cfg.hours_prob)})")
        if m["edges"]:
            lines.append("")
            lines.append(rng.choice(NL_CONSTRAINT_HEADERS))
            tmpl = rng.choice(NL_CONSTRAINTS)
            lines += [tmpl.format(a=a, b=b) for a, b in m["edges"]]
        lines.append("")
        lines.append(rng.choice(NL_QUESTIONS).format(goal=m["goal"]) + " " + ANSWER_HINT)
        return "\n".join(lines)

    @staticmethod
    def render_graph(m: dict[str, Any]) -> str:
        g = dag(m["durations"], m["edges"])
        adj = {str(v): [str(w) for w in sorted(g.successors(v), key=str)] for v in sorted(g.nodes, key=str)}
        labels = {str(i): f"{d} minutes" for i, d in enumerate(m["durations"], 1)}
        return GRAPH_TEXT.format(adj=adj, labels=labels)

    @staticmethod
    def code_input(m: dict[str, Any]) -> tuple[dict[int, list[tuple[int, float]]], int, int]:
        """The code rendering's input: adjacency over random integer ids, edge weight = the duration of
        the step it enters (edges into the target weigh 0)."""
        g = dag(m["durations"], m["edges"])
        n = len(m["durations"])
        ids = {i: m["ids"][i - 1] for i in range(1, n + 1)}
        ids["START"], ids["END"] = m["ids"][n], m["ids"][n + 1]
        adj = {ids[v]: [(ids[w], float(g[v][w]["weight"])) for w in sorted(g.successors(v), key=str)]
               for v in sorted(g.nodes, key=str)}
        return adj, ids["START"], ids["END"]

    def render_code(self, m: dict[str, Any]) -> str:
        adj, s, t = self.code_input(m)
        # the function's own braces are not placeholders: fill the three fields by name
        return CODE_TEXT.replace("{adj}", str(adj)).replace("{source}", str(s)).replace("{target}", str(t))

    # ------------------------------------------------------------------ answers
    def release_files(self, units: list[Unit], seed: int, execution) -> dict[str, list[dict[str, Any]]]:
        """Instances in the AsyncHow release layout (``asynchow_{natural,graph,python}_{train,test}.jsonl``,
        records ``{"question", "answer"}`` aligned by line; NL/Graph answers as timedelta lists, Code answers as
        minutes), which ``planning.asynchow_dir`` reads back, plus chat-format SFT files with the chain of thought
        (``chat/{split}_{representation}.jsonl``). Instances read from released files are written in the
        representations they were read in (the config's), and a split with no instance (a release of test files
        only) is not written."""
        files: dict[str, list[dict[str, Any]]] = {}
        names = {"nl": "natural", "graph": "graph", "code": "python"}
        for split in ("train", "test"):
            chosen = [u for u in units if u.group == split]
            if not chosen:
                continue
            rng = random.Random(derive_seed(seed, "export", split))
            for x, fname in names.items():  # the released layout has no templated rendering
                if any(x not in u.meta.get("texts", {x: None}) for u in chosen):
                    continue  # released instances read without this representation
                recs = [execution(self, u, x, "cot", rng) for u in chosen]
                released = []
                for u, r in zip(chosen, recs):
                    lo, hi = self.gold(u, x)  # an interval for months and years
                    answer: Any = float(lo) if x == "code" else \
                        f"[datetime.timedelta(seconds={_show(lo * 60)}), datetime.timedelta(seconds={_show(hi * 60)})]"
                    released.append({"question": r["prompt"][0]["content"], "answer": answer})
                files[f"asynchow_{fname}_{split}.jsonl"] = released
                files[f"chat/{split}_{x}.jsonl"] = recs
        return files

    def why_empty(self, group: str) -> str:
        d = self.cfg.asynchow_dir
        if d and group in ("train", "val"):
            what = "training files (asynchow_{natural,graph,python}_train.jsonl)" if group == "train" else \
                "validation split"
            return (f"in domain.planning.asynchow_dir {d}: it holds no {what}; the released test files alone can be "
                    f"evaluated (inweights eval) and exported (inweights data), not trained on")
        return super().why_empty(group)

    def summary_extras(self, units: list[Unit]) -> dict[str, Any]:
        """How near each probed (test or validation) instance is to the training ones (the report's analogy table),
        and each one's reference chain of thought per probed representation (the report's first-wrong-line table:
        does a wrong answer come from reading the problem or from solving it)."""
        probed = [u for u in units if u.group in ("test", "val")]
        traces = {u.id: {x: self.steps(u, x) for x in u.test_inputs} for u in probed if "texts" not in u.meta}
        return {"analogy": analogy_table(probed, [u for u in units if u.group == "train"], self.cfg.related_threshold),
                "traces": traces}

    def steps(self, unit: Unit, x: str) -> list[str]:
        """Each step's finish time in topological order, then the end: ``Step 3 ends at max(10, 25) + 15 = 40``.
        The code rendering names nodes by their ids (``dist[711] = ...``)."""
        m = unit.meta
        if x == "code" and "code" in m:  # a released Code question: trace the program's own input, its own ids
            return code_steps(m["code"]["adj"], m["code"]["source"], m["code"]["target"])
        g = dag(m["durations"], m["edges"])
        if x != "code" and self.cfg.trace == "rewrite":
            return rewrite_steps(m["durations"], g)
        n = len(m["durations"])
        ids = None
        if x == "code":
            ids = {i: m["ids"][i - 1] for i in range(1, n + 1)}
            ids["START"], ids["END"] = m["ids"][n], m["ids"][n + 1]
        finish: dict[Any, float] = {"START": 0}
        out = []
        for v in nx.topological_sort(g):
            if v == "START":
                continue
            preds = sorted(g.predecessors(v), key=lambda p: (p == "START", str(p)))
            before = [finish[p] for p in preds]
            start = "max(" + ", ".join(_show(b) for b in before) + ")" if len(before) > 1 else _show(before[0])
            dur = 0 if v == "END" else m["durations"][v - 1]
            finish[v] = max(before) + dur
            if v == "END":
                name = f"dist[{ids['END']}]" if ids else "END"
                out.append(f"{name} = {start} = {_show(finish[v])}")
            else:
                name = f"dist[{ids[v]}]" if ids else f"Step {v} ends at"
                sep = " =" if ids else ""
                out.append(f"{name}{sep} {start} + {_show(dur)} = {_show(finish[v])}")
        return out

    @staticmethod
    def gold(unit: Unit, x: str) -> tuple[float, float]:
        """(low, high) minutes a right answer may take: one value, or an interval when durations are in months
        or years (28-31 days, 365-366 days); a released Code question's gold is what its program returns."""
        m = unit.meta
        if x == "code" and "code" in m:
            return m["code"]["answer"], m["code"]["answer"]
        return m["answer"], m.get("answer_high", m["answer"])

    def answer_text(self, unit: Unit, x: str) -> str:
        return _show(self.gold(unit, x)[0])

    @staticmethod
    def extract_answer(text: str) -> str | None:
        """The last ``<answer>...</answer>`` (a missing closing tag at the end of the text is tolerated)."""
        found = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
        if not found:
            tail = re.search(r"<answer>([^<]*)$", text)
            return tail.group(1).strip() or None if tail else None
        return found[-1].strip() or None

    def score(self, unit: Unit, x: str, prediction: str | None) -> bool:
        """Right when the answer's reading meets the gold interval (relative tolerance 1e-6)."""
        got = parse_duration(prediction)
        if got is None:
            return False
        lo, hi = self.gold(unit, x)
        tol = 1e-6 * max(1.0, abs(hi))
        return got[0] <= hi + tol and got[1] >= lo - tol

    def recall(self, unit: Unit, output: str) -> float | None:
        return None

    def chance(self, unit: Unit) -> float:
        return 0.0


