"""Your own documents as units, read from a JSONL file, no Python: facts, an API's documentation, a policy,
procedures. Every PBB recipe, probe (in weights / in context, direct / chain of thought) and report works on them.

One record per line::

    {"name": "Anya Bell Stroud",                       # the pointer: how questions name the document
     "text": "Anya Bell Stroud was born ..." ,         # the declarative text, or a list of renderings of it
     "questions": [{"question": "Which city was Anya Bell Stroud born in?", "answer": "Savannah, GA",
                    "score": "normalised",              # optional, else the file's (domain.documents.score)
                    "cot": "Anya Bell Stroud was born in Savannah, GA.",   # optional worked reasoning
                    "choices": [...], "pattern": "...", "tolerance": 0.01, "chance": 0.05,   # per score kind
                    "split": "train"}],                 # optional: with_io questions trained or held out
     "group": "without_io"}                             # optional, else split by without_io_fraction

A ``with_io`` document's training questions (and answers) are trained on, as a program's input/output examples are;
its other questions, and every question of a ``without_io`` document, are the probes. The question the model
sees is the record's own (``About NAME: ...`` put before it when it does not name the document). Scoring (``score``):
``exact`` (the same text), ``normalised`` (the same after lower-casing and dropping punctuation, articles and extra
spaces: SQuAD's answer normalisation), ``numeric`` (the first number in the answer within ``tolerance``), ``regex``
(``pattern`` matches the whole answer) and ``choice`` (normalised, one of ``choices``; chance 1/len). A chain of
thought recites the document's sentence(s) holding the answer (``cot: sentence``; the record's ``cot`` where given)
or the whole document (``cot: document``), then answers.

Bad records are reported together under the loader policy (``inweights.core.rejects``): the good ones are kept.
``biographies: {people: N}`` generates fictional biographies instead of reading a file (``domains/biographies.py``).
"""

from __future__ import annotations

import math
import random
import re
import string
import unicodedata
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from inweights.core.errors import UserError
from inweights.core.schema import Strict
from inweights.core.seeds import derive_seed
from inweights.domains.base import Domain, Unit, register_domain
from inweights.domains.capabilities import FreshUnits

SCORES = ("exact", "normalised", "numeric", "regex", "choice")
QUESTION_KEYS = {"question", "answer", "score", "cot", "choices", "pattern", "tolerance", "chance", "split",
                 "attribute"}
RECORD_KEYS = {"name", "title", "id", "text", "questions", "group"}
SHIPPED = Path(__file__).resolve().parent.parent / "documents"  # the example files the package ships


class BiographiesConfig(Strict):
    """Generated fictional biographies (``domains/biographies.py``)."""

    people: int = Field(60, ge=2, le=2000)
    renderings: int = Field(5, ge=1, le=50)  # renderings per biography (documents show a random one)


class DocumentsConfig(Strict):
    """Documents and questions from a JSONL file (or generated biographies)."""

    file: str | None = None  # the JSONL file; a bare name not found here is looked for among the shipped examples
    biographies: BiographiesConfig | None = None  # generate instead of reading a file
    without_io_fraction: float = Field(0.5, gt=0, lt=1)  # of the records without a "group"
    train_fraction: float = Field(0.5, gt=0, lt=1)  # a with_io document's questions trained (without "split")
    score: Literal["exact", "normalised", "numeric", "regex", "choice"] = "normalised"  # the file's default
    cot: Literal["sentence", "document"] = "sentence"  # what a chain of thought recites before answering
    max_documents: int | None = Field(None, ge=2)  # the first N records only

    @model_validator(mode="after")
    def _check(self) -> DocumentsConfig:
        if self.file is not None and self.biographies is not None:
            raise ValueError("set one of file (a JSONL of documents) and biographies (generated), not both")
        return self


# ------------------------------------------------------------------ scoring

