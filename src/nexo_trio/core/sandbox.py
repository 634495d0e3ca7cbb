"""The confinement of one turn, as data: what it may write, what it may see, and the
bubblewrap command line that means (pure; the engine runs it, ``engine/sandbox.py``
prepares the paths and probes bwrap).

What :func:`bwrap_argv` asks of bubblewrap:

* the whole file system read-only (``--ro-bind / /``), fresh ``/dev`` and ``/proc``, and a
  private, empty, throw-away ``/tmp`` (``--tmpfs /tmp``, unless ``private_tmp`` is off);
* read-only binds of :attr:`SandboxPlan.readable` (paths under the private ``/tmp`` the turn
  must still see: the gate's socket or its directory, the MCP config, a binary);
* read-write binds of the workspace, the scratch directory (the turn's ``TMPDIR``), the
  CLI's own files (``$HOME/.claude`` and ``$HOME/.claude.json``, never the whole home) and
  :attr:`SandboxPlan.writable`;
* its own PID namespace (``--unshare-pid``), tied to its supervisor
  (``--die-with-parent``), in a session of its own (``--new-session``: no TIOCSTI into our
  terminal; the CLI's process group is then the sandbox init's), with every capability
  dropped (``--cap-drop ALL``: as root bwrap otherwise leaves the turn all of them, and with
  ``CAP_SYS_ADMIN`` a ``mount -o remount,rw`` undoes the read-only root);
* no network with ``network=False`` (``--unshare-net``: a network namespace with only a
  loopback device of its own). That cuts off the Messages API too (the real CLI retries
  for minutes and the turn times out), unless the plan has an :class:`ApiProxy`: "no
  network but the API". The CLI then runs behind a relay (``engine/netrelay.py``) that
  listens on the sandbox's loopback and copies each connection to a Unix socket bound
  into the sandbox, where the orchestrator's allow-listing proxy (``engine/api_gateway.py``)
  lets through only the API's ``host:port``; ``HTTPS_PROXY``/``HTTP_PROXY`` point the
  CLI (and any tool that honours them) at the relay.

Mount order matters, since a later mount covers an earlier one at or above the same path:
binds are emitted shallowest first, so the most specific path decides (a writable
workspace inside a read-only state dir is writable; a read-only path inside a writable
directory is read-only). A path named both readable and writable is writable. Every path
must exist before bwrap runs (bwrap fails on a missing source): creating or skipping them
is the shell's job (:func:`nexo_trio.engine.sandbox.prepare_sandbox`), not the plan's.
"""

from __future__ import annotations

import posixpath
from typing import Any, Final

import attrs

BWRAP: Final = "bwrap"
BWRAP_INSTALL_HINT: Final = "apt-get install bubblewrap"
CLI_DIR: Final = ".claude"
"""The CLI's settings, sessions and transcripts, under its ``HOME``."""
CLI_FILE: Final = ".claude.json"
"""The CLI's state file, under its ``HOME``. The CLI replaces it by writing a temp file
beside it and renaming that over it, which a read-only home does not allow: in the sandbox
the file is read but stays as it was (the CLI says nothing and carries on; its sessions,
and so ``--resume``, live in :data:`CLI_DIR`)."""
NAMESPACE_FLAGS: Final = (
    "--unshare-pid",
    "--die-with-parent",
    "--new-session",
    "--cap-drop",
    "ALL",
)
"""The process side of the confinement (see the module docstring); ``--unshare-net`` is
added when the plan has no network."""


def _check_path(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name} must be a non-empty path, got {value!r}")
    if "\0" in value:
        raise ValueError(f"{attribute.name} must not contain a NUL byte: {value!r}")
    if not value.startswith("/"):
        raise ValueError(f"{attribute.name} must be an absolute path, got {value!r}")
    if posixpath.normpath(value) != value or value.startswith("//"):
        raise ValueError(f"{attribute.name} must be a normalised path, got {value!r}")
    if value == "/":
        raise ValueError(f"{attribute.name} must not be the root directory")


