"""Where the study lives: the storage URL resolved once (url.py), the engine options for many workers
(connections.py), the one study-store handle with its lock (store.py, lock.py), the retrying layer that
waits out database outages (retrying.py, failures.py), our heartbeat thread (heartbeat.py), the per-trial
JSON records (records.py) and the one module that touches Optuna's private names (optuna_adapter.py).

Import from the modules: this package imports nothing itself, so that reading a trial record does not
import Optuna.
"""
