"""Extraction diagnostics for programs: where the chain from stored documents to executed answers breaks.

Computed from the evaluator's samples of every model:

- ``doc_recall``: after a document's own pointer sentence (the decl view's prompt), the share of the program's
  statements (``return`` excluded) the model writes out at the right line -- is the document *stored*?
- ``query_recall``: the same share inside an in-weights question (the recital under ``cot: recite``, the trace's
  copied statements under ``cot: trace``) -- is it *extracted* where it is needed? The gap between the two is
  the extraction failure (Allen-Zhu & Li, Physics of LMs 3.1).
- for reciting formats: how often the recital names the asked program, how often its body is the stored
  program of the name it wrote (the model retrieves, but for the wrong name), and accuracy given an exact recital.
- ``with_io`` accuracy on training inputs beside held-out ones (memorised traces vs execution).
- ``rung``: the first rung of the ladder that fails -- execution in context, storage, extraction (``with_io``),
  transfer (``without_io``).
"""

from __future__ import annotations

from statistics import mean
from typing import Any

from inweights.domains.capabilities import Listings, supports
from inweights.eval.stats import wilson

# A rung counts as climbed from this accuracy / recall on (thresholds for the verdict, not for any claim).
RUNG_LEVEL = 0.5


def _share(flags: list[bool]) -> dict[str, Any] | None:
    if not flags:
        return None
    k, n = sum(flags), len(flags)
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n, "ci95": [lo, hi]}


def _trace_statements(output: str) -> list[str]:
    return [ln.split(" -> ", 1)[0].strip() for ln in output.splitlines() if " -> " in ln]


def diagnose(domain, units, samples: list[dict[str, Any]], cells: dict[str, Any]) -> dict[str, Any] | None:
    """The diagnostics above, per group; None for domains without program listings."""
    if not supports(domain, Listings):
        return None
    by_id = {u.id: u for u in units}
    by_name = {u.pointer: u for u in units}
    cot = domain.cot_layout()
    recite = cot in ("recite", "header")  # the CoT writes the function's name first
    out: dict[str, Any] = {"statement_chance": domain.statement_chance(), "cot": cot, "groups": {}}
    for group in ("with_io", "without_io", "composed"):
        doc = [s for s in samples if s["cell"] == f"{group}/doc_context"]
        query = [s for s in samples if s["cell"] == f"{group}/in_weights/cot"]
        if not doc and not query:
            continue
        g: dict[str, Any] = {}
        if doc:
            rec = [domain.statements_recalled(by_id[s["unit"]], domain.parse_listing(s["output"])[1]) for s in doc]
            rec = [r for r in rec if r is not None]
            g["doc_recall"] = mean(rec) if rec else None
            g["doc_exact"] = _share([domain.parse_listing(s["output"]) ==
                                     (by_id[s["unit"]].pointer, domain.statements(by_id[s["unit"]])) for s in doc])
            g["doc_names_asked"] = _share([domain.parse_listing(s["output"])[0] == by_id[s["unit"]].pointer
                                           for s in doc])
        forced = [s for s in samples if s["cell"] == f"{group}/doc_forced"]
        if forced:  # the header ``def NAME(x):`` given: is the body stored under the name?
            rec = [domain.statements_recalled(by_id[s["unit"]], domain.parse_listing(s["output"])[1]) for s in forced]
            rec = [r for r in rec if r is not None]
            g["doc_forced_recall"] = mean(rec) if rec else None
        if query:
            names_asked, body_of_written, exact, right_given_exact, recalls = [], [], [], [], []
            for s in query:
                u = by_id[s["unit"]]
                if recite:
                    name, body = domain.parse_listing(s["output"])
                    if cot == "header":  # the statements are the trace's
                        body = _trace_statements(s["output"])
                    names_asked.append(name == u.pointer)
                    if name in by_name:
                        body_of_written.append(body == domain.statements(by_name[name]))
                    ok = name == u.pointer and body == domain.statements(u)
                    exact.append(ok)
                    if ok:
                        right_given_exact.append(bool(s["correct"]))
                else:
                    body = _trace_statements(s["output"])
                r = domain.statements_recalled(u, body)
                if r is not None:
                    recalls.append(r)
            g["query_recall"] = mean(recalls) if recalls else None
            if recite:
                g["recital_names_asked"] = _share(names_asked)
                g["recital_body_of_written_name"] = _share(body_of_written)
                g["recital_exact"] = _share(exact)
                g["correct_given_exact_recital"] = _share(right_given_exact)
        out["groups"][group] = g
    out["rung"] = rung(cells, out)
    return out


def rung(cells: dict[str, Any], diag: dict[str, Any], noun: str = "programs", instr: str = "code",
         verb: str = "execute") -> dict[str, str]:
    """The first rung of the ladder that fails, with the number that says so: on the chain-of-thought cells, or the
    direct ones where the run probed no chain of thought; storage only where the domain reads listings back."""
    def acc(name):
        c = cells.get(name)
        return None if c is None else c["acc"]

    fmt = "cot" if any(k.endswith("/cot") for k in cells) else "direct"
    label = "CoT" if fmt == "cot" else "direct"
    ic = acc(f"without_io/in_context/{fmt}")
    if ic is not None and ic < RUNG_LEVEL:
        return {"failed": "in_context", "why": f"{instr}-in-prompt {label} accuracy on without_io is {100 * ic:.0f}%: "
                                                f"the base cannot {verb} the {noun} even when it sees them"}
    wo = diag["groups"].get("without_io", {})
    stored = [r for r in (wo.get("doc_recall"), wo.get("doc_forced_recall")) if r is not None]
    if stored and max(stored) < RUNG_LEVEL:  # the better of: free after the sentence, or with the header given
        return {"failed": "storage", "why": f"after their own pointer sentence, without_io documents come back "
                                            f"at most {100 * max(stored):.0f}% of statements (free, or with the header "
                                            f"given), under the {100 * RUNG_LEVEL:.0f}% a stored document needs"}
    wi = acc(f"with_io/in_weights/{fmt}")
    if wi is not None and wi < RUNG_LEVEL:
        q = diag["groups"].get("with_io", {}).get("query_recall")
        extra = f" (statements recalled in the question: {100 * q:.0f}%)" if q is not None else ""
        return {"failed": "extraction", "why": f"with_io held-out in-weights {label} accuracy is {100 * wi:.0f}%"
                                               f"{extra}: stored {noun} are not retrieved inside a question"}
    woa = acc(f"without_io/in_weights/{fmt}")
    if woa is not None and woa < RUNG_LEVEL:
        q = wo.get("query_recall")
        extra = f" (statements recalled in the question: {100 * q:.0f}%)" if q is not None else ""
        return {"failed": "transfer", "why": f"without_io in-weights {label} accuracy is {100 * woa:.0f}%{extra}: "
                                             f"extraction does not carry over to {noun} seen only as documents"}
    return {"failed": "none", "why": "every rung measured is at or above "
                                     f"{100 * RUNG_LEVEL:.0f}%"}
