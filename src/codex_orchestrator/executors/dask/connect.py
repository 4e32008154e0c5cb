"""Reaching a Dask scheduler: its address, TLS files, a probe that needs no Dask, the version
check and a client connection, every step under one deadline that also answers cancellation.

Every failure is one line and exit 2 (docs/executors.md). Dask is imported only by
`open_client`; the probe runs before a detached run forks, where Dask must not be imported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import select
import socket
import ssl
import struct
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from codex_orchestrator.errors import EXIT_USAGE, OrchestratorError
from codex_orchestrator.executors.base import Cancellation
from codex_orchestrator.pipelines.config import TLS_SETTINGS

T = TypeVar("T")
INSTALL_HINT = (
    "pip install 'codex-pipeline-orchestrator[dask]' (installed with pipx: "
    "pipx inject codex-pipeline-orchestrator 'dask[distributed]>=2024.1')"
)
ADDRESS_PATTERN = re.compile(
    r"(?P<scheme>tcp|tls)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})"
)
#: The start of a Dask scheduler's handshake frame: bytes after this count, number of frames,
#: length of the first frame (distributed/comm/tcp.py, native byte order as there).
GREETING = struct.Struct("=3Q")
GREETING_MAX_FRAMES = 1024
GREETING_LIMIT = 1 << 20
#: How long a port may stay silent after the connection before it is judged not a scheduler
#: (at most; the whole connection's deadline may be shorter).
GREETING_TIMEOUT_SECONDS = 5.0
WAIT_SLICE_SECONDS = 0.05


class ConnectCancelled(Exception):
    """Cancellation was requested while connecting."""


class Endpoint(NamedTuple):
    """A scheduler address: ``tcp`` or ``tls``, host, port."""

    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        """The address as Dask takes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


class TlsFiles(NamedTuple):
    """The certificate authority, and this machine's certificate and key, for a TLS cluster."""

    ca_file: str
    cert: str
    key: str

    def client_context(self) -> ssl.SSLContext:
        """A context for connections to the cluster. As Dask does, the peer's certificate is
        checked against the cluster's CA, not against a host name."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        context.check_hostname = False
        context.load_cert_chain(self.cert, self.key)
        return context

    def server_context(self) -> ssl.SSLContext:
        """This side of a stage's link in a TLS cluster: our certificate presented, the
        worker's required and checked against the cluster's CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(self.cert, self.key)
        return context

    def security(self) -> Any:
        """Dask's ``Security`` for a client of the cluster (encryption required)."""
        from distributed import Security

        return Security(  # type: ignore[no-untyped-call]
            tls_ca_file=self.ca_file,
            tls_client_cert=self.cert,
            tls_client_key=self.key,
            require_encryption=True,
        )


def tls_files(settings: Mapping[str, object], root: Path) -> TlsFiles | None:
    """The TLS files the config names (relative paths are under ``root``), None when it names
    none; all three or none, each a readable file, else exit 2."""
    given = {name: settings.get(name) for name in TLS_SETTINGS}
    if not any(given.values()):
        return None
    paths = []
    for name, value in given.items():
        if value is None:
            missing = ", ".join(f"settings.{n}" for n, v in given.items() if v is None)
            raise OrchestratorError(
                f"settings.{name}: missing; a TLS cluster needs all of "
                f"{', '.join('settings.' + n for n in TLS_SETTINGS)} (missing: {missing})",
                exit_code=EXIT_USAGE,
            )
        path = root / str(value)
        if not os.access(path, os.R_OK) or not path.is_file():
            raise OrchestratorError(
                f"settings.{name}: {str(value)!r} is not a readable file; give the PEM file's "
                "path (absolute, or relative to the repository root)",
                exit_code=EXIT_USAGE,
            )
        paths.append(str(path))
    return TlsFiles(*paths)


def parse_address(address: str, source: str) -> Endpoint:
    """A ``tcp://HOST:PORT`` or ``tls://HOST:PORT`` scheduler address, else exit 2 with the fix."""
    match = ADDRESS_PATTERN.fullmatch(address.strip())
    port = int(match["port"]) if match else 0
    if match is None or not 0 < port < 65536:
        raise OrchestratorError(
            f"{source}: {address!r} is not a Dask scheduler address; give tcp://HOST:PORT or "
            "tls://HOST:PORT (e.g. tcp://127.0.0.1:8786, as printed by 'dask scheduler')",
            exit_code=EXIT_USAGE,
        )
    return Endpoint(match["scheme"], match["host"].strip("[]"), port)


