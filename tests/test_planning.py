"""Planning domain: isomorphic renderings with one answer from networkx, disjoint splits, the AsyncHow
loader, the analogy similarity, and the two-stage recipes end to end."""

import json
import random
import re

import pytest

from inweights import views
from inweights.cli import main
from inweights.config import ExperimentConfig, PlanningConfig
from inweights.core import rejects
from inweights.core.errors import UserError
from inweights.domains.asynchow import load_asynchow
from inweights.domains.planning import PlanningDomain, instance_pool
from inweights.domains.planning_graphs import (
    analogy_table,
    graph_structure,
    histogram_jaccard,
    longest_path,
    parse_duration,
    parse_minutes,
    similarity,
    timedelta_minutes,
    wl_features,
    wl_kernel,
)
from inweights.regimes.experiment.pbb import stages_for


@pytest.fixture(scope="module")
def domain():
    return PlanningDomain(PlanningConfig(n_train=60, n_test=30), 0)


@pytest.fixture(scope="module")
def units(domain):
    return domain.build()


def _run_code(prompt: str):
    """Execute the code rendering (our own generated program) and return its result."""
    blocks = re.findall(r"```python\n(.*?)```", prompt, re.DOTALL)
    ns: dict = {}
    exec(blocks[0] + "\n" + blocks[1] + "\nresult = longest_path(adj_list, source, target)", ns)  # noqa: S102
    return ns["result"]


def test_same_seed_same_bytes_and_splits_disjoint(domain, units):
    again = PlanningDomain(PlanningConfig(n_train=60, n_test=30), 0).build()
    assert [u.meta for u in again] == [u.meta for u in units]
    sigs = [domain.signature(u) for u in units]
    assert len(set(sigs)) == len(sigs)  # no test instance repeats a training one
    assert all(instance_pool(s) == "experiment" for s in sigs)
    rng = random.Random(3)
    prep = [domain.fresh_unit(rng) for _ in range(200)]
    assert all(instance_pool(domain.signature(u)) == "prepare" for u in prep)
    assert not {domain.signature(u) for u in prep} & set(sigs)


def test_validation_instances_are_new_and_leave_train_and_test_as_they_were(domain, units):
    with_val = PlanningDomain(PlanningConfig(n_train=60, n_test=30, n_val=20), 0).build()
    assert [u.meta for u in with_val if u.group != "val"] == [u.meta for u in units]
    val = [u for u in with_val if u.group == "val"]
    assert len(val) == 20 and all(u.test_inputs == ("nl",) and not u.train_inputs for u in val)
    assert not {domain.signature(u) for u in val} & {domain.signature(u) for u in units}


def test_three_renderings_are_isomorphic_with_one_answer(domain, units):
    for u in units[:40]:
        rng = random.Random(u.id)
        ans = u.meta["answer"]
        assert ans == longest_path(u.meta["durations"], u.meta["edges"])
        code = views.execution(domain, u, "code", "cot", rng)["prompt"][0]["content"]
        assert _run_code(code) == ans  # the rendered program, run, gives the answer
        graph = views.execution(domain, u, "graph", "cot", rng)["prompt"][0]["content"]
        durations, highs, edges = graph_structure(graph)
        assert durations == highs == u.meta["durations"] and sorted(edges) == sorted(u.meta["edges"])
        nl = views.execution(domain, u, "nl", "cot", rng)["prompt"][0]["content"]
        shown = [parse_minutes(m) for m in re.findall(r"^Step \d+\. .*\(([^)]*)\)$", nl, re.MULTILINE)]
        assert shown == u.meta["durations"]  # hours converted back give the same minutes
        assert len(re.findall(r"step \d+", nl.split("\n\n")[1], re.IGNORECASE)) == 2 * len(u.meta["edges"]) \
            if u.meta["edges"] else True


def test_chain_of_thought_ends_in_the_answer(domain, units):
    for u in units[:40]:
        for x in ("nl", "graph", "code"):
            rec = views.execution(domain, u, x, "cot", random.Random(0))
            target = rec["messages"][1]["content"]
            assert target.endswith(f"<answer>{u.meta['answer']}</answer>")
            last = target.splitlines()[-2]
            assert last.endswith(f"= {u.meta['answer']}")
            assert domain.score(u, x, views.extract(domain, target))


def test_rewrite_trace_reads_every_rendering_into_one_graph_form():
    """trace: rewrite. NL, templated English and the graph give the same chain of thought: the durations in minutes
    (hours converted), each step with exactly the steps it waits for, finish times from networkx's graph; the code
    rendering keeps its own node ids."""
    d = PlanningDomain(PlanningConfig(n_train=60, n_test=30, trace="rewrite", hours_prob=1.0), 0)
    from inweights.domains.planning_graphs import dag

    for u in d.build()[:40]:
        m = u.meta
        cots = {x: views.execution(d, u, x, "cot", random.Random(1))["messages"][1]["content"]
                for x in ("nl", "template", "graph", "code")}
        assert cots["nl"] == cots["template"] == cots["graph"] != cots["code"]
        assert cots["code"].startswith("dist[")
        lines = cots["graph"].splitlines()
        assert lines[0] == "Durations: " + " ".join(f"{i}={v}" for i, v in enumerate(m["durations"], 1))
        assert lines[1] == "Edges: " + (" ".join(f"{a}>{b}" for a, b in m["edges"]) or "none")
        g = dag(m["durations"], m["edges"])
        for line in lines[2:-2]:
            node, preds = re.match(r"Step (\d+) after ([\w ]+):", line).groups()
            assert preds.split() == [str(p) for p in sorted(g.predecessors(int(node)), key=lambda p: (p == "START", str(p)))]
        assert re.match(r"END after [\d ]+: ", lines[-2]) and lines[-2].endswith(str(m["answer"]))
        assert d.score(u, "nl", views.extract(d, cots["nl"]))
        template = views.execution(d, u, "template", "cot", random.Random(1))["prompt"][0]["content"]
        took = [int(v) for v in re.findall(r"^Step \d+ takes (\d+) minutes\.$", template, re.MULTILINE)]
        pairs = [tuple(map(int, p)) for p in re.findall(r"^Step (\d+) comes before step (\d+)\.$", template, re.MULTILINE)]
        assert took == m["durations"] and pairs == [tuple(e) for e in m["edges"]]


