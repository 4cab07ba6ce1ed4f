"""What the user reads after the array: the collected summary (collect.py; summary.json's schema is
summary.py and analysis_model.py), its analysis (analysis.py) and warnings (checks/, one module per
warning), the advice for the next study (advice.py; next_study.py edits the user's YAML with yaml_edit.py),
the report (html.py, plots.py, digest.py), ``status`` (progress.py) and the results of ``rerun-top``
(rerun_results.py)."""
