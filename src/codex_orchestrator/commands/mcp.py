"""``codex-orchestrator mcp [--read-only]``: serve the Model Context Protocol over stdio."""

from __future__ import annotations

import argparse

from codex_orchestrator.errors import UsageError
from codex_orchestrator.records.workspace import Workspace
from codex_orchestrator.util.console import Reporter

INSTALL_HINT = (
    "pip install 'codex-pipeline-orchestrator[mcp]' "
    "(installed with pipx: pipx inject codex-pipeline-orchestrator 'mcp>=2.3,<3')"
)


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    """Serve until stdin closes or the server is signalled; the SDK is imported only here."""
    root = Workspace.from_env().root
    try:
        import anyio

        from codex_orchestrator.mcp.server import serve
    except ImportError as error:
        raise UsageError(
            f"the mcp command needs the MCP SDK, an optional extra ({error}); "
            f"install it: {INSTALL_HINT}"
        ) from None
    anyio.run(serve, root, args.read_only)
    return 0
