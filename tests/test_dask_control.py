"""Run control of Dask runs against a real cluster: ``--detach`` (and so the MCP server), and
``resume`` making the executor choice the run recorded.

A detached run is checked before the fork without importing Dask, and connects after it; a
port that does not speak Dask is refused before any run exists; a connection that fails in
the detached process ends the run ``failed``, never a hang.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from mcp import Client

import helpers.processes as processes
from conftest import Repo
from helpers.dask_cluster import (
    DASK_GREETING,
    DaskCluster,
    dask_env,
    first_stage_handle,
    group_gone,
    no_stage_left,  # noqa: F401 (an autouse fixture: pytest finds it imported here)
    parent_pid,
    patient_connect,  # noqa: F401 (an autouse fixture: pytest finds it imported here)
    running_cluster,
)
from helpers.mcp_client import MARKER, in_process, result

pytestmark = pytest.mark.dask

DASK_MODULES = ("dask", "distributed")
#: A stage that ignores SIGTERM and leaves a child behind: only SIGKILL of its group ends it.
STUBBORN = "trap '' TERM; sleep 60 & sleep 60; wait"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A scheduler and two workers, shared by the tests of this file."""
    with running_cluster(tmp_path_factory.mktemp("dask-control"), (), ()) as running:
        yield running


def dask_flags(cluster: DaskCluster) -> list[str]:
    return ["--executor", "dask", "--scheduler", cluster.address]


def run_dirs(repo: Repo) -> list[Path]:
    return sorted((repo.root / ".runs").glob("*/cli/*"))


def load(repo: Repo, run_id: str) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(
        next((repo.root / ".runs").glob(f"*/cli/{run_id}/manifest.json")).read_text()
    )
    return manifest


def ended(repo: Repo, run_id: str, timeout: float = 60) -> dict[str, Any]:
    """The run's manifest once it records an end."""

    def terminal() -> dict[str, Any] | None:
        try:
            manifest = load(repo, run_id)
        except (OSError, ValueError):
            return None
        return manifest if manifest["completed_at"] else None

    manifest: dict[str, Any] = processes.wait_for(terminal, timeout, f"run {run_id} to end")
    return manifest


