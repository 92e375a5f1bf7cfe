"""Evaluation: probes, batched generation, scoring, confidence intervals."""
