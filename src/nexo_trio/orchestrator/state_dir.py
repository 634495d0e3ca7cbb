"""The state directory's layout, named in one place.

::

    STATE_DIR/
      nexo.db                 the SQLite store: the goal ledger and session bindings
      run/gate-PID.sock       the permission gate's Unix socket of the process PID (mode
                              0600, dir 0700): one per process, so neither a second
                              process nor a leftover blocks a run, and the permission
                              server of a turn orphaned by a killed run finds no gate
      run/control-PID.sock    the control socket of the process PID (approve, deny, ...)
      run/api-DIGEST.sock     a goal's API proxy (sandbox.network: false)
      gate/GOAL.mcp.json      the MCP config of a goal's running turn (mode 0600)
      scratch/GOAL/           the goal's scratch dir: its turns' TMPDIR, writable in the
                              sandbox (nothing else of the state dir is)
      streams/GOAL/turn-N-STAMP.ndjson.gz
                              each turn's raw stdout, gzip-compressed, up to 256 MiB (mode
                              0600): the ledger keeps texts capped; `nexo-trio transcript
                              --raw` and `nexo-trio replay FILE` read these
      locks/GOAL.lock         the goal's lock: the process running the goal holds an
                              exclusive flock on it (the file names that process; see
                              orchestrator/goal_lock.py)

A socket address holds about 100 bytes: when a socket's path would be longer, it lives in
a private directory under the temp dir instead, named after the state dir.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Final

import attrs

from nexo_trio.gate.socket_server import MAX_SOCKET_PATH

DB_NAME: Final = "nexo.db"


@attrs.frozen
class StateDir:
    """Where one state directory keeps each of its files."""

    root: Path

    @property
    def database(self) -> Path:
        """The SQLite store."""
        return self.root / DB_NAME

    def gate_socket(self, pid: int) -> Path:
        """The permission gate's socket of the process ``pid`` (see the module docstring
        for long paths)."""
        return self._socket(f"gate-{pid}")

    def control_socket(self, pid: int) -> Path:
        """The control socket of the process ``pid`` running goals from this state dir."""
        return self._socket(f"control-{pid}")

    def api_proxy_socket(self, goal_id: str) -> Path:
        """The socket of the goal's API proxy (turns with no network but the API)."""
        return self._socket(f"api-{hashlib.sha256(goal_id.encode()).hexdigest()[:12]}")

    def mcp_config(self, goal_id: str) -> Path:
        """The MCP config of the goal's running turn (goal ids are safe file names)."""
        return self.root / "gate" / f"{goal_id}.mcp.json"

    def streams(self, goal_id: str) -> Path:
        """Where the goal's turns' raw stdout is kept."""
        return self.root / "streams" / goal_id

    def shadow(self, goal_id: str) -> Path:
        """The goal's private shadow repository (``checkpoints: true`` of a plain directory)."""
        return self.root / "git" / f"{goal_id}.git"

    def lock(self, goal_id: str) -> Path:
        """The goal's lock file (held by the process running the goal)."""
        return self.root / "locks" / f"{goal_id}.lock"

    def scratch(self, goal_id: str) -> Path:
        """The goal's scratch directory (its turns' ``TMPDIR``)."""
        return self.root / "scratch" / goal_id

    def _socket(self, name: str) -> Path:
        preferred = self.root / "run" / f"{name}.sock"
        if len(os.fsencode(preferred)) <= MAX_SOCKET_PATH:
            return preferred
        digest = hashlib.sha256(os.fsencode(self.root.resolve())).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"nexo-trio-{os.getuid()}" / f"{digest}-{name}.sock"