def test_ladder_recipe_and_a_representation_the_instances_lack(tmp_path, capsys):
    c = ExperimentConfig.model_validate({"name": "x", "domain": {"name": "planning"}, "recipes": ["ladder"],
                                         "two_stage": {"stage1_steps": 30, "stage2_steps": 50}})
    st = stages_for("ladder", c)
    assert [m.representation for s in st for m in s.mixture] == ["graph", "template", "nl"]
    assert [s.steps for s in st] == [15, 15, 50]
    cfg = tmp_path / "l.yaml"
    cfg.write_text("name: l\ndomain:\n  name: planning\n  planning: {n_train: 10, n_test: 5, representations: [nl, graph]}\n"
                   "model: {preset: tiny, prepared_base: null}\nrecipes: [ladder@sft]\n")
    assert main(["validate", str(cfg)]) == 2
    assert "template representation" in capsys.readouterr().err


def test_answer_extraction_and_units():
    d = PlanningDomain(PlanningConfig(), 0)
    assert d.extract_answer("a <answer>3</answer> then <answer> 45 </answer>") == "45"
    assert d.extract_answer("no tags") is None
    assert d.extract_answer("cut off <answer>12") == "12"
    assert parse_minutes("1.5 hours") == 90 and parse_minutes("2 h 30 min") == 150 and parse_minutes("40") == 40
    assert parse_minutes("soon") is None and parse_minutes("3 parsecs") is None
    assert timedelta_minutes("[datetime.timedelta(days=1, seconds=60), datetime.timedelta(days=1)]") == 1441
    assert parse_minutes("90 minutes (1.5 hours)") == 90  # a restatement is not added
    assert parse_duration("2 months") == (2 * 28 * 1440, 2 * 31 * 1440) and parse_minutes("1 year") is None
    assert parse_duration("1 year 2 days") == (367 * 1440, 368 * 1440)


def test_analogy_similarity():
    d = PlanningDomain(PlanningConfig(n_train=30, n_test=10), 1)
    us = d.build()
    a, b = us[0], us[1]
    assert similarity(a, a) == pytest.approx(1.0)
    assert similarity(a, b) == pytest.approx(similarity(b, a))
    fa = wl_features(a.meta["durations"], a.meta["edges"])
    assert wl_kernel(fa, fa) == pytest.approx(1.0)
    assert histogram_jaccard([10, 10, 20], [10, 20, 30]) == pytest.approx(2 / 4)
    table = analogy_table([u for u in us if u.group == "test"], [u for u in us if u.group == "train"], 0.8)
    assert len(table) == 10 and all(0 <= v["closest"] <= 1 for v in table.values())


def _write_asynchow(folder, answer="[datetime.timedelta(seconds=3000), datetime.timedelta(seconds=3000)]"):
    graph_q = ("You have a graph whose adjacency list representation is as follows:\n"
               "{'1': ['2', '3'], '2': ['END'], '3': ['END'], 'END': [], 'START': ['1']}\n\nThe nodes are labelled "
               "as follows:\n{'1': '10 minutes', '3': '40 min', '2': '1 hours'}\n\nHow long? <answer></answer>")
    # longest path: 10 + 60 = 70 minutes, unless the answer says otherwise
    for split in ("train", "test"):
        # (the test instance is not the training one: the loader notes a test question seen in training)
        for name, q, a in (("natural", "Step 1. Wake up (10 minutes) ...", answer),
                           ("graph", graph_q.replace("How long?", f"How long ({split})?"), answer),
                           ("python", ("```python\nadj_list = {1: [(2, 10)], 2: [(3, 60), (4, 40)], 3: [(5, 0)], "
                            "4: [(5, 0)]}\nsource = 1\ntarget = 5\n```"), 70.0)):
            (folder / f"asynchow_{name}_{split}.jsonl").write_text(json.dumps({"question": q, "answer": a}) + "\n")


def test_asynchow_loader_reads_the_released_layout(tmp_path):
    _write_asynchow(tmp_path, "[datetime.timedelta(seconds=4200), datetime.timedelta(seconds=4200)]")
    us = load_asynchow(tmp_path, ("nl", "graph", "code"), ("nl",))
    assert [u.group for u in us] == ["train", "test"]
    assert us[0].meta["answer"] == 70 and us[0].meta["durations"] == [10, 60, 40]
    d = PlanningDomain(PlanningConfig(asynchow_dir=str(tmp_path)), 0)
    q = views.execution(d, us[1], "nl", "direct", random.Random(0))["prompt"][0]["content"]
    assert q.startswith("Step 1. Wake up")  # shown verbatim
    # a released answer that disagrees with its own graph: kept, scored against the graph, reported with both
    _write_asynchow(tmp_path)
    with rejects.collecting() as found:
        us = load_asynchow(tmp_path, ("nl",), ("nl",))
    assert len(us) == 2 and us[0].meta["answer"] == 70
    assert found and all(i.action == "kept" and "50 min disagrees" in i.reason and "(70 min)" in i.reason
                         for i in found)
    # outside any loader policy a loader stays strict: the first issue is the error
    with pytest.raises(UserError, match="50 min disagrees"):
        load_asynchow(tmp_path, ("nl",), ("nl",))


