"""The Python API in one page: run the shipped smoke config with two settings changed, read the numbers back,
and reopen the run directory later. `python examples/quickstart.py [OUT]` (about a minute on a laptop CPU;
tests/test_api.py runs it)."""

import sys

import inweights

out = sys.argv[1] if len(sys.argv) > 1 else "runs/quickstart"

# a shipped config by name; keyword sections merge over it, --set strings apply last
res = inweights.run("smoke", out=out, train={"lr": 3e-3}, recipes=["proactive"], overrides=["pbb.stage2_steps=2"],
                    resume=True)
print(res)
for recipe, row in res.summary["rows"].items():
    cells = {k: round(c["acc"], 3) for k, c in row["cells"].items()}
    print(f"{recipe:12s} {cells}")

again = inweights.load_run(out)  # e.g. in a later session
assert again.summary["rows"].keys() == res.summary["rows"].keys()
print("state:", again.state, "| steps logged:", sum("loss" in m for m in again.metrics()))
print(again.report.splitlines()[0])
