"""The study server as a process: the SLURM server job and ``hpctune server start`` run :func:`serve`.

Rules it keeps:
- **never two servers on one data directory**, even on two nodes (PostgreSQL's own pid file is checked on its
  own host only): a server job of the study that SLURM says is active, a recorded address whose process
  lives here or whose server answers, or an flock held here, and nothing starts; a recorded address that
  fails all of those is stale and is cleaned, never trusted;
- **stop when the study is done, never before**: on SLURM, once the collector asked (``stop``) and no array
  task of the study is pending or running, or once no job of the study is left at all (a collector that
  failed, a cancelled array); elsewhere, when asked (``hpctune server stop``, SIGTERM), and a server started
  for one command (``collect``, ``dashboard``, ...) once that command's process is gone, however it ended
  (killed, its terminal closed), so that none is left running on a login node;
- **at its walltime** (SLURM's USR1 a minute before): fast shutdown, then requeue itself; it comes back on the
  same data, maybe on another node, and the workers find it again through ``address.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from hpc_tune.config import LoadedConfig
from hpc_tune.errors import SlurmError, StorageError
from hpc_tune.slurm import SlurmEnv, TaskState, job_name_for, requeue_own_task, squeue_study
from hpc_tune.storage.connections import peak_connections
from hpc_tune.storage.server import postmaster
from hpc_tune.storage.server.binaries import find_binaries
from hpc_tune.storage.server.files import Address, ServerFiles

log = logging.getLogger(__name__)

POLL_S = 5.0
# Room beside the workers: the collector, status, a dashboard, an export.
SPARE_CONNECTIONS = 10
DEFAULT_MAX_CONNECTIONS = 100
# Without any job of the study left for this long (and past its first minutes), a server job stops.
IDLE_POLLS = 3
STARTUP_GRACE_S = 120.0
DETACHED_START_TIMEOUT_S = 120.0
# A server asked to stop notices within POLL_S, then shuts PostgreSQL down (a checkpoint) and its job ends.
STOPPING_WAIT_S = 120.0


def server_job_name(study: str) -> str:
    """The server job's own name: ``--dependency=singleton`` lets one such job run at a time."""
    return f"{job_name_for(study)}-server"


def max_connections_for(loaded: LoadedConfig, workers: int | None) -> int:
    setting = loaded.config.server.max_connections
    if setting != "auto":
        return setting
    if workers is None:
        return DEFAULT_MAX_CONNECTIONS
    return max(20, peak_connections(workers, loaded.config.worker.pool) + SPARE_CONNECTIONS)


# --------------------------------------------------------------------------------------------- who holds it


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs; a zombie (killed, not yet reaped by a parent that does not
    reap, as in some containers) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _is_postgres(pid: int) -> bool:
    """Whether ``pid`` is a live PostgreSQL process (not one that took a finished postmaster's pid)."""
    if not _alive(pid):
        return False
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() in ("postgres", "postmaster")
    except OSError:
        return _alive(pid)


def _answers(address: Address, files: ServerFiles) -> bool:
    try:
        conn = postmaster.connect(address.host, address.port, files, dbname="postgres", timeout_s=5)
    except Exception:  # noqa: BLE001 - any failure means: not a live server of ours
        return False
    conn.close()  # type: ignore[attr-defined]
    return True


def _holds(address: Address, here: str, files: ServerFiles) -> bool:
    """A recorded server that still runs: its process lives here, or, on another node, it answers."""
    if address.host == here:
        return address.pid != os.getpid() and _alive(address.pid)
    return _answers(address, files)


def _active_server_jobs(study: str, me: str | None) -> list[str]:
    try:
        jobs = squeue_study(server_job_name(study))
    except SlurmError:
        return []  # no SLURM here (or it does not answer): the other checks decide
    return sorted({t.job_id for t in jobs if t.active and t.job_id != me})


def holder(files: ServerFiles, study: str, me: SlurmEnv | None = None) -> str | None:
    """Who runs a server on this data directory now, or None; cleans what a killed server left behind."""
    here = socket.gethostname()
    my_job = me.job_id if me is not None else None
    jobs = _active_server_jobs(study, my_job)
    if jobs:
        return f"the server job {', '.join(jobs)} of study {study}"
    address = files.read_address()
    if address is not None:
        if address.job_id is not None and address.job_id == my_job:
            pass  # our own job, requeued: what it left is ours to clean
        elif _holds(address, here, files):
            return f"the server at {address.where()}"
        log.warning(
            "the study server's address %s is stale (its server is gone): cleaning it", address.where()
        )
        files.clear_address()
        if address.host != here:
            # PostgreSQL would take that node's pid for one of ours and refuse, or worse, not.
            with contextlib.suppress(FileNotFoundError):
                (files.data / "postmaster.pid").unlink()
    pid = postmaster.postmaster_pid(files.data)
    if pid is not None and _is_postgres(pid):
        return f"a PostgreSQL server (pid {pid}) on this host"
    return None


