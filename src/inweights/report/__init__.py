"""What every regime's report is made of: markdown tables (``tables``), plots (``plots``) and the comparison of
two recipes with its confidence interval (``verdict``). Each regime writes its own report from these
(``regimes/<name>/report.py``)."""