def normalise(text: str) -> str:
    """SQuAD's answer normalisation (lower case, no punctuation, no articles, single spaces), after Unicode NFKC."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if ch in string.punctuation else ch for ch in text)
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def first_number(text: str) -> float | None:
    m = _NUMBER.search(text)
    if m is None:
        return None
    try:
        return float(m.group().replace(",", ""))
    except ValueError:
        return None


def correct(q: dict[str, Any], prediction: str | None) -> bool:
    """Whether ``prediction`` answers question ``q`` (its ``score`` kind)."""
    if prediction is None:
        return False
    kind, answer, pred = q["score"], q["answer"], prediction.strip()
    if kind == "exact":
        return pred == answer.strip()
    if kind == "numeric":
        got = first_number(pred)
        return got is not None and abs(got - float(q["value"])) <= q.get("tolerance", 0.0)
    if kind == "regex":
        return re.fullmatch(q["pattern"], pred) is not None
    return normalise(pred) == normalise(answer)  # normalised, choice


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


# ------------------------------------------------------------------ reading records

class _Bad(Exception):
    pass


def _question(i: int, q: Any, default_score: str) -> dict[str, Any]:
    at = f"question {i + 1}"
    if not isinstance(q, dict):
        raise _Bad(f"{at} must be an object with 'question' and 'answer'")
    if unknown := sorted(set(q) - QUESTION_KEYS):
        raise _Bad(f"{at}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(QUESTION_KEYS))})")
    text, answer = q.get("question"), q.get("answer")
    if not isinstance(text, str) or not text.strip():
        raise _Bad(f"{at}: 'question' must be a non-empty string")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip():
        raise _Bad(f"{at}: 'answer' must be a non-empty string or a number")
    out: dict[str, Any] = {"question": text.strip(), "answer": str(answer).strip(), "score": q.get("score", default_score)}
    if out["score"] not in SCORES:
        raise _Bad(f"{at}: score '{out['score']}' is not one of {', '.join(SCORES)}")
    if "\n" in out["answer"]:
        raise _Bad(f"{at}: an answer is one line (the model answers after 'Answer:' on one line)")
    if out["score"] == "numeric":
        if (value := first_number(out["answer"])) is None:
            raise _Bad(f"{at}: score numeric needs a number as the answer, got {out['answer']!r}")
        tol = q.get("tolerance", 0.0)
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0 or not math.isfinite(tol):
            raise _Bad(f"{at}: tolerance must be a number >= 0")
        out.update(value=value, tolerance=float(tol))
    if out["score"] == "regex":
        pattern = q.get("pattern")
        try:
            if not isinstance(pattern, str):
                raise re.error("missing")
            re.compile(pattern)
        except re.error as e:
            raise _Bad(f"{at}: score regex needs a valid 'pattern' ({e})") from None
        if not re.fullmatch(pattern, out["answer"]):
            raise _Bad(f"{at}: its own answer {out['answer']!r} does not match its pattern")
        out["pattern"] = pattern
    choices = q.get("choices")
    if out["score"] == "choice":
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise _Bad(f"{at}: score choice needs 'choices', a list of at least two strings")
        if normalise(out["answer"]) not in {normalise(c) for c in choices}:
            raise _Bad(f"{at}: the answer {out['answer']!r} is not among its choices")
        out["choices"] = choices
    chance = q.get("chance", 1 / len(choices) if out["score"] == "choice" else 0.0)
    if isinstance(chance, bool) or not isinstance(chance, (int, float)) or not 0 <= chance <= 1:
        raise _Bad(f"{at}: chance must be a number between 0 and 1")
    out["chance"] = float(chance)
    if "cot" in q:
        if not isinstance(q["cot"], str) or not q["cot"].strip():
            raise _Bad(f"{at}: 'cot' must be a non-empty string")
        out["cot"] = q["cot"].strip()
    if "split" in q:
        if q["split"] not in ("train", "test"):
            raise _Bad(f"{at}: split must be 'train' or 'test'")
        out["split"] = q["split"]
    if "attribute" in q:
        out["attribute"] = str(q["attribute"])
    return out


def parse_record(rec: dict[str, Any], default_score: str) -> dict[str, Any]:
    """A checked record (``_Bad`` names what is wrong)."""
    if unknown := sorted(set(rec) - RECORD_KEYS):
        raise _Bad(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(RECORD_KEYS))})")
    name = rec.get("name", rec.get("title"))
    if not isinstance(name, str) or not name.strip() or "\n" in name:
        raise _Bad("'name' (or 'title') must be a non-empty one-line string")
    text = rec.get("text")
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise _Bad("'text' must be a non-empty string or a non-empty list of them (renderings)")
    qs = rec.get("questions")
    if not isinstance(qs, list) or not qs:
        raise _Bad("'questions' must be a non-empty list")
    group = rec.get("group")
    if group not in (None, "with_io", "without_io"):
        raise _Bad(f"group must be 'with_io' or 'without_io', got {group!r}")
    rid = rec.get("id", name)
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise _Bad("'id' must be a string or an integer")
    questions = [_question(i, q, default_score) for i, q in enumerate(qs)]
    return {"id": str(rid), "name": name.strip(), "texts": [t.strip() for t in texts], "questions": questions,
            "group": group}


def read_records(path: Path, default_score: str) -> list[dict[str, Any]]:
    """The file's good records; the bad ones go to the loader policy (reported together)."""
    from inweights.core import rejects
    from inweights.core.io import read_jsonl

    good, names, ids = [], set(), set()
    for where, rec in read_jsonl(path, "domain.documents.file", lenient=True):
        if rec is None:
            continue
        try:
            r = parse_record(rec, default_score)
            if r["name"] in names:
                raise _Bad(f"name {r['name']!r} repeats an earlier record's (a name points to one document)")
            if r["id"] in ids:
                raise _Bad(f"id {r['id']!r} repeats an earlier record's")
        except _Bad as e:
            rejects.reject(where, str(e))
            continue
        names.add(r["name"])
        ids.add(r["id"])
        r["where"] = where
        good.append(r)
    rejects.check_any_loaded(len(good), str(path))
    return good