def test_asynchow_bad_files_exit_2(tmp_path, capsys):
    (tmp_path / "asynchow_graph_train.jsonl").write_text("{not json\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: x\ndomain:\n  name: planning\n  planning: {{asynchow_dir: {tmp_path}}}\n"
                   "model: {prepared_base: null}\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("not found" in err[0] or "not valid JSON" in err[0])
    assert not (tmp_path / "run").exists()


def test_recipes_share_total_steps_and_take_an_objective_and_symbolic_suffix():
    c = ExperimentConfig.model_validate({"name": "x", "domain": {"name": "planning"},
                                         "recipes": ["two_stage", "reverse@sft", "nl_only@grpo", "mixed",
                                                     "two_stage@code", "mixed@grpo.code"],
                                         "two_stage": {"stage1_steps": 30, "stage2_steps": 50}})
    plans = {r: stages_for(r, c) for r in c.recipes}
    assert all(sum(s.steps for s in st) == 80 for st in plans.values())
    assert [m.representation for s in plans["two_stage"] for m in s.mixture] == ["graph", "nl"]
    assert [m.representation for s in plans["reverse@sft"] for m in s.mixture] == ["nl", "graph"]
    assert {s.objective for s in plans["reverse@sft"]} == {"sft"}
    assert {s.objective for s in plans["two_stage"]} == {"grpo"}
    assert [m.representation for s in plans["two_stage@code"] for m in s.mixture] == ["code", "nl"]
    assert [m.representation for s in plans["mixed@grpo.code"] for m in s.mixture] == ["code", "nl"]
    # symbolic replay: later stages keep the earlier representations at the weight; steps unchanged
    r = ExperimentConfig.model_validate({"name": "x", "domain": {"name": "planning"}, "recipes": ["two_stage"],
                                         "two_stage": {"stage1_steps": 30, "stage2_steps": 50, "replay": 0.25}})
    mix = lambda plan: [[(m.representation, m.weight) for m in s.mixture] for s in plan]
    assert mix(stages_for("two_stage", r)) == [[("graph", 1.0)], [("nl", 1.0), ("graph", 0.25)]]
    assert mix(stages_for("reverse@code", r)) == [[("nl", 1.0)], [("code", 1.0), ("nl", 0.25)]]
    assert mix(stages_for("ladder", r))[-1] == [("nl", 1.0), ("graph", 0.25), ("template", 0.25)]
    assert mix(stages_for("mixed", r)) == mix(stages_for("mixed", c)) and mix(stages_for("nl_only", r)) == [[("nl", 1.0)]]
    assert sum(s.steps for s in stages_for("two_stage", r)) == 80
    from inweights.regimes.registry import validate  # the schema, then the regime's recipe names

    for bad in ("two_stage@ppo", "two_stage@sft.sft", "mixed@graph.code"):
        with pytest.raises(UserError, match="objective"):
            validate({"name": "x", "domain": {"name": "planning"}, "recipes": [bad]})


@pytest.mark.slow
def test_two_stage_experiment_end_to_end(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("""
name: planning_e2e
seed: 0
domain:
  name: planning
  planning: {n_train: 12, n_test: 5, min_steps: 2, max_steps: 3, eval_representations: [nl, graph],
             representations: [nl, graph, template], trace: rewrite}
model:
  preset: tiny
  prepared_base: null
  tiny: {hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, vocab_size: 320,
         max_position_embeddings: 768}
train: {batch_size: 4, max_len: 768, lr: 1.0e-3, threads: 1}
two_stage: {stage1_steps: 2, stage2_steps: 2}
# dynamic sampling and an SFT warm-up that must run (a floor of 1.0 is above any starting reward)
grpo: {group_size: 2, prompts_per_step: 2, max_completion_length: 12, beta: 0.01, dynamic_sampling: true,
       max_draws: 2, sft_warmup_steps: 1, warmup_floor: 1.0, floor_probes: 4}
recipes: [two_stage@sft, two_stage@grpo, nl_only, mixed, reverse, ladder@sft]
eval: {groups: [test], modes: [in_weights], formats: [cot], max_new_tokens: 16}
""")
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["rows"]) == {"base", "two_stage@sft", "two_stage@grpo", "nl_only", "mixed", "reverse",
                                    "ladder@sft"}
    assert {"test/in_weights/cot/nl", "test/in_weights/cot/graph"} <= set(summary["rows"]["mixed"]["cells"])
    assert summary["ordering_cell"] == "test/in_weights/cot/nl"
    report = (out / "report.md").read_text()
    assert "## Analogy analysis" in report and "Measured ordering" in report and (out / "reward.png").is_file()
    assert "## GRPO stages" in report and "SFT steps" in report and summary["grpo"]
    # the rungs and the first-wrong-line table, from the run's own samples (5 test instances x 2 representations)
    assert "## Ladder" in report and summary["ladder"]["rungs"][0]["rung"] == "1. the base's asymmetry"
    assert "## Where the chain of thought first goes wrong" in report
    assert all(k["n"] == 5 for cells in summary["first_wrong"].values() for k in cells.values())
    grpo_logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                 if '"objective": "grpo"' in line]
    assert grpo_logs and all({"reward_mean", "reward_std", "kl", "completion_len", "zero_std_groups", "draws",
                              "groups_trained"} <= set(r) for r in grpo_logs)
    floors = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "grpo_floor" in line]
    assert floors and all(f["ran"] and f["steps"] == 1 and f["reward_greedy"] < 1.0 for f in floors)


