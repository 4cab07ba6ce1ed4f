"""The loop an array task (or a local process) runs: a signal guard (signals.py), a trial source that keeps
the budget (trial_source.py), a trial runner (runner.py, epochs.py) and the kinds of task it computes
(kinds/: engine, objective, command, behind a registry)."""