@contextlib.contextmanager
def exclusive(files: ServerFiles, study: str, me: SlurmEnv | None) -> Iterator[None]:
    """Hold the data directory: an flock (this host), then nobody else anywhere (``holder``)."""
    files.create()
    with open(files.lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            address = files.read_address()
            found = (
                f"the server at {address.where()}" if address is not None else "one is starting on this host"
            )
            raise StorageError(
                f"a study server already runs for study {study}: {found}", files.root
            ) from None
        try:
            found = holder(files, study, me)
            if found is not None:
                raise StorageError(f"a study server already runs for study {study}: {found}", files.root)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------- the process


@dataclass
class _Flags:
    walltime: threading.Event
    stop: threading.Event
    wake: threading.Event  # either of them: the loop's wait ends at once


def _install_signals() -> _Flags:
    flags = _Flags(threading.Event(), threading.Event(), threading.Event())

    def on_walltime(signum: int, frame: object) -> None:
        flags.walltime.set()
        flags.wake.set()

    def on_stop(signum: int, frame: object) -> None:
        flags.stop.set()
        flags.wake.set()

    signal.signal(signal.SIGUSR1, on_walltime)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    return flags


class _StopRule:
    """When a server job's study is done (see the module's doc)."""

    def __init__(self, study: str, files: ServerFiles, slurm: SlurmEnv, owner: int | None = None) -> None:
        self.study, self.files, self.slurm, self.owner = study, files, slurm, owner
        self.started = time.monotonic()
        self.idle = 0

    def done(self) -> bool:
        if self.owner is not None and not _alive(self.owner):
            log.warning("the command this server was started for (pid %d) has ended", self.owner)
            return True
        if not self.slurm.in_slurm:
            return self.files.stop_request.is_file()
        try:
            jobs = [t for t in squeue_study(job_name_for(self.study)) if t.active]
        except SlurmError as exc:
            log.warning("squeue did not answer (%s): the server keeps running", exc.what)
            return False
        if self.files.stop_request.is_file() and not _array_task_among(jobs):
            return True
        self.idle = 0 if jobs else self.idle + 1
        return self.idle >= IDLE_POLLS and time.monotonic() - self.started > STARTUP_GRACE_S


def _array_task_among(active: list[TaskState]) -> bool:
    """Whether a server job still has workers to serve: the half of its stop rule that squeue answers."""
    return any(t.is_array_task for t in active)


def serve(
    loaded: LoadedConfig,
    *,
    workers: int | None = None,
    environ: Mapping[str, str] | None = None,
    listen: str = "*",
    poll_s: float = POLL_S,
    owner: int | None = None,
) -> str:
    """Run the study server until it is done (``owner``: or until that process has ended); returns why it
    stopped: ``done``, ``stopped`` or ``walltime`` (after which it has requeued its own SLURM job)."""
    config = loaded.config
    files = ServerFiles(loaded.server_dir)
    slurm = SlurmEnv.from_environ(environ)
    postmaster.refuse_root()
    bins = find_binaries(config.server.bin_dir)
    with exclusive(files, config.study, slurm):
        if slurm.restart_count == 0:
            files.clear_stop_request()  # a new run of the study, not a requeued server coming back
        if not files.initialized:
            postmaster.init_cluster(bins, files)
        port = postmaster.free_port()
        proc = postmaster.start(
            bins, files, port=port, max_connections=max_connections_for(loaded, workers), listen=listen
        )
        reason = "stopped"
        try:
            postmaster.wait_ready(proc, files, port)
            postmaster.ensure_database(files, port)
            flags = _install_signals()
            host = socket.gethostname() if listen != "127.0.0.1" else "127.0.0.1"
            files.write_address(
                Address(
                    host=host,
                    port=port,
                    pid=os.getpid(),
                    postmaster_pid=proc.pid,
                    job_id=slurm.job_id,
                    version=bins.version,
                    started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                )
            )
            print(f"study server of {config.study} on {host}:{port}, {bins.describe()}", flush=True)
            rule = _StopRule(config.study, files, slurm, owner)
            while True:
                flags.wake.wait(poll_s)
                if flags.walltime.is_set():
                    reason = "walltime"
                    break
                if flags.stop.is_set():
                    break
                if proc.poll() is not None:
                    raise StorageError(
                        f"the study server stopped: {postmaster.last_log_line(files)}", files.log
                    )
                if rule.done():
                    reason = "done"
                    break
        finally:
            files.clear_address()  # first: nobody connects to a server that is going away
            postmaster.stop(proc)
    if reason == "walltime" and slurm.in_slurm:
        requeue_own_task(slurm)
    print(f"study server of {config.study} stopped ({reason})", flush=True)
    return reason


# --------------------------------------------------------------------------------------------- from outside


def start_detached(
    loaded: LoadedConfig, *, workers: int | None = None, listen: str = "*", owner: int | None = None
) -> Address:
    """``hpctune server start``: the server in a process of its own (it outlives this one, unless it is
    the ``owner`` whose end it waits for), once it answers. Its output goes to server.log."""
    files = ServerFiles(loaded.server_dir)
    postmaster.refuse_root()
    found = holder(files, loaded.config.study)
    if found is not None:
        raise StorageError(
            f"a study server already runs for study {loaded.config.study}: {found}", files.root
        )
    files.create()
    assert loaded.path is not None
    argv = [sys.executable, "-m", "hpc_tune", "server", "run", "-c", str(loaded.path), "--listen", listen]
    if workers is not None:
        argv += ["--workers", str(workers)]
    if owner is not None:
        argv += ["--owner-pid", str(owner)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # not the caller's job
    with open(files.log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + DETACHED_START_TIMEOUT_S
    while time.monotonic() < deadline:
        address = files.read_address()
        if address is not None and address.pid == proc.pid:
            return address
        if proc.poll() is not None:
            raise StorageError(
                f"the study server did not start: {postmaster.last_log_line(files)}", files.log
            )
        time.sleep(0.2)
    proc.terminate()
    raise StorageError("the study server did not start in time", files.log)


def stop_server(loaded: LoadedConfig, timeout_s: float = 60.0) -> Address | None:
    """Ask the study's server to stop (the stop request, and SIGTERM when it runs here); wait until it has.
    Returns the address it had, or None when none ran."""
    files = ServerFiles(loaded.server_dir)
    address = files.read_address()
    if not files.root.is_dir():
        return None
    files.request_stop()
    if address is None:
        return None
    here = address.host in (socket.gethostname(), "127.0.0.1")
    if here and _alive(address.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(address.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # The server clears its address first (nobody connects to a server going away), then shuts
        # PostgreSQL down: here, "stopped" waits for both processes to be gone, so that a start right
        # after finds the data folder free.
        gone = not here or not (_alive(address.pid) or _is_postgres(address.postmaster_pid))
        if files.read_address() is None and gone:
            return address
        time.sleep(0.2)
    raise StorageError(f"the study server at {address.where()} did not stop in time", files.root)


def running_address(loaded: LoadedConfig) -> Address | None:
    """The address of the study's server when it answers now."""
    files = ServerFiles(loaded.server_dir)
    address = files.read_address()
    return address if address is not None and _answers(address, files) else None


def _on_its_way_out(loaded: LoadedConfig, address: Address) -> bool:
    """A running server that will stop within moments by its own rule (``_StopRule``): asked to stop, and
    for a server job, no array task of the study left for it to serve (squeue not answering: not known, so
    it is taken as staying)."""
    if not ServerFiles(loaded.server_dir).stop_request.is_file():
        return False
    if address.job_id is None:
        return True
    try:
        tasks = [t for t in squeue_study(job_name_for(loaded.config.study)) if t.active]
    except SlurmError:
        return False
    return not _array_task_among(tasks)


def _wait_until_gone(loaded: LoadedConfig, address: Address) -> None:
    files = ServerFiles(loaded.server_dir)
    deadline = time.monotonic() + STOPPING_WAIT_S
    while holder(files, loaded.config.study) is not None:
        if time.monotonic() > deadline:
            raise StorageError(
                f"the study server at {address.where()} was asked to stop but did not stop in "
                f"{STOPPING_WAIT_S:.0f} s",
                files.root,
            )
        time.sleep(0.5)


@contextlib.contextmanager
def serving(loaded: LoadedConfig, *, workers: int | None = None) -> Iterator[Address]:
    """A server for the time a command needs it (``collect``, ``status``, ``next``, ``rerun-top``,
    ``dashboard``, ``export``, ``run --local``): the running one, else one started here (its own process)
    and stopped after the block."""
    running = running_address(loaded)
    if running is not None and _on_its_way_out(loaded, running):
        # Right after the array a user's `collect` would otherwise be served by a server that the collector
        # job has just asked to stop, and lose it half-way: wait until it has gone, then start one here.
        log.info("the study server at %s is stopping; waiting for it to end", running.where())
        _wait_until_gone(loaded, running)
        running = None
    if running is not None:
        yield running
        return
    # Tied to this process: if it is killed before the finally below runs, the server stops by itself.
    started = start_detached(loaded, workers=workers, owner=os.getpid())
    try:
        yield started
    finally:
        stop_server(loaded)


def collector_done(loaded: LoadedConfig) -> None:
    """The collector job collected the study: the server job may stop once no array task is left."""
    ServerFiles(loaded.server_dir).request_stop()
