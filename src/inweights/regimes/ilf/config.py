"""The ILF regime's section of the config (``ilf``, with its ``feedback`` provider) and its recipe names."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from inweights.core.schema import Strict
from inweights.domains.coding_bugs import ALL_KINDS, KINDS

RECIPES = ("zero_shot", "sft_gold", "sft_refinements_no_feedback", "ilf")
DEFAULT_RECIPES = RECIPES  # what a config of this regime runs when it names none


class FeedbackConfig(Strict):
    """Where natural-language feedback on failing programs comes from: ``tests`` (written from the failing
    test and what the program did), ``file`` (people's feedback: ``inweights feedback export`` / ``import``),
    ``openai`` (any OpenAI-compatible chat endpoint, e.g. a local vLLM server)."""

    provider: Literal["tests", "file", "openai"] = "tests"
    file: str | None = None  # extra feedback JSONL for ``file`` (besides what was imported into the run)
    url: str | None = None  # openai: base URL, e.g. http://127.0.0.1:8000/v1
    model: str | None = None  # openai: the model name the endpoint serves
    api_key_env: str = "OPENAI_API_KEY"  # openai: the environment variable holding the key (may be unset)
    timeout: float = Field(60.0, gt=0)
    max_tokens: int = Field(256, gt=0)
    temperature: float = Field(0.0, ge=0)
    max_retries: int = Field(5, ge=0)  # openai: retries with exponential backoff (rate limits, 5xx, dropped links)

    @model_validator(mode="after")
    def _check(self) -> FeedbackConfig:
        if self.provider == "openai" and not (self.url and self.model):
            raise ValueError("provider openai needs url and model")
        return self


class ILFConfig(Strict):
    """Imitation learning from language feedback (docs/papers.md §4)."""

    rounds: int = Field(1, gt=0)
    n_samples: int = Field(10, gt=0)  # programs sampled per task (the paper: 30)
    temperature: float = Field(0.8, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(128, gt=0)
    refine_samples: int = Field(5, gt=0)  # refinements sampled per failing program
    refine_per_task: int = Field(2, gt=0)  # failing programs per refine-pool task the refiner learns from
    # which train-pool tasks a round refines: ``all_failed`` (no sample passed) or ``any_failed`` (any sample
    # failed — the paper refines a policy's incorrect programs; its first failing one is refined, so tasks the
    # policy solves only sometimes, where the failures the feedback names can be, are refined too)
    refine_tasks: Literal["all_failed", "any_failed"] = "all_failed"
    # what round r's fine-tune starts from: ``policy`` (pi_{r-1}, on round r's kept refinements) or ``base``
    # (pi_0, on the kept refinements of rounds 1..r, one per task, the first kept — STaR's restart; round r still
    # samples pi_{r-1}); with ``base`` the last ILF policy is pi_0 fine-tuned once on the tasks sft_gold trains on
    round_start: Literal["policy", "base"] = "policy"
    # the programs sft_gold trains on: the tasks' own gold (``family``: for generated tasks, the style the starting
    # policy was prepared on) or the same functions as explicit loops (``loop``, generated tasks only): gold in a
    # style other than the policy's, as human-written MBPP gold is to the paper's pretrained policy
    gold_style: Literal["family", "loop"] = "family"
    pretrain_steps: int = Field(0, ge=0)  # tiny: SFT on the generated prepare pool (the starting policy)
    pretrain_lr: float | None = Field(None, gt=0)
    # tiny: every pretraining example is a prepare-pool function under a fresh name (from the prepare pool's
    # name space) with fresh test inputs, so the name can only be copied from the prompt, never recalled with
    # the function it was seen with (the fixed pool's names are memorised: the base then mis-copies new ones)
    pretrain_fresh_names: bool = True
    # steps fine-tuning each refiner on the refine pool; 0 (with ``refiner_base``): both refiners are the prepared
    # base as it is (it learnt refinement with and without feedback), nothing trained in the run
    refiner_steps: int = Field(200, ge=0)
    # fine-tuning the policy (ILF and the SFT baselines): a budget of epochs over the records (the paper: 2),
    # or a fixed number of steps when ``policy_steps`` is set
    policy_epochs: float = Field(2.0, gt=0)
    policy_steps: int | None = Field(None, gt=0)
    policy_lr: float | None = Field(None, gt=0)
    # share of each fine-tuning stream drawn from the starting policy's own training tasks (the prepare pool's
    # gold solutions; nothing when there is no prepare pool), so fine-tuning does not unlearn what it knew
    replay: float = Field(0.5, ge=0, lt=1)
    # early stopping: ``val_tasks`` train-pool tasks are held out (never refined, never trained on, never the
    # test pool); every ``val_every`` epochs the policy's greedy pass rate on them is measured, training stops
    # after ``patience`` measurements without improvement, and the best checkpoint is kept. 0 tasks: off
    val_tasks: int = Field(40, ge=0)
    val_every: float = Field(0.5, gt=0)
    patience: int = Field(3, gt=0)
    # the feedback-information check: ``check_tasks`` refine-pool tasks are held out from the refiners'
    # training; their failing programs are refined with real feedback, with another task's (shuffled) and
    # without; 0: no check. The check trains both refiners whatever the recipes (rounds run only for the recipes
    # named), so `recipes: [zero_shot]` with check tasks measures the refiner rung alone
    check_tasks: int = Field(40, ge=0)
    # the refiners' prepared base (issue 43): a prepare config with ``prepare_target: refiner``; both refiners (with
    # and without feedback) start from it instead of the starting policy. None: they start from the policy
    refiner_base: str | None = None
    # what ``inweights prepare`` of an ILF config builds: the starting ``policy``, or a ``refiner`` base
    # (``regimes/ilf/refiner_base.py``), whose examples leave the feedback out at this share
    prepare_target: Literal["policy", "refiner"] = "policy"
    refiner_no_feedback_share: float = Field(0.5, ge=0, le=1)
    # the bugs a refiner base's wrong programs carry (``domains.coding_bugs``; ``name``: a mis-copied function name)
    refiner_bug_kinds: list[str] = Field(default_factory=lambda: list(KINDS), min_length=1)
    eval_samples: int = Field(10, gt=0)  # per test task, for pass@k
    ks: list[int] = Field(default_factory=lambda: [1, 10], min_length=1)
    timeout: float = Field(3.0, gt=0)  # seconds per program in the sandbox (the paper's harness: 3)
    workers: int | None = Field(None, gt=0)  # sandboxes at once (default: CPU count)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)

    @model_validator(mode="after")
    def _check(self) -> ILFConfig:
        if self.refiner_steps == 0 and not self.refiner_base:
            raise ValueError("refiner_steps 0 uses the refiners' prepared base as it is: set refiner_base")
        if bad := [k for k in self.refiner_bug_kinds if k not in ALL_KINDS]:
            raise ValueError(f"refiner_bug_kinds: unknown {', '.join(bad)} (known: {', '.join(ALL_KINDS)})")
        if any(k > self.eval_samples for k in self.ks):
            raise ValueError("every k in ks must be <= eval_samples")
        return self
