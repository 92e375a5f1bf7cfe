"""Rule distillation: its run (``run``: a teacher that reads the rule distilled into a student that never sees it,
against SFT from k examples) and its report (``report``)."""
