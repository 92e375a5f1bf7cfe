"""Natural-language feedback on failing programs (docs/papers.md §4: a person, or an LLM, writes it).

Three providers, one interface — ``provider(requests) -> list[str | None]``, one feedback text per
request (``None``: none available for it):

- ``TestsFeedback``: written from the sandbox's verdict — the failing test, the value the program returned
  and the one expected, or the exception it raised, or the limit it hit. Deterministic; no model needed.
- ``FileFeedback``: what people wrote, read from JSONL files (``inweights feedback export`` writes the
  failing programs to annotate, ``inweights feedback import`` checks and installs the answers).
- ``OpenAIFeedback``: any OpenAI-compatible ``/chat/completions`` endpoint (a local vLLM server, a hosted
  API), through the ``openai`` client (retries with backoff, timeouts), answers cached in the run folder.

A request is a dict: ``task_id``, ``text`` (the problem statement), ``tests``, ``program`` and ``verdict``
(the sandbox's ``Verdict.to_dict()``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from inweights.core.errors import UserError

REQUEST_FIELDS = ("task_id", "text", "tests", "program", "verdict")


def program_key(task_id: str, program: str) -> str:
    """What a feedback record is for: the task and the exact program text."""
    return hashlib.sha256(f"{task_id}\x1f{program}".encode()).hexdigest()[:16]


def describe_verdict(verdict: dict[str, Any]) -> str:
    """The feedback a reviewer reading only the test results would write."""
    status = verdict["status"]
    bad = next((t for t in verdict.get("tests", []) if not t["passed"]), None)
    if status == "failed" and bad is not None and "actual" in bad:
        call = bad["test"].strip().removeprefix("assert ").rsplit(" == ", 1)[0]
        return (f"The code is wrong: {call} returned {bad['actual']}, but it should return {bad['expected']}. "
                f"{verdict.get('tests_passed', 0)} of {verdict.get('tests_total', 0)} tests passed.")
    if status == "failed":
        return f"The code is wrong: the test `{(bad or {}).get('test', '').strip()}` fails."
    if status == "error":
        where = " when it is defined" if verdict.get("reason", "").startswith("code:") else ""
        test = f" in the test `{bad['test'].strip()}`" if bad is not None and where == "" else ""
        return f"The code raises {verdict.get('error_type')}{where}{test}: {verdict.get('message') or ''}".rstrip(": ") + "."
    if status == "timeout":
        return f"The code does not finish: {verdict['reason']} (an infinite loop, or far too slow)."
    if status == "resource_limit":
        return f"The code uses too much: {verdict['reason']}."
    if status == "refused":
        return f"The code does something it must not: {verdict['reason']}."
    return f"The code stops before the tests finish: {verdict['reason']}."


class TestsFeedback:
    name = "tests"

    def __call__(self, requests: list[dict[str, Any]]) -> list[str | None]:
        return [describe_verdict(r["verdict"]) for r in requests]


def read_feedback_file(path: Path, known_tasks: set[str] | None = None) -> dict[str, str]:
    """program_key -> feedback from a JSONL of {"task_id", "program", "feedback"}, under the loader policy
    (``inweights.core.rejects``): a bad record is rejected with the file, the line and the problem."""
    from inweights.core import rejects
    from inweights.core.io import read_jsonl

    out: dict[str, str] = {}
    for where, rec in read_jsonl(path, "feedback file", lenient=True):
        if rec is None:
            continue
        bad = next((f"field '{k}' must be a string" for k in ("task_id", "program", "feedback")
                    if not isinstance(rec.get(k), str)), None)
        if bad is None and known_tasks is not None and rec["task_id"] not in known_tasks:
            bad = f"task_id {rec['task_id']} is not one of this run's tasks"
        if bad:
            rejects.reject(where, bad)
            continue
        if not rec["feedback"].strip():
            continue  # exported but not annotated yet
        out[program_key(rec["task_id"], rec["program"])] = rec["feedback"].strip()
    return out


class FileFeedback:
    name = "file"

    def __init__(self, paths: list[Path], known_tasks: set[str] | None = None):
        self.table: dict[str, str] = {}
        for p in paths:
            self.table.update(read_feedback_file(p, known_tasks))

    def __call__(self, requests: list[dict[str, Any]]) -> list[str | None]:
        return [self.table.get(program_key(r["task_id"], r["program"])) for r in requests]


SYSTEM_PROMPT = ("You review Python code. Given a programming task, a program that fails its tests, and the "
                 "test results, explain in two or three sentences what is wrong and how to fix it. Do not "
                 "write the corrected program.")


class OpenAIFeedback:
    """Chat completions from any OpenAI-compatible endpoint, one request per failing program, through the
    ``openai`` client: timeouts, and retries with exponential backoff (honouring ``Retry-After``) on rate
    limits, server errors and dropped connections. With ``cache`` (the run's ``feedback/openai_cache.jsonl``)
    every answer is appended as it arrives, so a resumed run — or one that failed half-way through a step —
    never asks for the same feedback twice."""

    name = "openai"

    def __init__(self, url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0,
                 max_tokens: int = 256, temperature: float = 0.0, max_retries: int = 5, cache: Path | None = None):
        from openai import OpenAI

        self.url = url.rstrip("/")
        self.model, self.max_tokens, self.temperature, self.cache = model, max_tokens, temperature, cache
        # a local server (vLLM) needs no key; the client insists on one, so an unset key sends a placeholder
        self.client = OpenAI(base_url=self.url, api_key=os.environ.get(api_key_env) or "no-key", timeout=timeout,
                             max_retries=max_retries)
        self.cached: dict[str, str] = {}
        if cache is not None and cache.is_file():
            for line in cache.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    self.cached[rec["key"]] = rec["text"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a kill: asked again

    def message(self, r: dict[str, Any]) -> str:
        tests = "\n".join(r["tests"])
        return (f"Task: {r['text']}\n\nTests:\n{tests}\n\nProgram:\n```python\n{r['program']}\n```\n\n"
                f"Test results: {describe_verdict(r['verdict'])}")

    def one(self, r: dict[str, Any]) -> str | None:
        import openai

        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": self.message(r)}]
        key = hashlib.sha256(json.dumps([self.url, self.model, self.temperature, self.max_tokens, messages],
                                        sort_keys=True).encode()).hexdigest()
        if key in self.cached:
            return self.cached[key] or None
        where = f"feedback endpoint {self.url}/chat/completions"
        try:
            reply = self.client.chat.completions.create(model=self.model, messages=messages,
                                                        temperature=self.temperature, max_tokens=self.max_tokens)
        except openai.APIStatusError as e:
            raise UserError(f"{where}: HTTP {e.status_code} (after retries)") from None
        except openai.APIConnectionError as e:  # includes timeouts
            raise UserError(f"{where}: unreachable ({type(e).__name__}, after retries)") from None
        except openai.OpenAIError as e:
            raise UserError(f"{where}: {type(e).__name__}: {e}") from None
        try:
            text = reply.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            raise UserError(f"{where}: the reply has no choices[0].message.content") from None
        text = text.strip() if isinstance(text, str) else ""
        self.cached[key] = text
        if self.cache is not None:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            with self.cache.open("a") as f:
                f.write(json.dumps({"key": key, "text": text}) + "\n")
        return text or None

    def __call__(self, requests: list[dict[str, Any]]) -> list[str | None]:
        return [self.one(r) for r in requests]


def make_provider(f, run_dir: Path | None = None, known_tasks: set[str] | None = None):
    """The provider a feedback section (``ilf.feedback``: ``FeedbackConfig``) names (file: the run's imported
    feedback plus ``f.file``)."""
    if f.provider == "tests":
        return TestsFeedback()
    if f.provider == "openai":
        return OpenAIFeedback(f.url, f.model, f.api_key_env, f.timeout, f.max_tokens, f.temperature, f.max_retries,
                              cache=run_dir / "feedback" / "openai_cache.jsonl" if run_dir is not None else None)
    paths = [Path(f.file)] if f.file else []
    if run_dir is not None and (run_dir / "feedback" / "imported.jsonl").is_file():
        paths.append(run_dir / "feedback" / "imported.jsonl")
    return FileFeedback(paths, known_tasks)
