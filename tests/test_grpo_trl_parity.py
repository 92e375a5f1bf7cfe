"""Our GRPO objective against TRL's ``GRPOTrainer`` on the same tiny model, completions, rewards and optimiser.

Sampling differs between the two implementations, so both are fed the same sampled batches: per step, 2 prompts of
equal length (no left padding, whose positions TRL and we would number differently) and 4 completions each, of
different lengths, with fixed 0/1 rewards. Each side computes its loss on its own copy of the model (the advantages,
the per-token log-probabilities, the k3 KL to the frozen reference, the clipped ratio and the per-completion mean
are each computed by that side's code), takes the gradient and one SGD step with the same settings; after three
steps the losses (to 1e-5), the gradients (cosine > 0.9999, norms to 0.1%) and the weights (to 1% of how far they
moved) must agree. Temperature 1: TRL divides the logits by the sampling
temperature before scoring, we score the untempered policy (same ratios; different only away from T = 1).
Skipped only when TRL is not installed."""

import tempfile

import pytest
import torch

trl = pytest.importorskip("trl", reason="TRL is not installed (pip install trl): nothing to compare against")

from inweights.config import GRPOConfig, TinyConfig
from inweights.models import build_tiny, train_tokenizer
from inweights.train.grpo import group_advantages, grpo_loss, token_logps

TEXTS = ["Say something.", "zz yy xx ww vv uu", "abc def ghi", "Say it again."] * 30
G, P, BETA, LR = 4, 2, 0.05, 0.5
REWARDS = [[[1, 0, 0, 1], [0, 0, 1, 0]], [[0, 1, 1, 1], [1, 1, 1, 1]], [[1, 0, 0, 0], [0, 1, 0, 1]]]


def _batches(vocab: int, special: int):
    g = torch.Generator().manual_seed(0)
    out = []
    for rewards in REWARDS:
        prompts = [torch.randint(special, vocab, (5,), generator=g).tolist() for _ in range(P)]
        rows = []
        for i in range(P * G):
            n = 2 + (i * 3) % 5  # completion lengths 2..6
            rows.append((prompts[i // G], torch.randint(special, vocab, (n,), generator=g).tolist()))
        out.append((rows, torch.tensor(rewards, dtype=torch.float)))
    return out


def _grads(model) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in model.parameters()])


def _trl_inputs(rows, pad: int, adv: torch.Tensor) -> dict:
    t = max(len(c) for _, c in rows)
    comp = torch.full((len(rows), t), pad, dtype=torch.long)
    cmask = torch.zeros((len(rows), t), dtype=torch.long)
    for r, (_, c) in enumerate(rows):
        comp[r, : len(c)] = torch.tensor(c)
        cmask[r, : len(c)] = 1
    prompt = torch.tensor([p for p, _ in rows])
    return {"prompt_ids": prompt, "prompt_mask": torch.ones_like(prompt), "completion_ids": comp,
            "completion_mask": cmask, "advantages": adv}


def test_loss_gradients_and_updates_match_trl_grpotrainer():
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer
    from trl.trainer.utils import nanstd

    tok = train_tokenizer(TEXTS, 320)
    model = build_tiny(TinyConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, vocab_size=320),
                       tok, 0)
    d = tempfile.mkdtemp()
    model.save_pretrained(d)
    tok.save_pretrained(d)
    args = TRLConfig(output_dir=d, per_device_train_batch_size=G, num_generations=G, max_completion_length=6,
                     beta=BETA, epsilon=0.2, loss_type="grpo", scale_rewards="group", temperature=1.0, use_cpu=True,
                     report_to="none", bf16=False, learning_rate=LR)
    trainer = GRPOTrainer(model=d, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)], args=args,
                          train_dataset=Dataset.from_dict({"prompt": ["Say it."] * G}), processing_class=tok)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); we call the loss directly
    theirs = trainer.model.float().train()
    ours = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).train()  # the same saved weights
    ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval().requires_grad_(False)
    cfg = GRPOConfig(group_size=G, prompts_per_step=P, beta=BETA, clip_eps=0.2, loss_type="grpo")
    # plain SGD: an update is the gradient itself (Adam's first steps would blow float32 noise in near-zero
    # gradients up to full-size updates, a property of Adam, not of either implementation)
    opts = [torch.optim.SGD(m.parameters(), lr=LR) for m in (ours, theirs)]
    pad = tok.pad_token_id
    for step, (rows, rewards) in enumerate(_batches(len(tok), 3)):
        # advantages: ours, and TRL's formula (group mean, nan-aware std, + 1e-4) on the same rewards
        adv = group_advantages(rewards).reshape(-1)
        flat = rewards.reshape(-1)
        mean = flat.view(-1, G).mean(1).repeat_interleave(G)
        std = nanstd(flat.view(-1, G), dim=1).repeat_interleave(G)
        assert torch.allclose(adv, (flat - mean) / (std + 1e-4), atol=1e-6), step

        logp, mask = token_logps(ours, rows, pad)
        with torch.no_grad():
            ref_lp, _ = token_logps(ref, rows, pad)
        loss_ours, _ = grpo_loss(logp, logp.detach(), ref_lp, adv, mask, cfg, n_rows=len(rows),
                                 n_tokens=float(mask.sum()))
        loss_ours.backward()

        inputs = _trl_inputs(rows, pad, adv)
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
        att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
        with torch.no_grad():
            inputs["ref_per_token_logps"] = trainer._get_per_token_logps_and_entropies(
                trainer.ref_model, ids, att, inputs["completion_ids"].size(1))[0]
        loss_theirs = trainer._compute_loss(theirs, inputs)
        loss_theirs.backward()

        assert loss_ours.item() == pytest.approx(loss_theirs.item(), abs=1e-5), step
        g_o, g_t = _grads(ours), _grads(theirs)
        cos = torch.nn.functional.cosine_similarity(g_o, g_t, dim=0).item()
        assert cos > 0.9999 and g_o.norm().item() == pytest.approx(g_t.norm().item(), rel=1e-3), (step, cos)
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
    # three updates later the weights still agree: measured, the first step's gradients agree to 5e-8 and the
    # weights after three steps to 4e-4 of a 0.2 move (TRL scores with its fused log-softmax: float32 rounding,
    # grown by two large SGD steps); the tolerance is 1% of the largest move
    diff = max((a - b).abs().max().item() for a, b in zip(ours.parameters(), theirs.parameters()))
    moved = max((a - b).abs().max().item() for a, b in zip(ours.parameters(), ref.parameters()))
    assert moved > 0.05 and diff < 0.01 * moved, (diff, moved)
