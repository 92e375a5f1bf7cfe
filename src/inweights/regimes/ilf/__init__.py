"""Imitation learning from language feedback (ILF): its run (``run``: sample, feedback, refine, keep what passes the
sandbox, fine-tune; pass@k) and its report (``report``)."""
