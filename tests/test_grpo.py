"""GRPO: the advantage arithmetic, the loss, and that a tiny model learns a rewarded behaviour."""

import random

import pytest
import torch

from inweights.config import GRPOConfig, TinyConfig, TrainConfig
from inweights.models import build_tiny, train_tokenizer
from inweights.train.grpo import group_advantages, grpo_loss, k3_kl, token_logps, train_grpo


def test_advantages_are_zero_when_a_group_agrees():
    r = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]])
    a = group_advantages(r)
    assert torch.equal(a[:2], torch.zeros(2, 4))
    assert a[2, 1] > 0 > a[2, 0] and abs(a[2].sum().item()) < 1e-6
    # unscaled: plain centring
    assert torch.allclose(group_advantages(r, scale=False)[2], torch.tensor([-0.5, 0.5, -0.5, 0.5]))


def test_no_groups_left_give_no_advantages_and_no_warning():
    # a step where dynamic sampling kept no group (every one agreed): an empty batch, not a std() warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert group_advantages(torch.zeros(0, 6)).shape == (0, 6)


def test_k3_is_zero_at_the_reference_and_positive_elsewhere():
    lp = torch.log(torch.tensor([0.2, 0.5, 0.9]))
    assert torch.allclose(k3_kl(lp, lp), torch.zeros(3))
    assert (k3_kl(lp, lp - 0.3) > 0).all() and (k3_kl(lp, lp + 0.3) > 0).all()


def test_loss_gradient_pushes_up_the_advantaged_completion_and_clips():
    cfg = GRPOConfig(clip_eps=0.2)
    logp = torch.tensor([[-1.0, -1.0], [-1.0, -1.0]], requires_grad=True)
    mask = torch.ones(2, 2)
    adv = torch.tensor([1.0, -1.0])
    loss, _ = grpo_loss(logp, logp.detach(), None, adv, mask, cfg, n_rows=2, n_tokens=4)
    loss.backward()
    assert (logp.grad[0] < 0).all() and (logp.grad[1] > 0).all()  # descent raises row 0, lowers row 1
    # a ratio already past 1 + eps with a positive advantage gets no gradient (clipped)
    logp2 = torch.tensor([[0.0]], requires_grad=True)
    loss2, st = grpo_loss(logp2, torch.tensor([[-1.0]]), None, torch.tensor([1.0]), torch.ones(1, 1), cfg, 1, 1)
    loss2.backward()
    assert logp2.grad.abs().sum() == 0 and st["clipped"] == 1.0


TEXTS = ["Say something.", "zz yy xx ww vv uu", "abc def ghi", "Say it again."] * 30


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS, 320)


def test_token_logps_match_a_direct_computation(tok):
    torch.manual_seed(0)
    model = build_tiny(TinyConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=320),
                       tok, 0)
    rows = [([1, 5, 7], [9, 11]), ([1, 5], [12, 13, 14])]
    lp, mask = token_logps(model, rows, tok.pad_token_id)
    assert mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    for r, (p, c) in enumerate(rows):
        logits = model(input_ids=torch.tensor([p + c])).logits[0].log_softmax(-1)
        want = [logits[len(p) - 1 + j, c[j]].item() for j in range(len(c))]
        assert lp[r, : len(c)].tolist() == pytest.approx(want, abs=1e-5)


@pytest.mark.slow
def test_reward_rises_on_a_learnable_task(tok):
    """Reward = share of the first 8 completion tokens that are the letter 'z' token: a random-init model
    starts near 1/vocab; GRPO must raise it well above that within 60 steps (< 60 s on a CPU)."""
    torch.manual_seed(0)
    model = build_tiny(TinyConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, vocab_size=320),
                       tok, 0)
    z = tok("z", add_special_tokens=False)["input_ids"][0]
    prompt = [{"role": "user", "content": "Say something."}]

    def reward(text: str) -> float:
        ids = tok(text, add_special_tokens=False)["input_ids"][:8]
        return sum(i == z for i in ids) / 8

    def sample(rng: random.Random):
        return prompt, reward

    cfg = GRPOConfig(group_size=8, prompts_per_step=4, max_completion_length=8, temperature=1.0, beta=0.0)
    res = train_grpo(model, tok, sample, 60, cfg, TrainConfig(lr=1e-2, warmup_frac=0.0, bf16=False), lr=1e-2, seed=0)
    h = res["history"]
    first = sum(r["reward_mean"] for r in h[:5]) / 5
    last = sum(r["reward_mean"] for r in h[-5:]) / 5
    assert last > first + 0.25, (first, last)  # measured: 0.01 -> 0.48
    assert all(k in h[0] for k in ("reward_mean", "reward_std", "kl", "completion_len", "clip_frac"))