def check_scheduler(
    address: str, source: str, tls: TlsFiles | None, deadline: float
) -> tuple[Endpoint, str]:
    """Check, without importing Dask, that the extra is installed and that ``address`` is a
    Dask scheduler that answers by the ``deadline`` (monotonic); else exit 2 with the fix.
    Returns the endpoint and this machine's address on the route to it (workers connect back
    to that address)."""
    endpoint = parse_address(address, source)
    if (endpoint.scheme == "tls") != (tls is not None):
        fix = (
            f"set {', '.join('settings.' + n for n in TLS_SETTINGS)} for it"
            if tls is None
            else "write the address as tls://HOST:PORT, or remove the TLS settings"
        )
        raise OrchestratorError(
            f"{source}: {address} is a {endpoint.scheme}:// address but the TLS settings are "
            f"{'missing' if tls is None else 'set'}; {fix}",
            exit_code=EXIT_USAGE,
        )
    missing = [name for name in ("distributed", "cloudpickle") if find_spec(name) is None]
    if missing:
        raise OrchestratorError(
            f"the dask executor needs Dask's distributed scheduler (not installed: "
            f"{', '.join(missing)}); install it with {INSTALL_HINT}",
            exit_code=EXIT_USAGE,
        )
    return endpoint, _probe(endpoint, address, source, tls, deadline)


def _probe(
    endpoint: Endpoint, address: str, source: str, tls: TlsFiles | None, deadline: float
) -> str:
    """Check the scheduler's port answers like a Dask scheduler; return this machine's address
    on that route, the one the scheduler sees us from.

    A Dask scheduler writes its side of the comm handshake as soon as it accepts a connection
    (distributed's ``Listener.on_connection``): a frame whose header is three native 64-bit
    counts (the bytes that follow the first count, the number of frames, the first frame's
    length), then the frame itself, a few dozen bytes. A web server (the dashboard on 8787)
    waits for a request; other services greet with text; a stalled one stops mid-frame. Each
    is refused here, by the deadline.
    """
    try:
        probe = socket.create_connection(
            (endpoint.host, endpoint.port), timeout=max(0.01, deadline - time.monotonic())
        )
    except OSError as error:
        reason = "no answer in time" if isinstance(error, TimeoutError) else _reason(error)
        raise OrchestratorError(
            f"{source}: cannot reach the Dask scheduler at {address} ({reason}); start one "
            "with 'dask scheduler' on that host, or fix the address",
            exit_code=EXIT_USAGE,
        ) from None
    with probe:
        local: str = probe.getsockname()[0]
        problem = _greeting_problem(probe, tls, deadline)
    if problem is not None:
        raise OrchestratorError(
            f"{source}: {address} is not a Dask scheduler ({problem}); give the address "
            "'dask scheduler' prints (tcp://HOST:8786 by default; 8787 is its dashboard)",
            exit_code=EXIT_USAGE,
        )
    return local


def _greeting_problem(probe: socket.socket, tls: TlsFiles | None, deadline: float) -> str | None:
    """None when ``probe`` receives a whole Dask handshake frame by the deadline, else why not."""
    silent_after = min(GREETING_TIMEOUT_SECONDS, max(0.0, deadline - time.monotonic()))
    deadline = time.monotonic() + silent_after
    stream: socket.socket = probe
    received = b""
    try:
        if tls is not None:
            probe.settimeout(max(0.01, deadline - time.monotonic()))
            stream = tls.client_context().wrap_socket(probe)
        needed = GREETING.size
        while len(received) < needed:
            stream.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = stream.recv(min(65536, needed - len(received)))
            if not chunk:
                break
            received += chunk
            if needed == GREETING.size and len(received) == GREETING.size:
                total, frames, first = GREETING.unpack(received)
                prelude = 8 * (frames + 1)
                if not (
                    0 < frames <= GREETING_MAX_FRAMES and prelude + first <= total <= GREETING_LIMIT
                ):
                    return f"its first bytes are not a Dask frame header: {received!r}"
                needed = 8 + total
    except TimeoutError:
        if not received:
            return f"it said nothing within {silent_after:.2g} s of the connection"
        return f"it stopped after {len(received)} bytes of its greeting, for {silent_after:.2g} s"
    except ssl.SSLError as error:
        return f"the TLS handshake failed: {error.reason or error}"
    except OSError as error:
        return f"reading its greeting failed: {_reason(error)}"
    if not received:
        return "it closed the connection without a word"
    if len(received) < GREETING.size:
        return f"its first bytes are not a Dask frame header: {received!r}"
    if len(received) < needed:
        return f"it closed the connection after {len(received)} bytes of its greeting"
    return None


