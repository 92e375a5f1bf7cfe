"""The shipped configs as `inweights configs` lists them: experiments and prepared bases apart, each with its
description."""

from __future__ import annotations


def config_description(text: str) -> str:
    """A config's description: its header comment from the start to the end of the sentence its first line is in
    (whole words, however long)."""
    import re

    lines = []
    for ln in text.splitlines():
        if not ln.startswith("#"):
            break
        lines.append(ln.lstrip("#").strip())
    if not lines:
        return ""
    joined = " ".join(x for x in lines if x)
    end = re.compile(r"[.!?](?=\s+[A-Z(`]|\s*$)")  # a sentence's end, not an "e.g." inside one
    m = end.search(joined, max(len(lines[0]) - 1, 0))
    return joined[: m.end()] if m else joined


def print_configs() -> None:
    """The shipped configs (``inweights run NAME`` runs one), experiments and preparations apart, each with its
    description (``config_description``) wrapped whole."""
    import shutil
    import textwrap

    import yaml

    from inweights.config import shipped_configs

    root = shipped_configs()
    groups: dict[str, list[tuple[str, str]]] = {"experiment": [], "prepare": []}
    for p in sorted(root.rglob("*.yaml")):
        if p.parent.name == "accelerate":
            continue  # accelerate launch files, not experiment configs
        text = p.read_text()
        try:
            kind = (yaml.safe_load(text) or {}).get("kind", "experiment")
        except yaml.YAMLError:
            kind = "experiment"
        groups["prepare" if kind == "prepare" else "experiment"].append(
            (str(p.relative_to(root).with_suffix("")), config_description(text)))
    width = min(shutil.get_terminal_size((100, 20)).columns, 120)
    titles = {"experiment": "Experiments (inweights run NAME):",
              "prepare": "Prepared bases (inweights prepare NAME; an experiment that names one builds it on first use):"}
    for kind, items in groups.items():
        print(titles[kind] if kind == "experiment" else "\n" + titles[kind])
        for name, desc in items:
            print(f"  {name}")
            if desc:
                print(textwrap.fill(desc, width, initial_indent=" " * 6, subsequent_indent=" " * 6))
