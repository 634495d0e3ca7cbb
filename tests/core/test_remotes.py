"""The pure half of worktrees of a remote repository: which ``repo`` is a URL (a table, and
properties over generated URLs and paths), userinfo kept out of what is shown, the clone's
name, what a fetch and a push move, ``git push --porcelain`` read back, and where a goal
that moved to another host goes on from (the ledger's last commit of its workspace)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexo_trio.core.events import Usage
from nexo_trio.core.goal_events import (
    AttemptCompleted,
    AttemptStarted,
    GoalEvent,
    GoalRestarted,
    GoalStarted,
    RolledBack,
    WorkspaceCleaned,
)
from nexo_trio.core.goal_machine import fold, initial_state
from nexo_trio.core.remotes import (
    URL_SCHEMES,
    PushedRef,
    clone_name,
    delete_refspecs,
    fetch_refspecs,
    is_git_url,
    parse_ls_remote,
    parse_push,
    push_problem,
    push_refspecs,
    redact_userinfo,
    remote_env,
    resume_point,
    without_userinfo,
)

SHA1 = "1" * 40
SHA2 = "2" * 40
SHA3 = "3" * 40


@pytest.mark.parametrize(
    ("repo", "url"),
    [
        ("https://github.com/o/r.git", True),
        ("http://host/r", True),
        ("HTTPS://host/r", True),
        ("ssh://git@host:2222/o/r.git", True),
        ("git://host/r.git", True),
        ("file:///srv/git/r.git", True),
        ("git+ssh://host/r", True),
        ("git@github.com:o/r.git", True),
        ("host:r.git", True),
        ("user@host:~/r", True),
        ("[::1]:r.git", True),
        ("/srv/git/r", False),
        ("../repo", False),
        ("./a:b", False),
        ("~/code/repo", False),
        ("repo", False),
        ("dir/with:colon", False),
        ("https://", False),
        ("ftpx://host/r", False),
        ("-oProxyCommand=x:y", False),
        ("ext::sh -c x", False),
        ("host:", False),
        (" https://host/r", False),
        ("", False),
    ],
)
def test_which_repo_is_a_url(repo: str, url: bool) -> None:
    assert is_git_url(repo) is url


_NAME = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=12)
_PATH = st.lists(_NAME, min_size=1, max_size=4).map("/".join)


@given(st.sampled_from(sorted(URL_SCHEMES)), _NAME, _PATH)
def test_every_scheme_url_is_a_url(scheme: str, host: str, path: str) -> None:
    assert is_git_url(f"{scheme}://{host}/{path}")
    assert is_git_url(f"{scheme.upper()}://{host}/{path}")


@given(_NAME.filter(lambda n: not n.startswith("-")), _NAME, _PATH)
def test_scp_like_addresses_are_urls(host: str, user: str, path: str) -> None:
    assert is_git_url(f"{user}@{host}:{path}")
    assert is_git_url(f"{host}:{path}")


@given(st.text(min_size=1, max_size=40))
def test_a_path_is_never_taken_for_a_url(text: str) -> None:
    # What git itself takes for a local path: a slash before the first colon, or no colon
    # and no scheme.
    assert not is_git_url("/" + text)
    assert not is_git_url("./" + text)
    assert not is_git_url("../" + text)
    if ":" not in text:
        assert not is_git_url(text)


@given(st.sampled_from(sorted(URL_SCHEMES)), _NAME, _NAME, _NAME, _PATH)
def test_userinfo_is_never_shown(
    scheme: str, user: str, password: str, host: str, path: str
) -> None:
    secret = f"s3cr3t{password}"
    url = f"{scheme}://{user}:{secret}@{host}/{path}"
    assert without_userinfo(url) == f"{scheme}://{host}/{path}"
    message = f"fatal: unable to access '{url}/': could not resolve host; also {url}"
    assert secret not in redact_userinfo(message)
    assert f"{scheme}://{host}/{path}" in redact_userinfo(message)


def test_what_has_no_userinfo_stays() -> None:
    for url in ("https://host/r", "git@host:o/r.git", "file:///srv/r.git", "/a/b@c"):
        assert without_userinfo(url) == url
        assert redact_userinfo(f"x {url} y") == f"x {url} y"


def test_the_clone_of_a_url_has_one_name() -> None:
    name = clone_name("https://host/r.git")
    assert name == clone_name("https://host/r.git")
    assert name != clone_name("https://host/r")
    assert len(name) == 16 + len(".git")
    assert all(c in string.hexdigits for c in name[:16])
    assert name.endswith(".git")


def test_a_fetch_leaves_the_checked_out_branches_alone() -> None:
    specs = fetch_refspecs("g1", ["refs/heads/nexo/g2", "refs/heads/nexo/g1", "refs/heads/main"])
    assert specs == (
        "+refs/heads/*:refs/heads/*",
        "+refs/tags/*:refs/tags/*",
        "+refs/nexo/g1/*:refs/nexo/g1/*",
        "^refs/heads/main",
        "^refs/heads/nexo/g1",
        "^refs/heads/nexo/g2",
    )
    with pytest.raises(ValueError, match="cannot name a git ref"):
        fetch_refspecs("-bad", [])


def test_a_push_forces_checkpoints_and_never_the_branch() -> None:
    assert push_refspecs([(SHA1, "refs/nexo/g/1")], (SHA2, "nexo/g")) == (
        f"+{SHA1}:refs/nexo/g/1",
        f"{SHA2}:refs/heads/nexo/g",
    )
    assert push_refspecs([]) == ()


def test_push_porcelain_is_read_back() -> None:
    output = (
        b"To file:///srv/origin.git\n"
        b"*\t1111:refs/nexo/g/1\t[new reference]\n"
        b"!\t2222:refs/heads/nexo/g\t[rejected] (non-fast-forward)\n"
        b"=\trefs/heads/x:refs/heads/x\t[up to date]\n"
        b"Done\n"
    )
    pushed = parse_push(output)
    assert pushed == (
        PushedRef("*", "refs/nexo/g/1", "[new reference]"),
        PushedRef("!", "refs/heads/nexo/g", "[rejected] (non-fast-forward)"),
        PushedRef("=", "refs/heads/x", "[up to date]"),
    )
    assert push_problem(["refs/nexo/g/1", "refs/heads/x"], pushed) is None
    assert push_problem(["refs/nexo/g/1", "refs/heads/nexo/g", "refs/nexo/g/2"], pushed) == (
        "rejected refs/heads/nexo/g ([rejected] (non-fast-forward)), refs/nexo/g/2 (not reported)"
    )


def test_remote_calls_keep_the_transport_settings_only() -> None:
    env = remote_env(
        {"PATH": "/bin", "GIT_DIR": "/evil", "GIT_SSH_COMMAND": "ssh -i key", "GIT_ASKPASS": ""}
    )
    assert env["GIT_SSH_COMMAND"] == "ssh -i key"
    assert "GIT_DIR" not in env
    assert "GIT_ASKPASS" not in env
    assert env["GIT_TERMINAL_PROMPT"] == "0"


# --------------------------------------------------------------------------- resume point


def started(turn: int, checkpoint: str | None) -> AttemptStarted:
    return AttemptStarted("g", turn, False, None, "p", checkpoint=checkpoint)


def completed(turn: int, after: str | None, *, compact: bool = False) -> AttemptCompleted:
    return AttemptCompleted(
        "g", turn, compact, "claimed_done", "completed", None, None, Usage(), 0.0, 1.0, after=after
    )


def commit_after(*events: GoalEvent) -> str | None:
    state = fold([GoalStarted("g", "d", "/w"), *events], initial_state("g"))
    assert resume_point(state, fresh=False) is None  # a worktree kept here goes on as it is
    return resume_point(state, fresh=True)


def test_a_fresh_worktree_goes_on_from_the_ledgers_last_commit() -> None:
    assert commit_after() is None  # nothing checkpointed yet: the branch as fetched
    assert commit_after(started(1, SHA1)) == SHA1  # a crash during turn 1
    assert commit_after(started(1, SHA1), completed(1, SHA2)) == SHA2
    # A retry keeps the turn's ref: its own checkpoint is on no ref, the end before it is.
    assert commit_after(started(1, SHA1), completed(1, SHA2), started(1, SHA3)) == SHA2
    assert commit_after(started(1, SHA1), completed(1, None)) == SHA1  # no end recorded
    assert commit_after(started(1, SHA1), completed(1, SHA2), started(2, SHA3)) == SHA3
    rolled = RolledBack("g", 1, SHA1, by="the replay policy")
    assert commit_after(started(1, SHA1), completed(1, SHA2), rolled) == SHA1
    assert commit_after(started(1, SHA1), completed(1, SHA2, compact=True)) == SHA1
    cleaned = WorkspaceCleaned("g", ("worktree",), by="me")
    assert commit_after(started(1, SHA1), completed(1, SHA2), cleaned) is None
    assert commit_after(started(1, SHA1), GoalRestarted("g")) is None


def test_a_kept_worktree_is_put_back_only_when_the_ledger_moved_on_elsewhere() -> None:
    state = fold(
        [GoalStarted("g", "d", "/w"), started(1, SHA1), completed(1, SHA2)], initial_state("g")
    )
    # This host last knew the ledger at SHA2: the worktree goes on as it is.
    assert resume_point(state, fresh=False, remembered=SHA2) is None
    # It last knew SHA1: the goal ran elsewhere since (A, B, then A again).
    assert resume_point(state, fresh=False, remembered=SHA1) == SHA2
    # Nothing remembered (a worktree from before hosts remembered): as it is.
    assert resume_point(state, fresh=False, remembered=None) is None
    # A ledger that knows no commit (cleaned, restarted) puts nothing back.
    bare = fold([GoalStarted("g", "d", "/w")], initial_state("g"))
    assert resume_point(bare, fresh=False, remembered=SHA1) is None


def test_ls_remote_output_gives_the_refs_below_the_prefix_once_each() -> None:
    out = (
        f"{SHA1}\trefs/nexo/g/2\n{SHA2}\trefs/nexo/g/1-after\n{SHA1}\trefs/nexo/g/2\n"
        f"{SHA3}\trefs/nexo/g2/1\n{SHA3}\trefs/heads/main\nwarning: not a ref line\n"
    ).encode()
    refs = parse_ls_remote(out, "refs/nexo/g/")
    assert refs == ("refs/nexo/g/1-after", "refs/nexo/g/2")
    assert delete_refspecs(refs) == (":refs/nexo/g/1-after", ":refs/nexo/g/2")
    assert parse_ls_remote(b"", "refs/nexo/g/") == ()
