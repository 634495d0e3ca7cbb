"""The judges of ``git``: which forms read, which change only the workspace's repository,
which destroy work or history.

* ``read``: the subcommands that only read (:data:`GIT_READ`), the listing forms of
  ``branch``, ``tag``, ``stash``, ``remote``, ``config``…;
* ``workspace``: the subcommands that change only the workspace's repository
  (:data:`GIT_WORKSPACE`), or one in the scratch or writable directories;
* ``destructive``: ``git reset --hard``, forced or deleting ``git push`` (``--mirror`` too),
  ``git clean``, wholesale discards (``git checkout -- .``, ``-f``, ``git restore .``, magic
  pathspecs ``:/``, ``:!x``, ``:(glob)*``), ``git branch -D``/``-M``, ``git stash
  drop|clear``, ``git reflog expire|delete``, ``git gc --prune=…``, ``git prune``, ``git
  filter-branch``, ``git update-ref -d``, ``git rm`` of everything, changing a repository
  outside the workspace (``git -C /elsewhere commit``), an output file outside it;
* ``unknown``: talking to a remote, configuration given for the run (``git -c``), forms whose
  effect the rules do not follow (``rebase -i``, ``bisect run``, ``worktree``…).

The repository a ``git`` command changes is taken to be the workspace's when its current
directory is inside the workspace (a workspace inside a larger repository, or a worktree,
changes that repository's ``.git``). Hooks and configuration already in the repository are
trusted (``git commit`` runs hooks).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from nexo_trio.core.invocation import Arg, Cmd, Ctx, names
from nexo_trio.core.options import long_matches
from nexo_trio.core.path_model import CWD, Comps, anchored, classify, components, locate, show
from nexo_trio.core.shell_syntax import Redir
from nexo_trio.core.targets import OUTSIDE_KINDS, path_effect
from nexo_trio.core.verdicts import (
    EffectVerdict,
    cmdline,
    destructive,
    is_destructive,
    read,
    unknown,
    workspace,
    worse,
)

__all__ = ["GIT_READ", "GIT_WORKSPACE", "judge_git"]

GIT_READ = names(
    "status log diff show rev-parse rev-list ls-files ls-tree cat-file describe shortlog blame"
    " annotate grep show-ref for-each-ref merge-base name-rev count-objects verify-commit"
    " verify-tag var check-ignore check-attr check-ref-format cherry whatchanged range-diff"
    " diff-tree diff-index diff-files help version show-branch"
)
"""git subcommands that only read (unless given an output file)."""
GIT_WORKSPACE = names(
    "add commit checkout switch restore reset merge rebase cherry-pick revert am apply mv rm"
    " tag branch stash notes init gc repack fsck update-ref symbolic-ref bisect replace"
    " pack-refs sparse-checkout read-tree write-tree commit-tree hash-object update-index"
    " mktag mktree clean prune reflog remote config worktree format-patch archive bundle"
    " filter-branch"
)
"""git subcommands that change the repository they run in (some forms are judged further)."""
_GIT_NETWORK = names("fetch pull push clone ls-remote submodule send-email request-pull")
_GIT_GLOBAL_FLAGS = names(
    "-P -p --paginate --no-pager --no-optional-locks --literal-pathspecs --glob-pathspecs"
    " --noglob-pathspecs --icase-pathspecs --no-replace-objects --no-lazy-fetch --bare"
    " --no-advice"
)
_GIT_PRINTS = names("--version --help --html-path --man-path --info-path --exec-path")
_GIT_TREE_CHANGERS = names(
    "checkout switch restore reset merge rebase cherry-pick revert am apply stash bisect"
    " read-tree sparse-checkout"
)


def judge_git(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    args = cmd.args
    line = cmdline(cmd)
    cwd = cmd.cwd
    elsewhere: list[Arg] = []
    i = 0
    while i < len(args):
        a = args[i]
        v = a.value
        if v is None:
            return unknown(
                "unresolvable-argument",
                f"git {a.shown} cannot be resolved statically: {line}",
                line,
            )
        if v == "-C" and i + 1 < len(args):
            where = args[i + 1].value
            cwd = components(where, cwd) if where is not None else (CWD,)
            i += 2
        elif v in ("--git-dir", "--work-tree") and i + 1 < len(args):
            elsewhere.append(args[i + 1])
            i += 2
        elif v.startswith(("--git-dir=", "--work-tree=")):
            value = v.partition("=")[2]
            elsewhere.append(Arg(a.word, value, value))
            i += 1
        elif v == "--namespace" or v.startswith("--namespace="):
            i += 1 if "=" in v else 2
        elif v in _GIT_GLOBAL_FLAGS:
            i += 1
        elif v in _GIT_PRINTS:
            return read("read-only-command", f"git {v} only prints", line)
        elif v.startswith(("-c", "--config-env", "--exec-path=")):
            return unknown(
                "git-config",
                f"git {v} changes configuration for this run, which can make git run"
                f" programs: {line}",
                line,
            )
        elif v.startswith("-"):
            return unknown(
                "unknown-option", f"git {v} is not an option the rules know: {line}", line
            )
        else:
            break
    if i >= len(args):
        return read("read-only-command", "git with no subcommand prints its help", line)
    sub = args[i].value or ""
    rest = list(args[i + 1 :])
    values = [a.value or "" for a in rest]
    found = _git_destructive(sub, values, rest, cwd, ctx)
    if found is not None:
        return found
    if sub in _GIT_NETWORK:
        return unknown("network-client", f"git {sub} talks to a remote: {line}", line)
    kind = _git_form(sub, values)
    if kind == "unknown" or sub not in GIT_READ | GIT_WORKSPACE:
        return unknown(
            "git-subcommand", f"git {sub} is not a form whose effect the rules know: {line}", line
        )
    outputs = _git_outputs(sub, rest)
    verdict: EffectVerdict | None = None
    for target in outputs:
        verdict = worse(verdict, path_effect(ctx, cwd, target, f"git {sub}", "write"))
    if is_destructive(verdict):
        return verdict
    if kind == "read":
        return worse(verdict, read("git-read", f"git {sub} only reads", line))
    repo = _git_repo(sub, cwd, elsewhere, ctx, line)
    if repo.effect == "workspace" and sub in _GIT_TREE_CHANGERS:
        root = ctx.world.workspace if ctx.world.workspace is not None else cwd
        ctx.changed.append(root)
    return worse(verdict, repo)


def _git_repo(sub: str, cwd: Comps, elsewhere: Sequence[Arg], ctx: Ctx, line: str) -> EffectVerdict:
    """Where a changing git command acts: its repository must be the workspace's (or one
    in the scratch or writable directories)."""
    here = classify(cwd, ctx.world)[0] if anchored(cwd) else locate(show(cwd), (), ctx.world).kind
    places = [(show(cwd), here)]
    for a in elsewhere:
        if a.value is None:
            return unknown(
                "unresolvable-target", f"git {sub}: {a.shown} cannot be resolved statically", line
            )
        places.append((a.shown, locate(a.value, cwd, ctx.world).kind))
    for shown, kind in places:
        if kind in OUTSIDE_KINDS or kind in ("device", "safe_device"):
            return destructive(
                "git-outside-workspace",
                f"git {sub} changes a repository outside the workspace: {shown}",
                line,
            )
        if kind in ("cwd", "below_cwd"):
            return unknown(
                "unknown-directory",
                f"git {sub} changes a repository the rules cannot place: {line}",
                line,
            )
    return workspace("git-workspace", f"git {sub} changes only the workspace's repository", line)


_GIT_BRANCH_CHANGES = (("d", "--delete"), ("m", "--move"), ("c", "--copy"),
                       ("u", "--set-upstream-to"))  # fmt: skip
_GIT_BRANCH_LISTS = (("l", "--list"), ("a", "--all"), ("r", "--remotes"), ("v", "--verbose"))
_GIT_TAG_CHANGES = (("d", "--delete"), ("a", "--annotate"), ("s", "--sign"), ("f", "--force"),
                    ("m", "--message"), ("e", "--edit"))  # fmt: skip
_GIT_LIST_OPTIONS = ("--contains", "--no-contains", "--merged", "--no-merged", "--points-at",
                     "--show-current", "--format", "--sort", "--column", "-n")  # fmt: skip
_GIT_CONFIG_CHANGES = ("--unset", "--add", "--replace", "--rename", "--remove", "--edit", "-e")
_GIT_REMOTE_CHANGES = names("add rename remove rm set-url set-head set-branches")


def _any_flag(flags: Sequence[str], options: Sequence[tuple[str, str]]) -> bool:
    return any(_git_flag(v, letter, long) for v in flags for letter, long in options)


def _git_form(sub: str, values: list[str]) -> Literal["read", "workspace", "unknown"]:
    """Whether a git subcommand (of :data:`GIT_READ` or :data:`GIT_WORKSPACE`) reads, changes
    the repository, or does something the rules do not follow."""
    flags = [v for v in values if v.startswith("-")]
    operands = [v for v in values if not v.startswith("-")]
    first = operands[0] if operands else ""
    if sub in GIT_READ:
        return (
            "unknown"
            if sub == "grep" and _any_flag(flags, [("O", "--open-files-in-pager")])
            else "read"
        )
    if sub in ("branch", "tag"):
        if any(v.startswith("--edit-description") for v in flags):
            return "unknown"
        changes = _any_flag(flags, _GIT_BRANCH_CHANGES if sub == "branch" else _GIT_TAG_CHANGES)
        changes = changes or any(
            v.startswith(("--unset-upstream", "--track", "--no-track")) for v in flags
        )
        listing = _any_flag(flags, _GIT_BRANCH_LISTS if sub == "branch" else [("l", "--list")])
        listing = listing or any(v.startswith(_GIT_LIST_OPTIONS) for v in flags)
        return "workspace" if changes or (operands and not listing) else "read"
    if sub == "stash":
        return "read" if first in ("list", "show") else "workspace"
    if sub == "reflog":
        return "read"  # expire/delete are destructive (judged before)
    if sub == "notes":
        return "read" if first in ("", "list", "show") else "workspace"
    if sub == "remote":
        if first in ("", "get-url"):
            return "read"
        return "workspace" if first in _GIT_REMOTE_CHANGES else "unknown"
    if sub == "config":
        if any(v.startswith(_GIT_CONFIG_CHANGES) for v in flags):
            return "unknown"
        if first in ("get", "list") or any(v.startswith(("--get", "--list", "-l")) for v in flags):
            return "read"
        return "read" if len(operands) == 1 and not flags else "unknown"
    if sub == "worktree":
        return "read" if first == "list" else "unknown"
    if sub == "apply" and any(v.startswith("--unsafe-paths") for v in flags):
        return "unknown"  # it may then write outside the working tree
    if sub == "rebase" and any(
        _git_flag(v, "i", "--interactive") or _git_flag(v, "x", "--exec") or v.startswith("--exec")
        for v in flags
    ):
        return "unknown"
    if sub == "bisect":
        if first in ("log", "visualize", "view"):
            return "read"
        return "unknown" if first == "run" else "workspace"
    if sub == "symbolic-ref":
        if any(_git_flag(v, "d", "--delete") for v in flags):
            return "unknown"
        return "read" if len(operands) <= 1 else "workspace"
    if sub in ("clean", "prune"):
        return "read"  # the deleting forms are destructive (judged before)
    if sub == "archive":
        return "unknown" if any(v.startswith("--remote") for v in flags) else "read"
    if sub == "bundle":
        return (
            "read"
            if first in ("verify", "list-heads")
            else "workspace"
            if first == "create"
            else "unknown"
        )
    if sub == "format-patch" and any(v == "--stdout" for v in flags):
        return "read"
    return "workspace"


def _git_outputs(sub: str, rest: Sequence[Arg]) -> list[Arg]:
    """Files a git subcommand is told to write (``--output``, ``-o``, ``bundle create F``,
    ``init DIR``)."""
    out: list[Arg] = []
    for k, a in enumerate(rest):
        v = a.value or ""
        key, eq, given = v.partition("=")
        nxt = rest[k + 1] if k + 1 < len(rest) else None
        if long_matches(key, ["--output", "--output-directory"]) and key.startswith("--ou"):
            if eq:
                out.append(Arg(a.word, given, given))
            elif nxt is not None:
                out.append(nxt)
        elif v == "-o" and sub in ("archive", "format-patch") and nxt is not None:
            out.append(nxt)
        elif key == "--separate-git-dir" and sub == "init":
            out.append(Arg(a.word, given, given) if eq else nxt or a)
    operands = [a for a in rest if not (a.value or "-").startswith("-")]
    if sub == "bundle" and len(operands) > 1 and operands[0].value == "create":
        out.append(operands[1])
    if sub == "init" and operands:
        out.append(operands[-1])
    return out


def _git_flag(value: str, letter: str, long: str, arg_letters: str = "") -> bool:
    """Whether ``value`` is ``long`` (or an abbreviation of it) or a short cluster holding
    ``letter`` (letters after one in ``arg_letters`` are that option's value)."""
    if value.startswith("--"):
        return bool(long_matches(value.partition("=")[0], [long]))
    if not value.startswith("-"):
        return False
    for ch in value[1:]:
        if ch == letter:
            return True
        if ch in arg_letters:
            return False
    return False


def _git_destructive(
    sub: str, values: list[str], rest: Sequence[Arg], cwd: Comps, ctx: Ctx
) -> EffectVerdict | None:
    """The git forms that destroy work or history (see the module docstring)."""
    flags = [v for v in values if v.startswith("-")]
    operands = [v for v in values if not v.startswith("-")]
    first = operands[0] if operands else ""
    subject = " ".join(["git", sub, *values])[:120]

    def bad(rule: str, reason: str) -> EffectVerdict:
        return destructive(rule, reason, subject)

    if sub == "reset" and any(_git_flag(v, "", "--hard") for v in flags):
        return bad("git-reset-hard", "git reset --hard discards uncommitted changes")
    if sub == "push":
        reason = _git_push_reason(values)
        return bad("git-push-force", reason) if reason else None
    if sub == "clean":
        dry = any(_git_flag(v, "n", "--dry-run") for v in flags)
        if dry:
            return None
        if any(_git_flag(v, "f", "--force") for v in flags):
            return bad("git-clean", f"git clean -f deletes untracked files: {' '.join(flags)}")
        return bad(
            "git-clean", "git clean deletes untracked files (when clean.requireForce is off)"
        )
    if sub in ("checkout", "restore", "switch"):
        reason = _git_discard_reason(sub, values, rest, cwd, ctx)
        return bad("git-discard", reason) if reason else None
    if sub == "stash" and first in ("drop", "clear"):
        return bad(
            "git-stash-drop",
            f"git stash {first} drops {'every stash' if first == 'clear' else 'a stash'} for good",
        )
    if sub == "branch":
        force = any(_git_flag(v, "f", "--force") for v in flags)
        delete = any(_git_flag(v, "d", "--delete") for v in flags)
        if any(_git_flag(v, "D", "") for v in flags) or (force and delete):
            return bad(
                "git-branch-force-delete", "git branch -D deletes a branch even if it is not merged"
            )
        if any(_git_flag(v, "M", "") or _git_flag(v, "C", "") for v in flags) or (
            force and any(_git_flag(v, "m", "--move") or _git_flag(v, "c", "--copy") for v in flags)
        ):
            return bad("git-branch-force-delete", "git branch -M/-C overwrites an existing branch")
    if sub == "reflog" and first in ("expire", "delete"):
        return bad(
            "git-history", f"git reflog {first} drops the history that recovers lost commits"
        )
    if sub == "gc" and any(v.startswith("--prune") for v in flags):
        return bad("git-history", "git gc --prune deletes unreachable objects for good")
    if sub == "prune" and not any(_git_flag(v, "n", "--dry-run") for v in flags):
        return bad("git-history", "git prune deletes unreachable objects for good")
    if sub in ("filter-branch", "filter-repo"):
        return bad("git-history", f"git {sub} rewrites the whole history")
    if sub == "update-ref" and any(_git_flag(v, "d", "") for v in flags):
        return bad("git-history", "git update-ref -d deletes a ref")
    if sub == "rm" and not any(v.startswith("--cached") for v in flags):
        for spec, a in zip(values, rest, strict=True):
            if not spec.startswith("-") and _wholesale(spec, a, cwd, ctx) is True:
                return bad("git-discard", f"git rm deletes every file: {spec}")
    return None


def _git_push_reason(rest: list[str]) -> str | None:
    force: str | None = None
    delete: str | None = None
    dry = False
    positional: list[str] = []
    end = False
    j = 0
    push_long = ["--force", "--force-with-lease", "--mirror", "--delete", "--prune", "--dry-run"]
    while j < len(rest):
        v = rest[j]
        if not end and v == "--":
            end = True
        elif not end and v.startswith("--"):
            key = v.partition("=")[0]
            hits = long_matches(key, push_long)
            if any(h in ("--force", "--force-with-lease") for h in hits):
                force = force or v
            elif any(h in ("--mirror", "--delete", "--prune") for h in hits):
                delete = delete or v
            elif hits == ["--dry-run"]:
                dry = True
            elif key in ("--repo", "--receive-pack", "--exec", "--push-option") and "=" not in v:
                j += 1
        elif not end and v.startswith("-") and len(v) > 1:
            for k, ch in enumerate(v[1:]):
                if ch == "o":  # -o OPTION
                    j += 1 if k == len(v) - 2 else 0
                    break
                if ch == "f":
                    force = force or v
                elif ch == "d":
                    delete = delete or v
                elif ch == "n":
                    dry = True
        else:
            positional.append(v)
        j += 1
    for refspec in positional[1:]:
        if refspec.startswith("+"):
            force = force or refspec
        elif refspec.startswith(":") and len(refspec) > 1:
            delete = delete or refspec
    if dry:
        return None
    if force:
        return f"git push --force rewrites remote history: {force}"
    if delete:
        return f"git push deletes remote refs: {delete}"
    return None


_MAGIC = re.compile(r":(?:\((?P<long>[^)]*)\)|(?P<short>[/!^]*))")


def _wholesale(spec: str, a: Arg, cwd: Comps, ctx: Ctx) -> bool | None:
    """Whether a git pathspec covers every file (``.``, ``*``, ``:/``, ``:!x``,
    ``:(glob)**``); ``None``: it cannot be resolved statically."""
    if a.value is None:
        return None
    top = False
    if spec.startswith(":"):
        m = _MAGIC.match(spec)
        magic_words = (m.group("long") or "").split(",") if m else []
        short = (m.group("short") or "") if m else ""
        pattern = spec[m.end() :] if m else spec[1:]
        if "exclude" in magic_words or "!" in short or "^" in short:
            return True  # everything but some paths
        top = "top" in magic_words or "/" in short or spec == ":"
        if not pattern:
            return True
        spec = pattern
    base = ctx.world.workspace if top and ctx.world.workspace is not None else cwd
    kind, _ = classify(components(spec, base), ctx.world)
    return kind in ("root", "workspace", "cwd", "area", "outside", "home", "escaped")


def _git_discard_reason(
    sub: str, values: list[str], rest: Sequence[Arg], cwd: Comps, ctx: Ctx
) -> str | None:
    """Wholesale discards of uncommitted work: ``git checkout -- .``, ``git checkout -f``,
    ``git restore .``, ``git switch --discard-changes``. Pathspec-limited ones are normal."""
    arg_letters = {"checkout": "bBU", "restore": "s", "switch": "cC"}[sub]
    if any(_git_flag(v, "f", "--force", arg_letters) for v in values) and sub != "restore":
        return f"git {sub} --force discards local changes"
    if sub == "switch":
        if any(_git_flag(v, "", "--discard-changes") for v in values):
            return "git switch --discard-changes discards local changes"
        return None
    staged = any(_git_flag(v, "S", "--staged", arg_letters) for v in values)
    worktree = any(_git_flag(v, "W", "--worktree", arg_letters) for v in values)
    if sub == "restore" and staged and not worktree:
        return None  # only unstages
    end = False
    j = 0
    while j < len(values):
        v = values[j]
        if end or not v.startswith("-"):
            if _wholesale(v, rest[j], cwd, ctx) is True:
                return f"git {sub} discards every uncommitted change: {v}"
        elif v == "--":
            end = True
        elif v in ("-s", "--source", "-b", "-B", "--orphan", "--conflict"):
            j += 1
        j += 1
    return None
