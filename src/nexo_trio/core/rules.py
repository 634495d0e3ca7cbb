"""The static permission rules, as the gate's ``rules`` decider uses them.

The rules are an effect classifier: :func:`nexo_trio.core.effects.classify_call` says what a
tool call would do (``read``, ``workspace``, ``destructive`` or ``unknown``) and the
``rules`` decider (:mod:`nexo_trio.gate.deciders`) allows the first two, denies the
destructive and follows its policy for the unknown. Pure (stdlib + attrs): nothing here
touches the file system, runs a process or knows trio.

The classifier is built in layers, each module importing only the ones below it:

* :mod:`~nexo_trio.core.effects` — :func:`~nexo_trio.core.effects.classify_call`: tools,
  file tools, and Bash through the judges;
* :mod:`~nexo_trio.core.judges` — how a Bash command is read: the walk over lists,
  pipelines and redirections, the dispatch to the family judges, the known limits;
* the family judges, one module each: :mod:`~nexo_trio.core.file_judges` (rm, cp, mv, dd,
  chmod…), :mod:`~nexo_trio.core.sed_judges`, :mod:`~nexo_trio.core.find_judges`,
  :mod:`~nexo_trio.core.git_judges`, :mod:`~nexo_trio.core.code_judges` (shells,
  interpreters, build tools), :mod:`~nexo_trio.core.download_judges`,
  :mod:`~nexo_trio.core.reader_judges` (the read-only allow-list),
  :mod:`~nexo_trio.core.shell_state_judges` (cd, export, set…),
  :mod:`~nexo_trio.core.system_judges` (kill, power, mkfs…); and what they share:
  :mod:`~nexo_trio.core.verdicts`, :mod:`~nexo_trio.core.options` (GNU option parsing),
  :mod:`~nexo_trio.core.targets` (where a written path lands),
  :mod:`~nexo_trio.core.substitutions`;
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