def start_detached_in_process(repo: Repo, *args: str) -> tuple[dict[str, Any], float, list[str]]:
    """``start --detach ARGS`` through ``main`` in a fresh interpreter: the run's document, how
    long ``main`` took, and the Dask modules the caller's process imported."""
    code = (
        "import json, sys, time\nfrom codex_orchestrator.cli import main\n"
        "began = time.monotonic()\n"
        f"code = main(['start', '--detach', '--format', 'json', *{list(args)!r}])\n"
        "took = time.monotonic() - began\nsys.stdout.flush()\n"
        f"modules = sorted(m for m in sys.modules if m.split('.')[0] in {DASK_MODULES!r})\n"
        "print('\\nCALLER', json.dumps([code, took, modules]))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo.root,
        env=repo.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    document, _, caller = completed.stdout.rpartition("\nCALLER ")
    exit_code, took, modules = json.loads(caller)
    assert exit_code == 0, completed.stdout
    return json.loads(document), took, modules


# --- start --detach ---------------------------------------------------------------------------


def test_detached_dask_run_returns_at_once_and_runs_on_the_workers(
    repo: Repo, cluster: DaskCluster
) -> None:
    repo.pipeline(
        {"id": "build", "command": "sleep 1; echo built on $(hostname)"},
        {"id": "check", "command": "echo checked >&2"},
    )
    document, took, modules = start_detached_in_process(repo, *dask_flags(cluster))
    assert modules == []  # Dask is never imported before the fork
    assert took < 5  # checked and forked; no Dask client was built here
    assert document["detached"] is True and document["status"] in ("queued", "in_progress")
    run_id = document["run_id"]
    status = repo.cli("status", run_id, "--format", "json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["run_id"] == run_id
    follow = repo.cli("logs", run_id, "--follow", timeout=90)
    assert follow.returncode == 0, follow.stderr
    assert "built on" in follow.stdout and "checked\n" in follow.stderr
    manifest = ended(repo, run_id)
    assert (manifest["status"], manifest["executor"]) == ("succeeded", "dask")
    assert manifest["executor_options"] == {"scheduler": cluster.address}
    workers = {cluster.worker_address(0), cluster.worker_address(1)}
    for entry in manifest["commands"]:
        assert entry["host"] and entry["handle"]["kind"] == "dask"
        assert entry["worker"] in workers
    log = (repo.root / document["orchestrator_log"]).read_text()
    assert "Traceback" not in log


def test_cancel_of_a_detached_dask_run_leaves_no_process_on_the_workers(
    repo: Repo, cluster: DaskCluster
) -> None:
    repo.pipeline(
        {"id": "long", "command": STUBBORN},
        {"id": "never", "command": "true"},
        settings={"kill_grace_seconds": 1},
    )
    started = repo.cli("start", "--detach", "--format", "json", *dask_flags(cluster))
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["run_id"]
    remote = first_stage_handle(repo)
    assert remote["kind"] == "dask" and not group_gone(remote["pgid"])
    cancelled = repo.cli("cancel", run_id, "--wait", "--format", "json", timeout=60)
    assert cancelled.returncode == 0, cancelled.stderr
    manifest = ended(repo, run_id)
    assert (manifest["status"], manifest["status_detail"]) == ("cancelled", "cancelled")
    assert [entry["status"] for entry in manifest["commands"]] == ["failed", "pending"]
    processes.wait_for(lambda: group_gone(remote["pgid"]), 10, "the stage group to end")


def test_mcp_start_runs_on_dask_chosen_by_the_environment(
    repo: Repo, cluster: DaskCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.pipeline({"id": "remote", "command": "echo from a worker"})
    for key, value in {**repo.env, **dask_env(cluster), MARKER: uuid.uuid4().hex}.items():
        monkeypatch.setenv(key, value)

    async def scenario(client: Client) -> Any:
        return await client.call_tool("start", {"wait_seconds": 60})

    state = result(in_process(repo, scenario))
    assert state["finished"] is True and state["status"] == "succeeded", state
    manifest = load(repo, state["run_id"])
    assert manifest["executor"] == "dask"
    assert manifest["commands"][0]["handle"]["kind"] == "dask"


# --- a port that is not a Dask scheduler, a scheduler gone after the check --------------------


#: Connecting to a port that does not answer as a Dask scheduler takes this long at most.
QUICK_CONNECT = {"CODEX_ORCHESTRATOR_DASK_CONNECT_TIMEOUT_SECONDS": "2"}


class Listener(NamedTuple):
    """A test server's address and the connections it accepted so far."""

    address: str
    accepted: list[socket.socket]


@contextmanager
def listening(serve: Callable[[socket.socket], None], *, hold: bool = False) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that runs ``serve`` on each connection; its address.
    ``hold``: keep each connection open (saying nothing more) until the server stops."""
    with serving(serve, hold=hold) as listener:
        yield listener.address


@contextmanager
def serving(serve: Callable[[socket.socket], None], *, hold: bool = False) -> Iterator[Listener]:
    """`listening`, with the connections accepted so far."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(connection)
            serve(connection)
            if not hold:
                connection.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield Listener(f"tcp://127.0.0.1:{server.getsockname()[1]}", accepted)
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        server.close()


@contextmanager
def web_server() -> Iterator[str]:
    """A real HTTP server (like Dask's dashboard): it waits for a request, says nothing first."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def greet_like_ssh(connection: socket.socket) -> None:
    connection.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")


@pytest.mark.parametrize(
    ("server", "detach", "problem"),
    [
        (web_server, True, r"it said nothing within (2|[01]\.\d) s of the connection"),
        (
            lambda: listening(greet_like_ssh),
            True,
            re.escape("its first bytes are not a Dask frame header: b'SSH-2.0-"),
        ),
        (
            lambda: listening(greet_like_ssh),
            False,
            re.escape("its first bytes are not a Dask frame header: b'SSH-2.0-"),
        ),
    ],
    ids=["http-detached", "ssh-detached", "ssh-foreground"],
)
def test_a_port_that_does_not_speak_dask_exits_2_without_a_run(
    repo: Repo, server: Callable[[], Any], detach: bool, problem: str
) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    with server() as address:
        args = ["--executor", "dask", "--scheduler", address, "--format", "json"]
        completed = repo.cli("start", *(["--detach"] if detach else []), *args, env=QUICK_CONNECT)
    assert completed.returncode == 2, completed.stderr
    message = json.loads(completed.stdout)["error"]
    # ``problem`` is a pattern: a deadline's remainder is said as measured (2 s, or 1.9 s when
    # the connection itself took a moment), which a test must not pin down.
    assert re.search(
        re.escape(f"--scheduler: {address} is not a Dask scheduler (") + problem, message
    )
    assert "8787 is its dashboard" in message
    assert "Traceback" not in completed.stderr
    assert run_dirs(repo) == []


def test_a_detached_run_that_cannot_connect_after_the_fork_fails_honestly(repo: Repo) -> None:
    repo.pipeline({"id": "first", "command": "echo never"}, {"id": "second", "command": "true"})
    # A "scheduler" that greets the check before the fork as Dask does, then goes away.
    server = socket.create_server(("127.0.0.1", 0))
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"

    def greet_once_and_go() -> None:
        with server:
            connection, _ = server.accept()
            with connection:
                connection.sendall(DASK_GREETING)

    greeter = threading.Thread(target=greet_once_and_go, daemon=True)
    greeter.start()
    try:
        started = repo.cli(
            "start", "--detach", "--format", "json", "--executor", "dask", "--scheduler", address
        )
    finally:
        greeter.join(timeout=60)
    assert not greeter.is_alive()
    assert started.returncode == 0, started.stderr
    document = json.loads(started.stdout)
    manifest = ended(repo, document["run_id"], timeout=60)
    assert (manifest["status"], manifest["exit_code"]) == ("failed", 1)
    assert manifest["status_detail"] == "stage:first:scheduler-lost"
    first, second = manifest["commands"]
    assert (first["status"], second["status"]) == ("failed", "pending")
    reason = f"--scheduler: cannot reach the Dask scheduler at {address} (Connection refused)"
    assert first["summary"].startswith(f"the detached run could not connect: {reason}")
    log = (repo.root / document["orchestrator_log"]).read_text()
    assert f"error: {reason}" in log
    assert "Traceback" not in log


@pytest.fixture(scope="module")
def scheduler_greeting(cluster: DaskCluster) -> bytes:
    """The handshake frame a real Dask scheduler writes first on a connection."""
    host, port = cluster.address.removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as probe:
        received = b""
        while len(received) < 8 or len(received) < 8 + int.from_bytes(received[:8], "little"):
            received += probe.recv(4096)
    return received


def greeting_then_nothing(greeting: bytes) -> Callable[[socket.socket], None]:
    """A server that writes a Dask scheduler's whole handshake, then stalls."""
    return lambda connection: connection.sendall(greeting)


@pytest.mark.parametrize(
    ("whole", "detach", "problem"),
    [
        (False, False, r"it stopped after 24 bytes of its greeting, for (2|[01]\.\d) s"),
        (False, True, r"it stopped after 24 bytes of its greeting, for (2|[01]\.\d) s"),
        (True, False, r"no answer to a version query in time"),
    ],
    ids=["header-foreground", "header-detached", "greeting-foreground"],
)
def test_a_scheduler_that_stalls_exits_2_by_the_connect_deadline(
    repo: Repo, scheduler_greeting: bytes, whole: bool, detach: bool, problem: str
) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    greet = greeting_then_nothing(scheduler_greeting if whole else DASK_GREETING[:24])
    with listening(greet, hold=True) as address:
        args = ["--executor", "dask", "--scheduler", address, "--format", "json"]
        completed = repo.cli("start", *(["--detach"] if detach else []), *args, env=QUICK_CONNECT)
    assert completed.returncode == 2, completed.stderr
    assert re.search(problem, json.loads(completed.stdout)["error"])
    assert "Traceback" not in completed.stderr
    assert run_dirs(repo) == []


def test_ctrl_c_ends_a_connection_to_a_stalled_scheduler(
    repo: Repo, scheduler_greeting: bytes
) -> None:
    repo.pipeline({"id": "one", "command": "true"})
    with serving(greeting_then_nothing(scheduler_greeting), hold=True) as server:
        args = ["--executor", "dask", "--scheduler", server.address]
        process = repo.spawn(
            "start", *args, env={"CODEX_ORCHESTRATOR_DASK_CONNECT_TIMEOUT_SECONDS": "120"}
        )
        try:  # the probe, then the version query: now it waits
            processes.wait_for(lambda: len(server.accepted) >= 2, 30, "the version query")
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=60)  # the exit, not a bound under test
        finally:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["error: interrupted"]
    assert run_dirs(repo) == []


def test_cancel_ends_a_detached_run_whose_scheduler_stalls_after_the_fork(
    repo: Repo, scheduler_greeting: bytes
) -> None:
    repo.pipeline({"id": "first", "command": "echo never"}, {"id": "second", "command": "true"})
    with serving(greeting_then_nothing(scheduler_greeting), hold=True) as server:
        args = ["--executor", "dask", "--scheduler", server.address, "--format", "json"]
        slow = {"CODEX_ORCHESTRATOR_DASK_CONNECT_TIMEOUT_SECONDS": "120"}
        started = repo.cli("start", "--detach", *args, env=slow)
        assert started.returncode == 0, started.stderr
        run_id = json.loads(started.stdout)["run_id"]
        # The check before the fork, the check after it, then the stalled version query.
        processes.wait_for(lambda: len(server.accepted) >= 3, 30, "the connection to stall")
        cancelled = repo.cli("cancel", run_id, "--wait", "--format", "json", timeout=60)
    assert cancelled.returncode == 0, cancelled.stderr
    manifest = ended(repo, run_id, timeout=10)
    assert (manifest["status"], manifest["status_detail"]) == ("cancelled", "cancelled")
    assert [entry["status"] for entry in manifest["commands"]] == ["failed", "pending"]


def test_cancel_of_a_dead_run_whose_recorded_scheduler_stalls_does_not_hang(
    repo: Repo, scheduler_greeting: bytes
) -> None:
    repo.pipeline({"id": "work", "command": "sleep 60"}, settings={"kill_grace_seconds": 1})
    process = repo.spawn("start")  # a local run, made to look like a dead Dask run below
    try:
        first_stage_handle(repo)
    finally:
        process.kill()
        process.wait()
    [run_dir] = run_dirs(repo)
    with listening(greeting_then_nothing(scheduler_greeting), hold=True) as address:
        path = run_dir / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest.update(executor="dask", executor_options={"scheduler": address})
        path.write_text(json.dumps(manifest))
        cancelled = repo.cli("cancel", run_dir.name, "--format", "json", env=QUICK_CONNECT)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "processes left on dask workers not checked" in cancelled.stderr
    assert "no answer to a version query in time" in cancelled.stderr
    assert load(repo, run_dir.name)["status"] == "cancelled"


#: A real ``dask scheduler`` that says it runs another Dask version.
OTHER_VERSION_SCHEDULER = """
import sys
import distributed.node
import distributed.versions as versions

real = versions.get_versions

def get_versions(packages=None):
    found = real(packages)
    found["packages"]["distributed"] = "2025.1.0"
    return found

versions.get_versions = distributed.node.get_versions = get_versions
from distributed.cli.dask_scheduler import main
sys.exit(main())
"""


def scheduler_address(info: Path) -> str | None:
    """The address in a scheduler file, once it is written whole."""
    try:
        address: str = json.loads(info.read_text())["address"]
    except (OSError, ValueError, KeyError):
        return None
    return address


def test_a_scheduler_of_another_dask_version_exits_2_naming_the_mismatch(
    repo: Repo, tmp_path: Path
) -> None:
    info = tmp_path / "scheduler.json"
    argv = ["--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(info)]
    scheduler = subprocess.Popen(
        [sys.executable, "-c", OTHER_VERSION_SCHEDULER, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        address = processes.wait_for(
            lambda: info.exists() and json.loads(info.read_text())["address"], 60, "the scheduler"
        )
        repo.pipeline({"id": "one", "command": "true"})
        completed = repo.cli("start", "--scheduler", address, "--format", "json")
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=30)
    assert completed.returncode == 2, completed.stderr
    error = json.loads(completed.stdout)["error"]
    assert f"the Dask scheduler at {address} runs distributed 2025.1.0" in error
    assert "a version mismatch" in error
    assert run_dirs(repo) == []


# --- a TLS cluster ----------------------------------------------------------------------------


def certificates(directory: Path) -> dict[str, str]:
    """A certificate authority, and one certificate and key it signed for 127.0.0.1 (used by
    the scheduler, the worker and the orchestrator alike, as Dask allows): their PEM paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir()
    now = datetime.now(UTC)

    def signed(subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            address = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
            builder = builder.add_extension(x509.SubjectAlternativeName([address]), False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    files = {
        "dask_tls_ca_file": signed("test CA", ca_key, "test CA", ca_key, True),
        "dask_tls_cert": signed("dask", key, "test CA", ca_key, False),
    }
    paths = {}
    for name, certificate in files.items():
        paths[name] = str(directory / f"{name}.pem")
        Path(paths[name]).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths["dask_tls_key"] = str(directory / "key.pem")
    Path(paths["dask_tls_key"]).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_a_tls_cluster_runs_stages_and_turns_strangers_away(repo: Repo, tmp_path: Path) -> None:
    tls = certificates(tmp_path / "tls")
    options = ("--protocol", "tls", "--tls-ca-file", tls["dask_tls_ca_file"])
    options += ("--tls-cert", tls["dask_tls_cert"], "--tls-key", tls["dask_tls_key"])
    with running_cluster(tmp_path / "dask-tls", (), options=options) as secure:
        assert secure.address.startswith("tls://")
        # About 2 MB: many TLS records, more than one chunk.
        repo.pipeline({"id": "secure", "command": "echo over tls; seq 1 300000"}, settings=tls)
        code, document = repo.start_json(*dask_flags(secure))
        assert code == 0, document
        manifest = repo.manifest(document)
        assert manifest["executor_options"] == {"scheduler": secure.address}
        output = (repo.root / manifest["commands"][0]["log_path"]).read_text()
        assert output == "over tls\n" + "".join(f"{n}\n" for n in range(1, 300001))
        repo.pipeline({"id": "secure", "command": "true"})  # no certificate settings
        completed = repo.cli("start", *dask_flags(secure), "--format", "json")
        assert completed.returncode == 2, completed.stderr
        assert "is a tls:// address but the TLS settings are missing" in completed.stdout
        # A stranger (no certificate of the cluster's CA) gets no word from the scheduler.
        host, port = secure.address.removeprefix("tls://").rsplit(":", 1)
        stranger = ssl.create_default_context(cafile=tls["dask_tls_ca_file"])
        stranger.check_hostname = False
        with (
            socket.create_connection((host, int(port)), timeout=10) as raw,
            pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"),
        ):
            stranger.wrap_socket(raw).recv(1)


# --- resume makes the recorded choice ----------------------------------------------------------


def failing_once(repo: Repo, marker: Path, **extra: Any) -> None:
    """A one-stage pipeline that fails the first time it runs and succeeds after."""
    command = f"test -e {marker} || {{ touch {marker}; exit 1; }}"
    repo.pipeline({"id": "work", "command": command}, **extra)


def resumed(repo: Repo, run_id: str, *args: str, env: dict[str, str] | None = None) -> Any:
    completed = repo.cli("resume", run_id, "--format", "json", *args, env=env)
    assert completed.returncode == 0, completed.stderr
    return repo.manifest(json.loads(completed.stdout))


def test_resume_runs_on_the_recorded_executor_unless_told_otherwise(
    repo: Repo, cluster: DaskCluster, tmp_path: Path
) -> None:
    failing_once(repo, tmp_path / "ran")
    code, document = repo.start_json(*dask_flags(cluster))
    assert code == 1, document
    run_id = document["run_id"]
    detached = repo.cli("resume", run_id, "--detach")  # no flag, no environment, no config
    assert detached.returncode == 0, detached.stderr
    manifest = ended(repo, run_id)
    assert (manifest["status"], manifest["executor"]) == ("succeeded", "dask")
    assert manifest["commands"][0]["handle"]["kind"] == "dask"
    assert manifest["executor_options"] == {"scheduler": cluster.address}

    (tmp_path / "ran").unlink()
    code, document = repo.start_json(*dask_flags(cluster))
    assert code == 1, document
    manifest = resumed(repo, document["run_id"], env={"CODEX_ORCHESTRATOR_EXECUTOR": "local"})
    assert (manifest["status"], manifest["executor"]) == ("succeeded", "local")
    assert manifest["executor_options"] == {}
    assert manifest["commands"][0]["handle"]["kind"] == "local"


def test_a_local_run_resumes_locally_whatever_the_config_says(
    repo: Repo, cluster: DaskCluster, tmp_path: Path
) -> None:
    failing_once(repo, tmp_path / "ran")
    code, document = repo.start_json()
    assert code == 1, document
    assert repo.manifest(document)["executor"] == "local"
    dask_settings = {"executor": "dask", "dask_scheduler": cluster.address}
    failing_once(repo, tmp_path / "ran", settings=dask_settings)
    manifest = resumed(repo, document["run_id"])
    assert (manifest["status"], manifest["executor"]) == ("succeeded", "local")

    (tmp_path / "ran").unlink()
    failing_once(repo, tmp_path / "ran")
    code, document = repo.start_json()
    assert code == 1, document
    manifest = resumed(repo, document["run_id"], *dask_flags(cluster))
    assert (manifest["status"], manifest["executor"]) == ("succeeded", "dask")


def test_resume_names_the_recorded_scheduler_when_it_is_gone(repo: Repo, tmp_path: Path) -> None:
    failing_once(repo, tmp_path / "ran")
    code, document = repo.start_json()
    assert code == 1, document
    path = repo.root / document["manifest"]
    manifest = json.loads(path.read_text())
    manifest.update(executor="dask", executor_options={"scheduler": "tcp://127.0.0.1:1"})
    path.write_text(json.dumps(manifest))
    completed = repo.cli("resume", document["run_id"], "--format", "json")
    assert completed.returncode == 2, completed.stderr
    error = json.loads(completed.stdout)["error"]
    assert error.startswith(
        f"the scheduler run {document['run_id']} recorded (override it with --scheduler): "
        "cannot reach the Dask scheduler at tcp://127.0.0.1:1"
    )
    assert json.loads(path.read_text())["status"] == "failed"  # nothing was changed


def dead_run_with_a_group_left_on_a_worker(
    repo: Repo, cluster: DaskCluster
) -> tuple[str, dict[str, Any]]:
    """A Dask run whose orchestrator and stage supervisor were SIGKILLed together, leaving the
    stage's group running on the worker: its run id and the stage's handle."""
    repo.pipeline({"id": "work", "command": "sleep 60 & wait"}, settings={"kill_grace_seconds": 1})
    process = repo.spawn("start", "--format", "json", *dask_flags(cluster))
    try:
        remote = first_stage_handle(repo)
        supervisor = parent_pid(remote["pid"])
        assert supervisor not in (remote["worker_pid"], process.pid)
        os.kill(supervisor, signal.SIGKILL)  # verified above: neither the worker nor ours
        process.kill()
    finally:
        process.kill()
        process.wait()
    assert not group_gone(remote["pgid"])
    return run_dirs(repo)[0].name, remote


def test_detached_resume_ends_what_the_dead_run_left_on_a_worker_before_rerunning(
    repo: Repo, cluster: DaskCluster
) -> None:
    run_id, remote = dead_run_with_a_group_left_on_a_worker(repo, cluster)
    repo.pipeline({"id": "work", "command": "true"})
    detached = repo.cli("resume", run_id, "--detach")
    assert detached.returncode == 0, detached.stderr
    manifest = ended(repo, run_id)
    assert (manifest["status"], manifest["executor"]) == ("succeeded", "dask")
    assert group_gone(remote["pgid"])  # ended through the worker before the stage ran again


def test_cancel_of_a_dead_dask_run_ends_what_it_left_on_a_worker(
    repo: Repo, cluster: DaskCluster
) -> None:
    run_id, remote = dead_run_with_a_group_left_on_a_worker(repo, cluster)
    cancelled = repo.cli("cancel", run_id, "--format", "json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert load(repo, run_id)["status"] == "cancelled"
    assert group_gone(remote["pgid"])  # ended through its worker, found by the recorded scheduler
