"""Views turn units into training and probe records.

- ``decl``: the document a model would meet in pre-training data (pointer sentence + source).
- ``exec``: pointer + input -> output (direct or chain-of-thought); the instruction is NOT shown.
- ``in_context``: instruction + pointer + input -> output (the upper bound).
- ``demos``: ``exec`` records on a unit's training inputs, used as demonstrations without code.

A record carries chat ``messages`` and the same turns split as ``prompt``/``completion`` (TRL's
conversational prompt-completion format), plus the fields the evaluator needs.
"""

from __future__ import annotations

import random
from typing import Any

from inweights.domains import base
from inweights.domains.base import Unit

extract_answer = base.extract_answer  # the default layout's answer, for callers without a domain

FORMAT_SUFFIX = {"direct": "Answer directly.", "cot": "Think step by step."}


def _record(view: str, unit: Unit, user: str, assistant: str, **extra: Any) -> dict[str, Any]:
    msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {
        "view": view,
        "unit": unit.id,
        "group": unit.group,
        **extra,
        "messages": msgs,
        "prompt": msgs[:1],
        "completion": msgs[1:],
    }


def instruction_text(domain, unit: Unit) -> str:
    """The declarative text as views show it (code, rules, a description): the domain renders it."""
    return domain.instruction_text(unit)


def decl(domain, unit: Unit, rng: random.Random, template: int | None = None) -> dict[str, Any]:
    """The document; the pointer sentence is drawn per occurrence unless ``template`` picks one."""
    t = domain.decl_templates[template] if template is not None else rng.choice(domain.decl_templates)
    sentence = t.format(name=unit.pointer)
    # programs: a rendering drawn per occurrence (document augmentation); other domains: one text
    body = domain.document_text(unit, rng)
    return _record("decl", unit, sentence, body)


def decl_forced_header(domain, unit: Unit, sentence: str) -> dict[str, Any] | None:
    """A document probe whose assistant turn starts with the code rendering's header, up to and including the
    ``def NAME(x):`` line (a prefill the model continues); None where the domain has no code header."""
    text = domain.render(unit, "code")
    if not text or unit.family == "compose":
        return None
    lines = text.split("\n")
    head = next((i for i, ln in enumerate(lines) if ln.startswith("def ")), None)
    if head is None:
        return None
    rec = _record("decl", unit, sentence, text)
    # no newline after the header: BPE merges it with the next line's indent, so a prefill ending in it would
    # split tokens where training never did
    rec["prompt"] = [*rec["prompt"], {"role": "assistant", "content": "\n".join(lines[: head + 1])}]
    return rec


def answer_line(domain, answer: str) -> str:
    """The final line of a target: ``Answer: 7``, or the domain's own layout (planning: ``<answer>7</answer>``)."""
    return domain.answer_template.format(answer)


def target(domain, unit: Unit, x: Any, fmt: str) -> str:
    line = answer_line(domain, domain.answer_text(unit, x))
    if fmt == "direct":
        return line
    return "\n".join(domain.steps(unit, x)) + "\n" + line


def _without(q: str, sentence: str) -> str:
    """``q`` without ``sentence``, and without the "Then, " that leads on from it ("Think step by step. Then,
    encode your final answer ..." -> "Encode your final answer ...")."""
    i = q.find(sentence)
    if i < 0:
        return q
    rest = q[i + len(sentence):].lstrip()
    if rest.startswith("Then, "):
        rest = rest[len("Then, "):]
        rest = rest[:1].upper() + rest[1:]
    return (q[:i] + rest).rstrip()


def question(domain, unit: Unit, x: Any, fmt: str, rng: random.Random) -> str:
    """The domain's question with the format's request (``FORMAT_SUFFIX``), said once: a released question may
    already ask for it (AsyncHow's "... Think step by step. Then, encode your final answer in <answer></answer>"),
    and then is shown as it is; a request for the other format is taken out."""
    q = domain.question(unit, x, rng).rstrip()  # the domain's templates (rules: one set per kind)
    for f, suffix in FORMAT_SUFFIX.items():
        if f != fmt:
            q = _without(q, suffix)
    if FORMAT_SUFFIX[fmt] in q:
        return q
    return f"{q} {FORMAT_SUFFIX[fmt]}"


def execution(domain, unit: Unit, x: Any, fmt: str, rng: random.Random, view: str = "exec",
              others: tuple[Unit, ...] = ()) -> dict[str, Any]:
    """An execution record; ``in_context`` shows the instruction before the question, and with ``others``
    their instructions too, all in a random order: the question's name says which one to use."""
    q = question(domain, unit, x, fmt, rng)
    if view == "in_context" and (instr := instruction_text(domain, unit)):
        if others:
            shown = [instr] + [instruction_text(domain, o) for o in others]
            rng.shuffle(shown)
            instr = "\n".join(shown)
        q = f"{instr}\n{q}"
    return _record(
        view, unit, q, target(domain, unit, x, fmt), format=fmt, input=x, answer=domain.answer_text(unit, x)
    )


def in_context(domain, unit: Unit, x: Any, fmt: str, rng: random.Random, others: tuple[Unit, ...] = ()) -> dict[str, Any]:
    return execution(domain, unit, x, fmt, rng, view="in_context", others=others)


def extract(domain, text: str) -> str | None:
    """The model's final answer in the domain's layout (``Answer:`` by default)."""
    return domain.extract_answer(text)