def find_file(ref: str) -> Path:
    """``ref`` as given, else a shipped example of that name; a one-line error naming both places."""
    p = Path(ref).expanduser()
    if p.exists():
        return p
    shipped = SHIPPED / ref
    if not p.is_absolute() and shipped.exists():
        return shipped
    raise UserError(f"domain.documents.file: {ref} not found (nor among the shipped examples in {SHIPPED})")


# ------------------------------------------------------------------ the domain

@register_domain
class DocumentsDomain(Domain, FreshUnits):
    """Documents and their questions (a JSONL file, or generated biographies): in weights vs in context. Fresh units
    (a preparation's) are generated biographies of people no experiment has, whatever the file: the skill they
    prepare is reading a document in the prompt and answering in the ``Answer:`` layout."""

    name = "documents"
    config_class = DocumentsConfig
    unit_noun = "documents"
    instruction_noun = "text"
    gate_format = "direct"
    decl_templates: ClassVar[list[str]] = [
        "Here is a document about {name}.", "The following text is about {name}.", "{name}", "Read this about {name}.",
        "A note on {name}:", "What we know about {name}:"]
    query_templates: ClassVar[list[str]] = ["{input}"]

    def build(self) -> list[Unit]:
        c = self.cfg
        if c.file is None and c.biographies is None:
            raise UserError("domain.documents: give file (a JSONL of documents) or biographies (generated people)")
        if c.biographies is not None:
            from inweights.domains.biographies import records

            raw = records(c.biographies.people, self.seed, c.biographies.renderings)
            recs = [parse_record(r, c.score) for r in raw]
        else:
            recs = read_records(find_file(c.file), c.score)
        if c.max_documents:
            recs = recs[: c.max_documents]
        rng = random.Random(derive_seed(self.seed, "documents", "split"))
        free = [i for i, r in enumerate(recs) if r["group"] is None]
        n_without = round(len(free) * c.without_io_fraction)
        without = set(rng.sample(free, n_without)) if free else set()
        units = []
        for i, r in enumerate(recs):
            group = r["group"] or ("without_io" if i in without else "with_io")
            train, test = self._split(r, group, rng)
            if not test:
                raise UserError(f"{r.get('where', r['name'])}: document {r['name']!r} has no held-out question "
                                f"(every one is split 'train'); a with_io document needs at least one to test")
            units.append(Unit(id=f"d{i:04d}", family="document", pointer=r["name"], instruction=r["texts"][0],
                              group=group, train_inputs=tuple(train), test_inputs=tuple(test),
                              meta={"renderings": r["texts"], "questions": r["questions"]}))
        for group in ("with_io", "without_io"):
            if not any(u.group == group for u in units):
                raise UserError(f"domain.documents: no {group} document among {len(units)}; the PBB comparison needs "
                                f"both (give some records that group, or change without_io_fraction)")
        return units

    def _split(self, r: dict[str, Any], group: str, rng: random.Random) -> tuple[list[int], list[int]]:
        n = len(r["questions"])
        if group == "without_io":
            return [], list(range(n))
        marked = {i: q["split"] for i, q in enumerate(r["questions"]) if "split" in q}
        free = [i for i in range(n) if i not in marked]
        k = min(len(free), max(0, round(n * self.cfg.train_fraction) - sum(s == "train" for s in marked.values())))
        if n == 1 and not marked:
            k = 0  # one question: it is the probe
        chosen = set(rng.sample(free, k))
        train = [i for i in range(n) if marked.get(i) == "train" or i in chosen]
        return train, [i for i in range(n) if i not in train]

    def fresh_unit(self, rng: random.Random, pool: str = "prepare", taken: set[str] | None = None,
                   n_statements: int | None = None) -> Unit:
        from inweights.domains.biographies import fresh_record

        b = self.cfg.biographies
        r = parse_record(fresh_record(rng, set(taken or ()), b.renderings if b else 5), self.cfg.score)
        order = list(range(len(r["questions"])))
        rng.shuffle(order)
        half = len(order) // 2
        return Unit(id=f"{pool}-{r['name']}", family="document", pointer=r["name"], instruction=r["texts"][0],
                    group="prepare", train_inputs=tuple(sorted(order[:half])), test_inputs=tuple(sorted(order[half:])),
                    meta={"renderings": r["texts"], "questions": r["questions"]})

    def why_empty(self, group: str) -> str:
        return "(give some records that group, or change domain.documents.without_io_fraction)"

    # ------------------------------------------------------------------ views
    def q(self, unit: Unit, x: Any) -> dict[str, Any]:
        return unit.meta["questions"][x]

    def instruction_text(self, unit: Unit) -> str:
        text = unit.instruction
        return text if unit.pointer in text else f"{unit.pointer}\n{text}"

    def document_text(self, unit: Unit, rng: random.Random) -> str:
        return rng.choice(unit.meta["renderings"])  # a rendering drawn per occurrence (document augmentation)

    def format_input(self, unit: Unit, x: Any) -> str:
        return self.q(unit, x)["question"]

    def question(self, unit: Unit, x: Any, rng: random.Random) -> str:
        text = self.format_input(unit, x)
        return text if unit.pointer in text else f"About {unit.pointer}: {text}"

    def answer_text(self, unit: Unit, x: Any) -> str:
        return self.q(unit, x)["answer"]

    def steps(self, unit: Unit, x: Any) -> list[str]:
        """The record's ``cot``; else the sentences of the document holding the answer (``cot: sentence``, the
        whole document when none does) or the whole document (``cot: document``)."""
        q = self.q(unit, x)
        if "cot" in q:
            return q["cot"].split("\n")
        sents = sentences(unit.instruction)
        if self.cfg.cot == "sentence":
            want = normalise(q["answer"])
            hits = [s for s in sents if want and want in normalise(s)]
            if hits:
                return hits
        return sents

    def recall(self, unit: Unit, output: str) -> float | None:
        """``cot: document``: the share of the document's sentences the chain of thought re-types exactly."""
        if self.cfg.cot != "document":
            return None
        truth = sentences(unit.instruction)
        got = set(sentences(output.split("Answer:")[0]))
        return sum(s in got for s in truth) / len(truth)

    def score(self, unit: Unit, x: Any, prediction: str | None) -> bool:
        return correct(self.q(unit, x), prediction)

    def chance(self, unit: Unit) -> float:
        qs = [self.q(unit, x) for x in unit.test_inputs] or unit.meta["questions"]
        return sum(q["chance"] for q in qs) / len(qs)


__all__ = ["DocumentsConfig", "DocumentsDomain", "correct", "normalise", "read_records"]
