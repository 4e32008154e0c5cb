"""A stage under test: a root, a cache directory and a spec, fingerprinted and stored for real.

Used in-process by the tests and by ``driver.py`` in child processes (concurrency, SIGKILL,
read-only and full filesystems), so both drive the cache the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codex_orchestrator.cache.fingerprint import Fingerprinter, InputDigests
from codex_orchestrator.cache.key import Fingerprint, stage_fingerprint
from codex_orchestrator.cache.spec import CacheSpec
from codex_orchestrator.cache.store import CacheStore, Hit, Miss, StageRecord, StoreOutcome

DRIVER = Path(__file__).with_name("driver.py")
SRC = Path(__file__).resolve().parents[2] / "src"


@dataclass
class Stage:
    """One cached stage of pipeline ``main`` in ``root``, with its cache in ``cache``."""

    root: Path
    cache: Path
    spec: CacheSpec = field(default_factory=lambda: CacheSpec(inputs=("src/**",)))
    command: str = "make test"
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    environ: dict[str, str] = field(default_factory=dict)
    needs: dict[str, str] = field(default_factory=dict)
    identity: str = "main/test"
    warnings: list[str] = field(default_factory=list)
    read_only: bool = False
    racy_margin_ns: int | None = None

    def fingerprinter(self) -> Fingerprinter:
        """A fingerprinter of this root; warnings are collected in ``warnings``."""
        extra: dict[str, Any] = {}
        if self.racy_margin_ns is not None:
            extra["racy_margin_ns"] = self.racy_margin_ns
        return Fingerprinter(
            self.root, self.cache, read_only=self.read_only, warn=self.warnings.append, **extra
        )

    def store_handle(self) -> CacheStore:
        """The cache store; warnings are collected in ``warnings``."""
        return CacheStore(self.cache, self.root, warn=self.warnings.append)

    def inputs(self) -> InputDigests:
        """The inputs as they are now."""
        return self.fingerprinter().inputs(self.spec)

    def fingerprint(self, inputs: InputDigests | None = None) -> Fingerprint:
        """The stage's fingerprint as things are now."""
        return stage_fingerprint(
            command=self.command,
            cwd=self.cwd,
            env=self.env,
            spec=self.spec,
            environ=self.environ,
            needs=self.needs,
            inputs=self.inputs() if inputs is None else inputs,
        )

    def lookup(self) -> Hit | Miss:
        """Fingerprint, then look up."""
        return self.store_handle().lookup(self.identity, self.fingerprint())

    def store(
        self,
        run_id: str = "run-1",
        stdout: bytes = b"all passed\n",
        stderr: bytes = b"",
        fingerprint: Fingerprint | None = None,
    ) -> StoreOutcome:
        """Store a clean success with these log bytes (written beside the cache)."""
        logs = self.cache.parent / f"logs-{run_id}-{os.getpid()}"
        logs.mkdir(parents=True, exist_ok=True)
        (logs / "stdout.log").write_bytes(stdout)
        (logs / "stderr.log").write_bytes(stderr)
        record = StageRecord(run_id, "default", "main", "test", "all passed", 12.5)
        return self.store_handle().store(
            self.identity,
            self.fingerprint() if fingerprint is None else fingerprint,
            record,
            stdout=logs / "stdout.log",
            stderr=logs / "stderr.log",
        )

    def store_log(self, run_id: str, stdout: Path) -> StoreOutcome:
        """Store a clean success whose stdout log is the file ``stdout``."""
        empty = self.cache.parent / f"empty-{run_id}-{os.getpid()}.log"
        empty.write_bytes(b"")
        record = StageRecord(run_id, "default", "main", "test", "all passed", 12.5)
        return self.store_handle().store(
            self.identity, self.fingerprint(), record, stdout=stdout, stderr=empty
        )

    def to_json(self) -> str:
        """What `driver.py` needs to rebuild this stage."""
        inputs = self.spec.inputs
        return json.dumps(
            {
                "root": str(self.root),
                "cache": str(self.cache),
                "inputs": inputs if isinstance(inputs, str) else list(inputs),
                "outputs": list(self.spec.outputs),
                "command": self.command,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Stage:
        """The stage `to_json` described."""
        data = json.loads(text)
        inputs = data["inputs"] if isinstance(data["inputs"], str) else tuple(data["inputs"])
        spec = CacheSpec(inputs=inputs, outputs=tuple(data["outputs"]))
        return cls(Path(data["root"]), Path(data["cache"]), spec, command=data["command"])


def write(root: Path, relative: str, content: str | bytes = "x\n") -> Path:
    """Write ``root/relative`` (parents created)."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    return path


def entry_dirs(cache: Path) -> list[Path]:
    """Every entry directory in ``cache``."""
    return sorted(path for path in (cache / "entries").glob("*/*") if path.is_dir())


def drive(stage: Stage, *operations: list[object], wrap: Any = list) -> list[str]:
    """The command that runs ``operations`` on ``stage`` in a child (``wrap``: a fault)."""
    command = [sys.executable, str(DRIVER), stage.to_json(), json.dumps(list(operations))]
    result: list[str] = wrap(command)
    return result


#: What every `run_script` body starts with: ``stage``, the stage given to it.
_PRELUDE = (
    "import sys\nsys.path.insert(0, sys.argv[1])\nfrom cache_kit import Stage\n"
    "stage = Stage.from_json(sys.argv[2])\n"
)


def run_script(body: str, stage: Stage, *args: str) -> str:
    """Run Python ``body`` on ``stage`` in a child (its own arguments from ``sys.argv[3]``),
    with a deadline; it must succeed. Its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", _PRELUDE + body, str(DRIVER.parent), stage.to_json(), *args],
        env=driver_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def driver_env() -> dict[str, str]:
    """The environment of a driver child: this checkout's package first on the path."""
    return {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
