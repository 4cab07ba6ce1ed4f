"""What happens next in a study: the one shared study and how it is opened (shared_study.py), which study a
command means (locate.py), the budget (budget.py), the next trial of phases, grids and screening
(campaign.py), sampler and pruner (strategy.py, reliable_pruning.py, suggest.py), which trials are best
(ranking.py), re-runs of failed and handed-on trials (reruns.py), failing the trials of dead workers
(dead_workers.py) and ``rerun-top``'s linked study (rerun_top.py).

Attribute keys live in hpc_tune/attrs.py. Nothing here imports the worker, the launchers or the collector.
"""
