"""What the user reads after the array: the collected summary (collect.py), its analysis and warnings, the
advice for the next study (advice.py, next_study.py), the report (html.py, plots.py, digest.py), ``status``
(progress.py) and the results of ``rerun-top`` (rerun_results.py)."""
