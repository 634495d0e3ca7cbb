"""The static permission rules, as the gate's ``rules`` decider uses them.

The rules are an effect classifier: :func:`nexo_trio.core.effects.classify_call` says what a
tool call would do (``read``, ``workspace``, ``destructive`` or ``unknown``) and the
``rules`` decider (:mod:`nexo_trio.gate.deciders`) allows the first two, denies the
destructive and follows its policy for the unknown. Pure (stdlib + attrs): nothing here
touches the file system, runs a process or knows trio.

The classifier is built in layers, each module importing only the ones below it:

* :mod:`~nexo_trio.core.effects` — :func:`~nexo_trio.core.effects.classify_call`: tools,
  file tools, and Bash through the judges;
* :mod:`~nexo_trio.core.judges` — how a Bash command is read, the per-command judges (the
  read and write allow-lists, what is destructive) and the known limits;
* :mod:`~nexo_trio.core.fork_bomb` — fork bombs, spotted in the raw command text;
* :mod:`~nexo_trio.core.invocation` — what a simple command runs: its words brace-expanded
  and resolved against the variables and the virtual current directory, its prefixes
  (``sudo``, ``env``, ``xargs``…) unwrapped, opaque wrappers named;
* :mod:`~nexo_trio.core.shell_syntax` — the lexer and parser of Bash command text;
* :mod:`~nexo_trio.core.path_model` — the scope, and where a path lands in it (anchors for
  unknown places, the workspace, scratch and writable directories, devices), symlinks
  resolved through an injected resolver.

:func:`destructive_reason` is the classifier's answer to "is this Bash command destructive,
and why".
"""

from __future__ import annotations

from nexo_trio.core.judges import command_effect
from nexo_trio.core.path_model import PathResolver, Scope

__all__ = ["destructive_reason"]


def destructive_reason(
    command: str,
    workspace: str | None,
    *,
    scratch: str | None = None,
    resolve: PathResolver | None = None,
) -> str | None:
    """Why the Bash ``command`` is destructive in ``workspace``, or ``None`` if it is not
    (it only reads, writes inside the workspace, or its effect is unknown).

    The reason names the matched rule and the offending part, e.g.
    ``"rm -rf outside the workspace: /etc"``.
    """
    verdict = command_effect(command, Scope(workspace, scratch), resolve)
    return verdict.reason if verdict.effect == "destructive" else None