def test_kl_term_and_iterations_run_and_are_deterministic(tok):
    def run():
        torch.manual_seed(0)
        model = build_tiny(TinyConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                      vocab_size=320), tok, 0)
        cfg = GRPOConfig(group_size=4, prompts_per_step=2, max_completion_length=6, beta=0.05, iterations=2,
                         micro_batch=3)
        prompt = [{"role": "user", "content": "Say it again."}]
        res = train_grpo(model, tok, lambda rng: (prompt, lambda t: float("a" in t)), 3, cfg,
                         TrainConfig(lr=1e-3, bf16=False), lr=1e-3, seed=1)
        return [(r["reward_mean"], round(r["loss"], 6), round(r["kl"], 8)) for r in res["history"]]
    a, b = run(), run()
    assert a == b
    assert a[-1][2] >= 0


@pytest.mark.slow
def test_retroactive_grpo_runs_in_the_programs_experiment(root, tmp_path):
    """Retroactive PBB with a GRPO stage 2: shares stage 1 with retroactive, logs rewards, reports a row."""
    import json

    from inweights.cli import main

    out = tmp_path / "run"
    args = ["run", str(root / "configs/smoke.yaml"), "--out", str(out), "--set", "recipes=[retroactive, retroactive_grpo]",
            "--set", "pbb.rl_steps=2", "--set", "grpo={group_size: 2, prompts_per_step: 2, max_completion_length: 8}"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    assert rows["retroactive"]["stages"][0]["dir"] == rows["retroactive_grpo"]["stages"][0]["dir"]
    assert rows["retroactive_grpo"]["stages"][1]["name"] == "r2_grpo_exec_with_io"
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if r.get("objective") == "grpo"] == [1, 2]
    assert (out / "reward.png").is_file() and "| retroactive_grpo |" in (out / "report.md").read_text()


def test_a_killed_grpo_stage_resumes_to_the_same_weights(tok, tmp_path):
    prompt = [{"role": "user", "content": "Say it again."}]
    cfg = GRPOConfig(group_size=4, prompts_per_step=2, max_completion_length=6, beta=0.05)

    def run(out, die_at=None):
        torch.manual_seed(0)
        model = build_tiny(TinyConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                      vocab_size=320), tok, 0)
        calls = {"n": 0}

        def reward(text):
            calls["n"] += 1
            if die_at is not None and calls["n"] > die_at * cfg.group_size * cfg.prompts_per_step:
                raise KeyboardInterrupt
            return float("a" in text)

        return train_grpo(model, tok, lambda rng: (prompt, reward), 5, cfg, TrainConfig(lr=1e-3, bf16=False),
                          lr=1e-3, seed=1, out_dir=out, save_every=2)

    ref = run(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", die_at=3)  # dies during step 4, after the step-2 checkpoint
    assert (tmp_path / "killed" / "ckpt" / "progress.json").is_file()
    resumed = run(tmp_path / "killed")
    assert [h["reward_mean"] for h in resumed["history"]] == [h["reward_mean"] for h in ref["history"]]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in ref["history"]]
    for p, q in zip(ref["model"].parameters(), resumed["model"].parameters()):
        assert torch.equal(p, q)
    assert not (tmp_path / "killed" / "ckpt").exists()


def test_dynamic_sampling_drops_groups_that_agree_and_logs_their_share(tok):
    """Half the prompts give every completion the same reward (no signal). Without dynamic sampling those groups are
    trained on (their advantages are zero) and logged as zero-std; with it they are replaced by fresh draws."""
    from inweights.train.grpo import _draw_groups

    flat = [{"role": "user", "content": "Say something."}]
    mixed = [{"role": "user", "content": "Say it again."}]

    def sample(rng):
        if rng.random() < 0.5:
            return flat, lambda t: 1.0
        return mixed, lambda t: float(len(t) % 2)  # completions of both parities: a group that disagrees

    def gen(model, prompts, seed):
        return [([1, 2], [5 + (i % 3)] * (1 + i % 2)) for i in range(len(prompts))]

    def draw(cfg, seed):
        return _draw_groups(sample, random.Random(seed), gen, None, tok, cfg, 0, 0, 1)

    plain = GRPOConfig(group_size=4, prompts_per_step=4)
    rows, grouped, every, n, zero, draws = draw(plain, 3)
    assert draws == 1 and n == 4 and len(rows) == 16 and grouped.shape == (4, 4)
    assert zero == sum(bool((g == g[0]).all()) for g in grouped) > 0

    dyn = GRPOConfig(group_size=4, prompts_per_step=4, dynamic_sampling=True, max_draws=5)
    rows, grouped, every, n, zero, draws = draw(dyn, 3)
    assert grouped.shape == (4, 4) and len(rows) == 16 and draws > 1
    assert all(not bool((g == g[0]).all()) for g in grouped)  # every kept group carries signal
    assert n == 4 * draws and len(every) == 16 * draws and zero > 0
    # capped: with one draw allowed, whatever carries signal is kept and nothing more
    one = GRPOConfig(group_size=4, prompts_per_step=4, dynamic_sampling=True, max_draws=1)
    rows, grouped, _, n, zero, draws = draw(one, 3)
    assert draws == 1 and grouped.shape[0] == n - zero
