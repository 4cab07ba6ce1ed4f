"""The loop an array task (or a local process) runs: a signal guard, a trial source that keeps the budget,
a trial runner, and ``run --local`` for N workers on one machine."""
