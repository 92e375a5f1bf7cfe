"""The ``experiment`` regime: Programming by Backprop's curricula (``pbb``: recipes as data, a function from the
config to a list of stages) and the symbolic -> natural-language curricula (``two_stage``), run by one engine
(``run``: plan stages, schedule jobs, evaluate, report)."""
