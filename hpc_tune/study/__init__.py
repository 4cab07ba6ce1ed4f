"""The core every other wing stands on: what is searched (config, space), where the study lives and how
calls to it survive faults (storage, retrying storage, lock), what the next trial is (budget, campaign,
strategy), liveness (heartbeat, recovery, retries), the per-trial JSON contract (records), and the one
module that touches Optuna's private names (optuna_adapter). Nothing here imports worker/, slurm/ or report/.
"""
