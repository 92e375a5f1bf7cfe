"""Other ways to write the generated coding family's functions (``domains.coding``): the same function in a style
the family's own programs never use, for gold programs off a policy's distribution (``ilf.gold_style``)."""

from __future__ import annotations

from typing import Any

from inweights.domains.coding import FILTERS, TRANSFORMS


def loop_code(spec: dict[str, Any], name: str) -> str:
    """The same function as ``generated_code`` written another way: an explicit loop with an accumulator (a style
    the generated family's programs never use) — gold programs in a style other than the policy's, as human-written
    gold is to a pretrained policy in the ILF paper (``ilf.gold_style: loop``)."""
    tr_code = TRANSFORMS[spec["tr"]][1].format(k=spec["k1"])
    cond = FILTERS[spec["flt"]][1].format(k=spec["k2"])[len(" if "):]
    edge = spec.get("edge", 0)  # the lists family's one-liners give 0 for an empty selection (``default=0``)
    step = {"sum": ["acc = acc + y"], "count": ["acc = acc + 1"],
            "max": ["if acc is None or y > acc:", "    acc = y"],
            "min": ["if acc is None or y < acc:", "    acc = y"]}[spec["agg"]]
    start = "0" if spec["agg"] in ("sum", "count") else "None"
    body = [f"def {name}(xs):", f"    acc = {start}", "    seen = False", "    for x in xs:"]
    inner = "        "
    if cond:
        body.append(f"        if {cond}:")
        inner = "            "
    body += [inner + line for line in (f"y = {tr_code}", "seen = True", *step)]
    body += ["    if not seen:", f"        return {edge!r}", "    return acc", ""]
    return "\n".join(body)