def open_client(
    endpoint: Endpoint,
    address: str,
    source: str,
    tls: TlsFiles | None,
    deadline: float,
    cancellation: Cancellation | None = None,
) -> Any:
    """A Dask client of the checked scheduler, connected by the ``deadline`` (monotonic), else
    exit 2 naming why: no answer in time, another Dask or Python version, or Dask's error.

    Dask's own connection timeouts do not cover every step (a scheduler that stalls mid-way
    held a client for minutes), so each step runs in a helper thread that is abandoned at the
    deadline or on cancellation (`ConnectCancelled`); a Ctrl-C reaches the waiting thread.
    """
    import distributed

    quiet_dask_logging()
    security = tls.security() if tls is not None else None
    connection_args = security.get_connection_args("client") if security else {}

    def fail(problem: str) -> OrchestratorError:
        return OrchestratorError(
            f"{source}: cannot connect to the Dask scheduler at {address} ({problem}); start "
            "one with 'dask scheduler' or fix the address",
            exit_code=EXIT_USAGE,
        )

    def versions() -> dict[str, Any]:
        return asyncio.run(_scheduler_versions(endpoint.url, connection_args, deadline))

    try:
        theirs = bounded(versions, deadline, cancellation)
    except TimeoutError:
        raise fail("no answer to a version query in time") from None
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise fail(f"its version query failed: {type(error).__name__}: {error}") from None
    _check_versions(theirs, address, source, distributed.__version__)  # type: ignore[attr-defined]

    def client() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # checked above; Dask's warning is a table
            return distributed.Client(  # type: ignore[no-untyped-call]
                endpoint.url,
                security=security,
                timeout=max(0.1, deadline - time.monotonic()),
                set_as_default=False,
            )

    try:
        return bounded(client, deadline, cancellation)
    except TimeoutError:
        raise fail("no answer in time") from None
    except Exception as error:  # Dask raises its own kinds; each is one line here
        raise fail(f"{type(error).__name__}: {error}") from None


async def _scheduler_versions(
    url: str, connection_args: Mapping[str, Any], deadline: float
) -> dict[str, Any]:
    """The scheduler's package versions (its ``versions`` handler, stable across Dask versions)."""
    from distributed.comm.core import connect

    remaining = max(0.01, deadline - time.monotonic())
    comm = await connect(url, timeout=remaining, **connection_args)  # type: ignore[no-untyped-call]
    try:
        await comm.write({"op": "versions", "reply": True})
        reply: dict[str, Any] = await asyncio.wait_for(
            comm.read(), max(0.01, deadline - time.monotonic())
        )
        return reply
    finally:
        comm.abort()


def _check_versions(theirs: Mapping[str, Any], address: str, source: str, ours: str) -> None:
    """Exit 2 when the scheduler runs another ``distributed`` or Python (major.minor) version:
    Dask's rule, and tasks travel pickled, which breaks across them."""
    packages, host = theirs.get("packages") or {}, theirs.get("host") or {}
    their_dask = str(packages.get("distributed"))
    their_python = ".".join(str(host.get("python", "?")).split(".")[:2])
    our_python = f"{sys.version_info.major}.{sys.version_info.minor}"
    if (their_dask, their_python) != (ours, our_python):
        raise OrchestratorError(
            f"{source}: the Dask scheduler at {address} runs distributed {their_dask} on "
            f"Python {their_python}, this machine distributed {ours} on Python {our_python}: "
            "a version mismatch; use the same Python and Dask versions on the orchestrator, "
            "the scheduler and the workers",
            exit_code=EXIT_USAGE,
        )


def quiet_dask_logging() -> None:
    """Dask logs connection errors with tracebacks on stderr (a scheduler that goes away, a
    garbled handshake); each is reported in one line here or recorded (``scheduler-lost``),
    so Dask's own log says nothing."""
    for handler in logging.getLogger("distributed").handlers:
        handler.setLevel(logging.CRITICAL + 1)
    logging.getLogger("distributed").propagate = False


def bounded(call: Callable[[], T], deadline: float, cancellation: Cancellation | None) -> T:
    """``call()`` in a helper thread; its result, or TimeoutError at the ``deadline``
    (monotonic), or `ConnectCancelled` once ``cancellation`` is requested. An abandoned call
    goes on in its daemon thread; nothing waits for it."""
    outcome: list[Any] = []
    done = threading.Event()

    def attempt() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as error:  # handed to the caller, whatever it is
            outcome.append((False, error))
        finally:
            done.set()

    threading.Thread(target=attempt, name="dask-connect", daemon=True).start()
    wake = [cancellation.wakeup_fd()] if cancellation is not None else []
    while not done.is_set():
        if cancellation is not None and cancellation.requested:
            raise ConnectCancelled
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        select.select(wake, [], [], min(WAIT_SLICE_SECONDS, remaining))
    ok, value = outcome[0]
    if not ok:
        raise value
    result: T = value
    return result


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__
