"""The learning-rate range test before a study (Smith's LR range test, fastai's and Lightning's ``lr_find``).

A few short runs, one per optimizer and batch size of the space, with a learning rate that grows
exponentially from far below to far above ``space.lr``; the smoothed loss of each says where the loss falls
and where it diverges, and the suggestion is the range between (suggest.py). ``hpctune lr-range`` runs it
(run.py), ``hpctune check`` compares the space with what it found (hpc_tune/preflight.py).

What a study reads back (curve.py, suggest.py, result.py) imports neither torch nor Optuna, so that ``check``
and a command task's environment read ``lr-range.json`` cheaply; what runs the test (engine.py, command.py)
is imported by the CLI only. Both are import-linter contracts in pyproject.toml.
"""