def _check_paths(instance: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for path in value:
        _check_path(instance, attribute, path)


def _check_optional_path(
    instance: object, attribute: attrs.Attribute[Any], value: str | None
) -> None:
    if value is not None:
        _check_path(instance, attribute, value)


def parse_host_port(netloc: str, *, default_port: int | None = None) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` too) as a lower-cased host and a port; ``None`` when it
    is not one (no port and no ``default_port``, an empty host, a port out of range)."""
    host, sep, port = netloc.rpartition(":")
    if not sep or "]" in port:
        if default_port is None:
            return None
        host, port = netloc, str(default_port)
    host = host.strip("[]").lower()
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _check_addresses(
    instance: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]
) -> None:
    if not value:
        raise ValueError(f"{attribute.name} must name at least one host:port")
    for item in value:
        if parse_host_port(item) is None:
            raise ValueError(f"{attribute.name}: {item!r} is not host:port")


def _check_port(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 < value < 65536:
        raise ValueError(f"{attribute.name} must be a TCP port, got {value}")


def _paths(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)  # type: ignore[arg-type]


@attrs.frozen
class Mount:
    """One bind of the plan: ``path`` on itself, read-only or read-write."""

    path: str
    writable: bool

    @property
    def depth(self) -> int:
        """How many components the path has (``/a/b``: 2)."""
        return self.path.count("/")


API_PROXY_PORT: Final = 3128
"""The loopback port the relay listens on inside the sandbox (its own network namespace:
every port is free there)."""


@attrs.frozen
class ApiProxy:
    """No network but the API: the relay's Unix socket and what the proxy lets through."""

    socket: str = attrs.field(validator=_check_path)
    """Where the orchestrator's proxy listens (bound read-only into the sandbox at the same
    path; mind the ~107-byte limit of a Unix socket path)."""
    allow: tuple[str, ...] = attrs.field(converter=_paths, validator=_check_addresses)
    """The ``host:port`` the turn may reach (``api.anthropic.com:443``, the host and port
    of ``ANTHROPIC_BASE_URL``)."""
    port: int = attrs.field(default=API_PROXY_PORT, validator=_check_port)

    def allowed(self) -> list[tuple[str, int]]:
        """:attr:`allow`, parsed."""
        return [address for item in self.allow if (address := parse_host_port(item))]

    @property
    def url(self) -> str:
        """The proxy's URL inside the sandbox."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The proxy variables of the confined command (both spellings; no exceptions)."""
        env: dict[str, str] = {}
        for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
            env[name] = env[name.lower()] = self.url
        env["NO_PROXY"] = env["no_proxy"] = ""
        return env


def _check_api_proxy(instance: SandboxPlan, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and instance.network:
        raise ValueError("api_proxy only makes sense with network=False")


@attrs.frozen
class SandboxPlan:
    """Where one turn may write and what it may see (all paths absolute, normalised and,
    as the shell prepares them, real: no symlinks)."""

    workspace: str = attrs.field(validator=_check_path)
    """The goal's workspace (read-write; the turn's working directory)."""
    scratch: str = attrs.field(validator=_check_path)
    """The goal's scratch directory (read-write; the CLI's ``TMPDIR``)."""
    writable: tuple[str, ...] = attrs.field(default=(), converter=_paths, validator=_check_paths)
    """More read-write directories (``sandbox.writable`` of the config)."""
    cli_home: str | None = attrs.field(default=None, validator=_check_optional_path)
    """The CLI's ``HOME``: ``cli_home/.claude`` and ``cli_home/.claude.json`` are bound
    read-write (only these: the rest of the home stays read-only)."""
    readable: tuple[str, ...] = attrs.field(default=(), converter=_paths, validator=_check_paths)
    """Paths that must stay visible, read-only, under the private ``/tmp``: the gate's
    socket or its directory (``connect()`` needs no write access), the MCP config, a CLI
    binary that lives under ``/tmp``. Outside ``/tmp`` everything is visible anyway."""
    network: bool = True
    """``False``: the turn gets a network namespace of its own (loopback only), which cuts
    off the Messages API as well (see the module docstring)."""
    private_tmp: bool = True
    """Mount an empty tmpfs on ``/tmp``: the turn neither sees nor changes the host's."""
    bwrap: str = attrs.field(default=BWRAP, validator=attrs.validators.min_len(1))
    """The bubblewrap executable."""
    api_proxy: ApiProxy | None = attrs.field(default=None, validator=_check_api_proxy)
    """With ``network=False``: reach the API (only) through a proxy; see the module
    docstring."""

    @property
    def cli_paths(self) -> tuple[str, ...]:
        """The CLI's own files under :attr:`cli_home` (empty without one)."""
        if self.cli_home is None:
            return ()
        return (posixpath.join(self.cli_home, CLI_DIR), posixpath.join(self.cli_home, CLI_FILE))

    @property
    def env(self) -> dict[str, str]:
        """What the confined command's environment must hold: ``TMPDIR``, and the proxy
        variables with an :attr:`api_proxy`."""
        env = {"TMPDIR": self.scratch}
        if self.api_proxy is not None:
            env.update(self.api_proxy.env)
        return env

    def mounts(self) -> list[Mount]:
        """The binds, in the order bwrap must make them (see the module docstring)."""
        chosen: dict[str, bool] = {}
        extra = () if self.api_proxy is None else (self.api_proxy.socket,)
        for path in (*self.readable, *extra):
            chosen.setdefault(path, False)
        for path in (self.workspace, self.scratch, *self.cli_paths, *self.writable):
            chosen[path] = True
        mounts = [Mount(path, writable) for path, writable in chosen.items()]
        return sorted(mounts, key=lambda m: m.depth)  # stable: equal depths keep their order

    def writable_paths(self) -> tuple[str, ...]:
        """Every path the turn may write (besides a private ``/tmp``)."""
        return tuple(m.path for m in self.mounts() if m.writable)


def bwrap_argv(
    plan: SandboxPlan, *, chdir: str | None = None, json_status_fd: int | None = None
) -> list[str]:
    """The bubblewrap command line for ``plan``, up to and including ``--``: append the
    command to run. ``chdir`` is the command's working directory inside the sandbox;
    ``json_status_fd`` a file descriptor bwrap reports on (``{"child-pid": ...}`` once the
    namespaces exist, ``{"exit-code": ...}`` only if the command was really started)."""
    argv = [plan.bwrap]
    if json_status_fd is not None:
        if json_status_fd < 0:
            raise ValueError(f"json_status_fd must be a file descriptor, got {json_status_fd}")
        argv += ["--json-status-fd", str(json_status_fd)]
    argv += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    if plan.private_tmp:
        argv += ["--tmpfs", "/tmp"]
    for mount in plan.mounts():
        argv += ["--bind" if mount.writable else "--ro-bind", mount.path, mount.path]
    argv += NAMESPACE_FLAGS
    if not plan.network:
        argv.append("--unshare-net")
    if chdir is not None:
        argv += ["--chdir", chdir]
    argv.append("--")
    return argv