def test_export_in_the_release_layout_reads_back(tmp_path):
    out = tmp_path / "data"
    args = ["data", "planning", "--out", str(out), "--set", "domain.planning.n_train=15",
            "--set", "domain.planning.n_test=5"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["asynchow_natural_train.jsonl"]["records"] == 15
    again = tmp_path / "again"
    assert main(args[:3] + [str(again)] + args[4:]) == 0
    for name in manifest["files"]:
        assert (out / name).read_bytes() == (again / name).read_bytes()
    d = PlanningDomain(PlanningConfig(n_train=15, n_test=5), 0)
    want = d.build()
    got = load_asynchow(out, ("nl", "graph", "code"), ("nl",))
    assert [(u.group, u.meta["durations"], sorted(u.meta["edges"]), u.meta["answer"]) for u in got] == \
        [(u.group, u.meta["durations"], sorted(u.meta["edges"]), u.meta["answer"]) for u in want]


# ------------------------------------------------------------------ released files with the real files' quirks
_GRAPH = ("You have a graph whose adjacency list representation is as follows:\n{adj}\n\nThe nodes are labelled "
          "as follows:\n{labels}\n\nHow long does the longest path take? Think step by step.")
_CODE = ("```python\nimport networkx as nx\n\ndef longest_path(adj, source, target):\n    ...\n```\n"
         "Suppose your inputs are as follows:\n```python\nadj_list = {adj}\nsource = {s}\ntarget = {t}\n```\n"
         "What does longest_path(adj_list, source, target) return? Think step by step.")


def _td(*minutes):
    return "[" + ", ".join(f"datetime.timedelta(seconds={m * 60!r})" for m in minutes) + "]"


def _quirky(folder):
    """Four aligned records in each representation: a plain one; months and a year (an interval answer); a
    compound duration whose released answer counted only its last unit (the graph says otherwise); a record
    whose Code weights are rounded (the shown program returns 1.33 + 2.67 = 4, not the graph's 4.02) — and
    one unreadable line in the Graph file, one duration in an unknown unit."""
    recs = []
    # 1: START -> 1 (10 min) -> 2 (1 hour) -> END
    recs.append(({"1": ["2"], "2": ["END"], "START": ["1"], "END": []}, {"1": "10 minutes", "2": "1 hour"},
                 _td(70, 70), {11: [(12, 60.0)], 12: [(99, 0.0)], 10: [(11, 10.0)]}, 70.0))
    # 2: two parallel steps: 2 months and 1 year -> the year: [365, 366] days
    recs.append(({"1": ["END"], "2": ["END"], "START": ["1", "2"], "END": []}, {"1": "2 months", "2": "1 year"},
                 _td(365 * 1440, 366 * 1440), {5: [(6, 525600.0), (7, 80640.0)], 6: [(8, 0.0)], 7: [(8, 0.0)]},
                 525600.0))
    # 3: compound duration: 2 hours 30 minutes then 5 minutes = 155; released answer counted 30 + 5 = 35
    recs.append(({"1": ["2"], "2": ["END"], "START": ["1"], "END": []}, {"1": "2 hours 30 minutes", "2": "5 min"},
                 _td(35, 35), {1: [(2, 150.0)], 2: [(3, 5.0)], 3: [(4, 0.0)]}, 155.0))
    # 4: rounded code weights: graph 1.34 + 2.68 = 4.02 min; the shown program has 1.33 + 2.67
    recs.append(({"1": ["2"], "2": ["END"], "START": ["1"], "END": []}, {"1": "1.34 minutes", "2": "2.68 minutes"},
                 _td(4.02, 4.02), {30: [(31, 1.33)], 31: [(32, 2.67)], 32: [(33, 0.0)]}, 4.0))
    # 5: an unknown unit
    recs.append(({"1": ["END"], "START": ["1"], "END": []}, {"1": "3 fortnights"}, _td(0, 0),
                 {1: [(2, 1.0)], 2: [(3, 0.0)]}, 1.0))
    for split in ("train", "test"):
        lines = {"natural": [], "graph": [], "python": []}
        for adj, labels, ans, code_adj, code_ans in recs:
            src = min(code_adj)
            tgt = max(v for es in code_adj.values() for v, _ in es)
            lines["natural"].append({"question": "Step 1. Do it. Think step by step.", "answer": ans})
            lines["graph"].append({"question": _GRAPH.format(adj=adj, labels=labels), "answer": ans})
            lines["python"].append({"question": _CODE.format(adj=code_adj, s=src, t=tgt), "answer": code_ans})
        lines["graph"].insert(2, None)  # an unreadable line in the graph file ...
        lines["natural"].insert(2, {"question": "Step 1. x", "answer": _td(1)})  # ... aligned with the others
        lines["python"].insert(2, {"question": "adj_list = {}", "answer": 0})
        for name, rs in lines.items():
            text = "".join(("{broken json\n" if r is None else json.dumps(r) + "\n") for r in rs)
            (folder / f"asynchow_{name}_{split}.jsonl").write_text(text)


def test_released_files_with_their_quirks_load_and_are_reported_together(tmp_path):
    _quirky(tmp_path)
    with rejects.collecting() as found:
        us = load_asynchow(tmp_path, ("nl", "graph", "code"), ("nl", "code"))
    assert len(us) == 8  # 4 of 6 records per split
    rejected = [i for i in found if i.action == "rejected"]
    assert len(rejected) == 4 and {i.where.rsplit(":", 1)[1] for i in rejected} == {"3", "6"}
    assert any("not valid JSON" in i.reason for i in rejected) and any("fortnights" in i.reason for i in rejected)
    d = PlanningDomain(PlanningConfig(asynchow_dir=str(tmp_path)), 0)
    plain, calendar, compound, rounded = us[:4]
    # months and years: an interval, right anywhere inside it
    assert d.gold(calendar, "nl") == (365 * 1440, 366 * 1440)
    assert d.score(calendar, "nl", "525600") and d.score(calendar, "nl", "527040") and d.score(calendar, "nl", "1 year")
    assert not d.score(calendar, "nl", "525599")
    # the graph is the ground truth: the compound duration is 155 minutes, the released 35 is reported
    assert d.gold(compound, "nl") == (155, 155)
    assert any(i.action == "kept" and "35 min disagrees" in i.reason and "(155 min)" in i.reason for i in found)
    # the Code question's gold is what its shown program returns, its chain of thought uses the shown node ids
    assert d.gold(rounded, "code") == (4.0, 4.0) and d.gold(rounded, "nl") == pytest.approx((4.02, 4.02))
    steps = d.steps(rounded, "code")
    assert steps == ["dist[31] = 0 + 1.33 = 1.33", "dist[32] = 1.33 + 2.67 = 4", "dist[33] = 4 = 4"]
    assert all(re.match(r"dist\[(\d+)\]", s).group(1) in rounded.meta["texts"]["code"] for s in steps)
    for u in us:  # every gold target scores right with the project's own scorer, in every representation
        for x in u.test_inputs or u.train_inputs:
            assert d.score(u, x, views.extract(d, views.target(d, u, x, "cot"))), (u.id, x)
    # a released question that already ends in the suffix does not get it twice
    q = views.execution(d, plain, "nl", "cot", random.Random(0))["prompt"][0]["content"]
    assert q.count("Think step by step.") == 1


def test_rejections_are_reported_once_together_and_strict_makes_them_an_error(tmp_path, capsys):
    _quirky(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: x\ndomain:\n  name: planning\n  planning: {{asynchow_dir: {tmp_path}}}\n"
                   "model: {prepared_base: null}\nrecipes: [two_stage]\n")
    assert main(["validate", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "4 record(s) rejected" in err and "fortnights" in err and "loaded with a note" in err
    assert main(["validate", str(cfg), "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.strict is on" in err[0] and "(and 3 more)" in err[0]
    # nothing loads: an error whatever the policy
    for f in tmp_path.glob("asynchow_graph_*.jsonl"):
        f.write_text("{broken\n" * 6)
    assert main(["validate", str(cfg)]) == 2
    assert "no record could be loaded" in capsys.readouterr().err


def test_gold_answers_render_and_score_exactly_large_and_fractional():
    """Every gold answer, rendered as targets render it, scores right: large values (no exponent) and
    fractional ones (every digit)."""
    d = PlanningDomain(PlanningConfig(), 0)
    rng = random.Random(0)
    values = [2757960, 525600.5, 0.1, 1 / 3, 4.02, 1e-4, 123456789.125, 7, 0.30000000000000004]
    for k, v in enumerate(values * 3):
        n = rng.randint(1, 4)
        durations = [v] + [rng.choice([v, 1.5, 10 / 3, 1440 * 31]) for _ in range(n - 1)]
        edges = [(a, b) for a in range(1, n + 1) for b in range(a + 1, n + 1) if rng.random() < 0.5]
        inst = {"goal": "bake a cake", "activities": ["a"] * n, "durations": durations, "edges": edges,
                "ids": rng.sample(range(10, 1000), n + 2)}
        u = PlanningDomain.make_unit(f"u{k}", "test", inst, ("nl", "graph", "code"))
        for x in ("nl", "graph", "code"):
            text = views.target(d, u, x, "cot")
            assert "e+" not in text and "e-" not in text, text
            assert d.score(u, x, views.extract(d, text)), (v, text)


def test_a_repeated_question_is_rejected_and_a_test_question_seen_in_training_is_reported(tmp_path):
    _write_asynchow(tmp_path, "[datetime.timedelta(seconds=4200), datetime.timedelta(seconds=4200)]")
    for name in ("natural", "graph", "python"):  # every training record twice, aligned
        p = tmp_path / f"asynchow_{name}_train.jsonl"
        p.write_text(p.read_text() * 2)
    g_test = tmp_path / "asynchow_graph_test.jsonl"
    g_test.write_text((tmp_path / "asynchow_graph_train.jsonl").read_text().splitlines()[0] + "\n")
    with rejects.collecting() as found:
        us = load_asynchow(tmp_path, ("nl", "graph"), ("nl",))
    assert [u.group for u in us] == ["train", "test"]
    rejected = [i for i in found if i.action == "rejected"]
    assert len(rejected) == 1 and rejected[0].where.endswith("asynchow_graph_train.jsonl:2")
    assert "same graph question as" in rejected[0].reason
    assert any(i.action == "kept" and "also trained on" in i.reason and i.where.endswith("graph_test.jsonl:1")
               for i in found)


# ------------------------------------------------------------------ the released files' exact layout, through the CLI
# (github.com/fangru-lin/procedure_generalization_llm, data/asynchow: three aligned test files, the training files
# optional; compact JSON with escaped slashes; "Think step by step. Then, encode ..." inside every question; durations
# in seconds, "1 hours" and days; the code input lists the target with no edges and the source last, its weights
# rounded to hundredths and its answer a float)
_TAIL = "Think step by step. Then, encode your final answer in <answer></answer> (e.g. <answer>1 min</answer>)"
_REL_GRAPH = ("You have a graph whose adjacency list representation is as follows:\n{adj}\n\nThe graph is a directed "
              "graph, and the nodes are labelled as follows (START and END are special nodes which takes no time to "
              "traverse):\n{labels}\n\nSuppose you have to traverse from node 'START' to node 'END', how long does "
              "the longest path take? " + _TAIL)
_REL_NL = ("To {goal}, here are the steps and the times needed for each step.\n{steps}\n\n\nThese ordering constraints "
           "need to be obeyed when executing above steps:\n{rules}\n\n\nQuestion: Assume that you need to execute all "
           "the steps to complete the task and that infinite resources are available. What is the shortest possible "
           "time to {goal}? " + _TAIL)
_REL_FN = """import networkx as nx

def find_longest_path_from_source_to_target(weighted_adj_list, source, target):
    G = nx.DiGraph()
    for src, neighbors in weighted_adj_list.items():
        for tgt, weight in neighbors:
            G.add_edge(src, tgt, weight=weight)

    topo_order = list(nx.topological_sort(G))
    dist = {node: float('-inf') for node in G.nodes}
    pred = {node: None for node in G.nodes}
    dist[source] = 0

    for u in topo_order:
        for v in G.successors(u):
            weight = G[u][v]['weight']
            if dist[u] + weight > dist[v]:
                dist[v] = dist[u] + weight
                pred[v] = u

    if dist[target] == float('-inf'):
        return None, []

    path = []
    current = target
    while current is not None:
        path.append(current)
        current = pred[current]
    path.reverse()

    return dist[target]"""
_REL_CODE = ("Below is a python function to search for the longest path from source node to target node in a directed "
             "acyclic graph (DAG) using the adjacency list representation.\nThe function takes a weighted adjacency "
             "list (a dictionary mapping each source node i to a list of (j, w) pairs, where j is a target node and w "
             "is the weight of the edge), along with a source and target node, and returns the longest path length "
             "from source to target.\n\n```python\n" + _REL_FN + "\n```\nSuppose your inputs are as follows:\n"
             "```python\nadj_list = {adj}\nsource = {s}\ntarget = {t}\n```\nThink step by step. Then, encode the "
             "output of the function in <answer></answer> (e.g. <answer>1</answer>).")


def _rel_code(adj, s, t) -> str:  # (the function's own braces are not placeholders)
    return _REL_CODE.replace("{adj}", str(adj)).replace("{s}", str(s)).replace("{t}", str(t))


_RELEASED = [  # (goal, steps, ordering rules, graph adjacency, graph labels, answer, code adjacency, source, target, code answer)
    ("try fishing for the first time",
     ["drive to the outdoor store (10 minutes)", "compare fishing poles (30 minutes)", "buy a fishing pole (5 minutes)",
      "buy some bait (5 minutes)", "drive to a lake (20 minutes)", "rent a small boat (15 minutes)"],
     ["Step 1 must precede step 2.", "Step 2 must precede step 3 and 4.", "Step 3 must precede step 5.",
      "Step 4 must precede step 5.", "Step 5 must precede step 6."],
     {"1": ["2"], "2": ["4", "3"], "3": ["5"], "4": ["5"], "5": ["6"], "6": ["END"], "END": [], "START": ["1"]},
     {"1": "10 minutes", "4": "5 minutes", "5": "20 minutes", "2": "30 minutes", "6": "15 minutes", "3": "5 minutes"},
     "[datetime.timedelta(seconds=4800), datetime.timedelta(seconds=4800)]",
     {997: [(192, 30.0)], 192: [(725, 5.0), (292, 5.0)], 292: [(88, 20.0)], 725: [(88, 20.0)], 88: [(4, 15.0)],
      4: [(128, 0.0)], 128: [], 506: [(997, 10.0)]}, 506, 128, 80.0),
    ("try investing money",
     ["go on to the internet (1 minutes)", "search for an investment website (2 minutes)",
      "click on the link to the website (1 minutes)", "create a new account (4 minutes)",
      "find items to invest in (5 minutes)", "make a deposit from bank account to funds (5 minutes)",
      "track how the stocks do (365 days)"],
     ["Step 1 must precede step 2.", "Step 2 must precede step 3.", "Step 3 must precede step 4 and 5.",
      "Step 4 must precede step 6.", "Step 5 must precede step 6.", "Step 6 must precede step 7."],
     {"1": ["2"], "2": ["3"], "3": ["4", "5"], "4": ["6"], "5": ["6"], "6": ["7"], "7": ["END"], "END": [],
      "START": ["1"]},
     {"6": "5 minutes", "7": "365 days", "1": "1 minutes", "5": "5 minutes", "4": "4 minutes", "3": "1 minutes",
      "2": "2 minutes"},
     "[datetime.timedelta(days=365, seconds=840), datetime.timedelta(days=365, seconds=840)]",
     {694: [(234, 2.0)], 234: [(673, 1.0)], 673: [(274, 4.0), (516, 5.0)], 274: [(394, 5.0)], 516: [(394, 5.0)],
      394: [(291, 525600.0)], 291: [(191, 0.0)], 191: [], 744: [(694, 1.0)]}, 744, 191, 525614.0),
    ("collect bacteria samples",
     ["Wear suitable left glove (20 seconds)", "Wear suitable right glove (20 seconds)",
      "Cut a small piece of the suspect material (15 minutes)", "Place the sample inside a clean plastic bag (10 seconds)",
      "Close the plastic bag (5 seconds)", "label the plastic bag (2 minutes)", "store the sample (20 minutes)"],
     ["Step 1 must precede step 3.", "Step 2 must precede step 3.", "Step 3 must precede step 4.",
      "Step 4 must precede step 5.", "Step 5 must precede step 6.", "Step 6 must precede step 7."],
     {"1": ["3"], "2": ["3"], "3": ["4"], "4": ["5"], "5": ["6"], "6": ["7"], "7": ["END"], "END": [],
      "START": ["1", "2"]},
     {"6": "2 minutes", "3": "15 minutes", "2": "20 seconds", "1": "20 seconds", "4": "10 seconds", "7": "20 minutes",
      "5": "5 seconds"},
     "[datetime.timedelta(seconds=2255), datetime.timedelta(seconds=2255)]",
     {46: [(18, 15.0)], 398: [(18, 15.0)], 18: [(397, 0.17)], 397: [(521, 0.08)], 521: [(3, 2.0)], 3: [(940, 20.0)],
      940: [(53, 0.0)], 53: [], 581: [(46, 0.33), (398, 0.33)]}, 581, 53, 37.58),
]


def _released(folder, splits=("test",)):
    """The released files (``asynchow_{natural,graph,python}_{split}.jsonl``) in their exact layout: what each
    question says, the JSON as the release writes it (compact, ``<\\/answer>``). A training split repeats the
    instances with other goals and a shifted first duration, so that no test question is also a training one."""
    texts = {}
    for split in splits:
        lines: dict[str, list[str]] = {"natural": [], "graph": [], "python": []}
        for goal, steps, rules, adj, labels, answer, cadj, s, t, cans in _RELEASED:
            if split == "train":
                goal, labels = f"{goal} again", {**labels, "1": labels["1"].replace("1", "2", 1)}
                answer = None  # the released answer of a shifted instance: left for the graph to correct (a note)
            recs = {"natural": {"question": _REL_NL.format(goal=goal, steps="\n".join(
                        f"Step {i}. {x}" for i, x in enumerate(steps, 1)), rules="\n".join(rules)), "answer": answer},
                    "graph": {"question": _REL_GRAPH.format(adj=adj, labels=labels), "answer": answer},
                    "python": {"question": _rel_code(cadj, s, t), "answer": cans}}
            for name, rec in recs.items():
                if rec["answer"] is None:
                    rec["answer"] = "[datetime.timedelta(seconds=60), datetime.timedelta(seconds=60)]"
                lines[name].append(json.dumps(rec, separators=(",", ":")).replace("/", "\\/"))
        for name, ls in lines.items():
            path = folder / f"asynchow_{name}_{split}.jsonl"
            path.write_text("\n".join(ls) + "\n")
            texts[path.name] = [json.loads(ln)["question"] for ln in ls]
    return texts


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("inweights: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_released_test_files_alone_export_and_read_back_through_the_cli(tmp_path, capsys):
    rel = tmp_path / "released"
    rel.mkdir()
    texts = _released(rel)
    out = tmp_path / "data"
    every = ["--set", "domain.planning.eval_representations=[nl,graph,code]"]
    assert main(["data", "planning", "--set", f"domain.planning.asynchow_dir={rel}", *every, "--out", str(out)]) == 0
    assert "wrote 6 files, 18 records" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted([*texts, "chat/test_nl.jsonl", "chat/test_graph.jsonl",
                                                "chat/test_code.jsonl"])  # no training split: none written
    assert not (tmp_path / "data.partial").exists()
    for name, questions in texts.items():  # chain-of-thought prompts are the released questions, as they are
        assert [json.loads(ln)["question"] for ln in (out / name).read_text().splitlines()] == questions
        assert all(q.count("Think step by step") == 1 for q in questions)
    d = PlanningDomain(PlanningConfig(asynchow_dir=str(rel), eval_representations=["nl", "graph", "code"]), 0)
    for x in ("nl", "graph", "code"):  # every gold target scores right with the project's own scorer
        recs = [json.loads(ln) for ln in (out / f"chat/test_{x}.jsonl").read_text().splitlines()]
        units = {u.id: u for u in load_asynchow(rel, ("nl",), ("nl", "graph", "code"))}
        assert [r["unit"] for r in recs] == list(units)
        assert all(d.score(units[r["unit"]], x, d.extract_answer(r["completion"][0]["content"])) for r in recs)
    assert [u.meta["answer"] for u in units.values()] == [80, 525614, pytest.approx(2255 / 60)]
    # and the export reads back as a released folder
    again = load_asynchow(out, ("nl",), ("nl", "graph", "code"))
    assert [u.meta["answer"] for u in again] == [u.meta["answer"] for u in units.values()]
    # the default representations: what the config reads (NL probes, the graph as ground truth)
    assert main(["data", "planning", "--set", f"domain.planning.asynchow_dir={rel}", "--out", str(tmp_path / "d2")]) == 0
    assert sorted(json.loads((tmp_path / "d2" / "manifest.json").read_text())["files"]) == [
        "asynchow_graph_test.jsonl", "asynchow_natural_test.jsonl", "chat/test_graph.jsonl", "chat/test_nl.jsonl"]


def test_the_released_files_through_validate_work_or_refuse_in_one_line(tmp_path, capsys):
    rel = tmp_path / "released"
    rel.mkdir()
    _released(rel)
    at = ["--set", f"domain.planning.asynchow_dir={rel}"]
    # a config training on a representation the release does not have: a config error naming it
    assert main(["validate", "configs/planning_two_stage.yaml", *at, "--set",
                 "domain.planning.representations=[nl,graph,template]"]) == 2
    line = _one_error(capsys)
    assert "config error at domain.planning" in line and "'template'" in line and "ladder" in line
    fixed = [*at, "--set", "domain.planning.representations=[nl,graph]", "--set", "recipes=[two_stage,nl_only,mixed]"]
    # the test files alone: nothing to train on, said in one line
    assert main(["validate", "configs/planning_two_stage.yaml", *fixed]) == 2
    line = _one_error(capsys)
    assert "group train has no units" in line and str(rel) in line and "asynchow_{natural,graph,python}_train" in line
    # with the training files beside them: ok
    _released(rel, ("train", "test"))
    assert main(["validate", "configs/planning_two_stage.yaml", *fixed]) == 0
    assert "ok (experiment 'planning_two_stage')" in capsys.readouterr().out
    # and `data` on them with the default settings (train in nl/graph/code, test probed in NL: issue 38's KeyError)
    assert main(["data", "planning", *at, "--out", str(tmp_path / "both")]) == 0
    assert sorted(json.loads((tmp_path / "both" / "manifest.json").read_text())["files"]) == sorted(
        [f"asynchow_{n}_train.jsonl" for n in ("natural", "graph", "python")] + [
         "asynchow_natural_test.jsonl", "asynchow_graph_test.jsonl"] +
        [f"chat/train_{x}.jsonl" for x in ("nl", "graph", "code")] + ["chat/test_nl.jsonl", "chat/test_graph.jsonl"])
    # a split with some of its files needs every one its representations read
    (rel / "asynchow_python_train.jsonl").unlink()
    assert main(["validate", "configs/planning_two_stage.yaml", *fixed, "--set",
                 "domain.planning.representations=[nl,graph,code]"]) == 2
    assert "asynchow_python_train.jsonl not found" in _one_error(capsys)
    # bad input to `data`: one line, exit 2, nothing left behind
    for f in rel.glob("asynchow_*_train.jsonl"):
        f.unlink()
    (rel / "asynchow_graph_test.jsonl").unlink()
    out = tmp_path / "data"
    assert main(["data", "planning", *at, "--out", str(out)]) == 2
    assert "asynchow_graph_test.jsonl not found" in _one_error(capsys)
    assert not out.exists() and not (tmp_path / "data.partial").exists()


def test_a_released_question_asks_for_its_format_once():
    """The release asks "Think step by step. Then, encode your final answer ..." inside every question: a
    chain-of-thought prompt shows it as it is, a direct one asks to answer directly instead, never both."""
    d = PlanningDomain(PlanningConfig(), 0)
    inst = {"goal": "g", "activities": ["a"], "durations": [5], "edges": [], "ids": [1, 2, 3],
            "texts": {"nl": _REL_NL.format(goal="g", steps="Step 1. a (5 minutes)", rules=""),
                      "code": _rel_code({1: [(2, 5.0)], 2: []}, 1, 2)}}
    u = PlanningDomain.make_unit("u", "test", inst, ("nl", "code"))
    for x in ("nl", "code"):
        cot = views.execution(d, u, x, "cot", random.Random(0))["prompt"][0]["content"]
        direct = views.execution(d, u, x, "direct", random.Random(0))["prompt"][0]["content"]
        assert cot == inst["texts"][x] and cot.count("Think step by step.") == 1
        assert "Think step by step" not in direct and direct.count("Answer directly.") == 1
        assert "? Encode your final answer" in direct or "```\nEncode the output" in direct


def test_preparation_shares_weigh_the_representations_and_bad_shares_are_refused():
    """Issue 42: a base strong in symbols and weak in language sees NL in a small share of its preparation."""
    from collections import Counter
    cfg = PlanningConfig(prepare_representations=["graph", "code", "nl"], prepare_shares={"nl": 0.1})
    d = PlanningDomain(cfg, 0)
    rng = random.Random(0)
    shown = Counter()
    for _ in range(2100):
        u = d.fresh_unit(rng)
        assert u.train_inputs == u.test_inputs and len(u.train_inputs) == 1  # one representation per instance
        shown[u.train_inputs[0]] += 1
    assert 60 <= shown["nl"] <= 140 and 850 <= shown["graph"] <= 1150 and 850 <= shown["code"] <= 1150
    # without shares every representation is offered on every instance (the old behaviour, same draws)
    even = PlanningDomain(PlanningConfig(prepare_representations=["graph", "code"]), 0).fresh_unit(random.Random(0))
    assert even.train_inputs == ("graph", "code")
    for bad in ({"template": 1.0}, {"nl": -1.0}, {"nl": 0.0, "graph": 0.0}):
        with pytest.raises(ValueError, match="prepare_shares"):
            PlanningConfig(prepare_representations=["graph", "nl"], prepare_shares=bad)


def test_the_report_says_whether_reading_or_solving_went_wrong(tmp_path, domain, units):
    """The first-wrong-line table: an output that misreads an edge, one that misadds, one word for word."""
    from inweights.regimes.experiment.report_curricula import trace_section

    d = PlanningDomain(PlanningConfig(n_train=60, n_test=30, trace="rewrite"), 0)
    u = next(v for v in d.build() if v.group == "test" and v.meta["edges"])
    traces = d.summary_extras([u])["traces"]
    ref = traces[u.id]["nl"]
    assert ref[0].startswith("Durations:") and ref[1].startswith("Edges:")
    misread = [ref[0], "Edges: 9>9", *ref[2:]]
    misadded = [*ref[:2], ref[2] + "0", *ref[3:]]
    samples = [{"recipe": "r", "cell": "test/in_weights/cot/nl", "unit": u.id, "input": "nl", "format": "cot",
                "output": "\n".join(lines), "correct": ok} for lines, ok in ((misread, False), (misadded, False),
                                                                              (ref, True))]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    md, out = trace_section(tmp_path / "samples.jsonl", traces)
    assert out["r"]["test/in_weights/cot/nl"] == {"n": 3, "correct": 1, "Edges": 1, "solving": 1, "none": 1}
    assert any(row.startswith("| r | `test/in_weights/cot/nl` | 3 | 0 | 33 | 33 | 33 | 33 |") for row in md)


def test_the_curricula_report_names_the_first_failed_rung():
    from inweights.regimes.experiment.report_curricula import curricula_ladder

    def c(acc, lo, hi):
        return {"acc": acc, "ci95": [lo, hi]}

    nl, graph = "test/in_weights/cot/nl", "test/in_weights/cot/graph"
    rows = {"base": {"cells": {nl: c(.16, .10, .24), graph: c(.72, .63, .80)}},
            "nl_only": {"cells": {nl: c(.20, .13, .29)}}, "two_stage": {"cells": {nl: c(.18, .12, .27)}}}
    lad = curricula_ladder(rows, nl, graph)
    assert [r["holds"] for r in lad["rungs"]] == [True, False, False]
    assert lad["first_failed"] == "2. training on NL raises NL" and "cannot be read" in lad["verdict"]
    rows["nl_only"]["cells"][nl], rows["two_stage"]["cells"][nl] = c(.40, .31, .50), c(.60, .51, .69)
    assert curricula_ladder(rows, nl, graph)["verdict"] == "Every rung holds."
    assert curricula_ladder({"x": {"cells": {}}}, nl, graph) is None
