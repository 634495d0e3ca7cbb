"""Goal files and the config file: YAML in, :class:`Goal` and :class:`Config` out.

The format is the one of DESIGN.md §3. Reading is strict, because a typo in a budget must
not silently become "no limit": unknown keys, wrong types (``yes`` where a number is
expected, ``"5"`` for an integer), bad enum values, bad regular expressions and
out-of-range numbers are all errors. Every error is one :class:`FileFormatError` naming the
file, the key path and what is wrong::

    goal.yaml: acceptance[1].timeout: expected a duration like 90s, 30m or 2h, got 'abc'

Key paths use ``.`` between mapping keys and ``[i]`` (counted from 0) for list items.

Durations are plain numbers of seconds or strings of number-unit pairs, units ``ms``,
``s``, ``m``, ``h`` and ``d``: ``90s``, ``30m``, ``2h``, ``500ms``, ``1h30m``, ``1.5h``.
Sizes (``line_cap``) are plain numbers of bytes or strings like ``64MiB``, ``512KiB``,
``1MB`` (``B``, ``KB``/``MB``/``GB`` decimal, ``KiB``/``MiB``/``GiB`` binary).

Environment variables in the config file
----------------------------------------
Every string value of the config file (not the keys, not goal files) may reference
environment variables:

* ``${NAME}`` is replaced by the value of ``NAME``; it is an error when ``NAME`` is unset.
* ``${NAME:-default}`` is replaced by ``default`` when ``NAME`` is unset or empty (as in the
  shell). The default cannot contain ``}``.
* ``$$`` is a literal ``$`` (write ``$${HOME}`` for the text ``${HOME}``). Any other ``$``
  is kept as it is.

Substitution happens before values get their types: an unquoted ``turn_timeout:
${T:-10m}`` is a duration, ``max_concurrent_goals: ${N:-4}`` an integer and ``model:
${MODEL:-}`` is null when ``MODEL`` is unset, exactly as if the result had been written in
the file. A quoted value (``"${N}"``) stays a string, which is still fine for durations and
sizes. Inside flow collections (``{...}``, ``[...]``) YAML needs references in quotes:
``llm: {timeout: "${LLM_TIMEOUT:-20s}"}``.
"""

from __future__ import annotations

import datetime
import difflib
import hashlib
import math
import os
import re
import uuid
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Final, NoReturn, get_args, get_origin

import attrs
import cattrs
import yaml
from cattrs.errors import AttributeValidationNote, ClassValidationError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from nexo_trio.core.goal import (
    Budget,
    Criterion,
    CustomCheck,
    FileMatchCheck,
    GitWorkspace,
    Goal,
    LlmJudgeCheck,
    ShellCheck,
)
from nexo_trio.core.settings import (
    ACCEPTANCE_MODES,
    DECIDER_NAMES,
    SANDBOX_MODES,
    STUCK_ACTIONS,
    UNKNOWN_POLICIES,
    AcceptanceMode,
    Config,
    DeciderName,
    LlmSettings,
    PermissionSettings,
    SandboxMode,
    StuckAction,
    UnknownPolicy,
)
from nexo_trio.core.validation import FieldError

__all__ = [
    "FileFormatError",
    "config_to_dict",
    "converter",
    "goal_id_for_path",
    "goal_to_yaml",
    "load_config",
    "load_goal",
    "parse_config",
    "parse_duration",
    "parse_goal",
    "parse_size",
]

KeyPath = tuple[str | int, ...]
FieldHook = Callable[[Any, Any], Any]
"""A field hook takes the raw value and returns the field's value (or raises _Invalid)."""


class FileFormatError(ValueError):
    """A goal or config file that can't be read: which file, where in it, and what is wrong.

    ``key_path`` is empty for problems of the whole file (missing, unreadable, invalid YAML).
    """

    def __init__(self, source: str, key_path: str, message: str) -> None:
        self.source = source
        self.key_path = key_path
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.key_path:
            return f"{self.source}: {self.key_path}: {self.message}"
        return f"{self.source}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.source, self.key_path, self.message))


class _Invalid(Exception):
    """Raised inside the converter; becomes a :class:`FileFormatError` at the boundary."""

    def __init__(self, message: str, path: KeyPath = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def under(self, *prefix: str | int) -> _Invalid:
        return _Invalid(self.message, (*prefix, *self.path))


def _format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _describe(value: object) -> str:
    """How an error message shows the value it got."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (YAML reads yes/no/on/off/true/false as booleans)"
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return repr(text)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} ({value!r})"


def _expected(what: str, value: object) -> NoReturn:
    quotable = isinstance(value, int | float | datetime.date)
    hint = " (quote it)" if what == "a string" and quotable else ""
    raise _Invalid(f"expected {what}, got {_describe(value)}{hint}")


# ---------------------------------------------------------------------------------------
# Scalars: durations, sizes and strict type checks.

_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")
_SIZE: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmg]i?b|b)?", re.IGNORECASE)
_SIZE_UNITS: Final = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_duration(value: object) -> float:
    """Seconds of a duration: a number of seconds, or a string like ``90s`` or ``1h30m``.

    Raises :class:`ValueError` for anything else (booleans included) and for values that
    are not finite or are negative.
    """
    problem = ValueError(f"expected a duration like 90s, 30m or 2h, got {_describe(value)}")
    if isinstance(value, bool):
        raise problem
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match[1]) * _DURATION_UNITS[match[2]]
                pos = match.end()
            if pos == 0 or pos != len(text):
                raise problem from None
    else:
        raise problem
    if not math.isfinite(seconds) or seconds < 0:
        raise problem
    return seconds


def parse_size(value: object) -> int:
    """Bytes of a size: a whole number of bytes, or a string like ``64MiB`` or ``1MB``.

    Raises :class:`ValueError` for anything else.
    """
    problem = ValueError(
        f"expected a size in bytes like 65536, 64KiB or 64MiB, got {_describe(value)}"
    )
    if isinstance(value, bool):
        raise problem
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise problem
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise problem
    size = float(match[1]) * _SIZE_UNITS[(match[2] or "b").lower()]
    if not size.is_integer():
        raise problem
    return int(size)


def _str(value: object, _: object = None) -> str:
    if not isinstance(value, str):
        _expected("a string", value)
    return value


def _int(value: object, _: object = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _expected("an integer", value)
    return value


def _float(value: object, _: object = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _expected("a number", value)
    if not math.isfinite(value):
        _expected("a finite number", value)
    return float(value)


def _bool(value: object, _: object = None) -> bool:
    if not isinstance(value, bool):
        _expected("true or false", value)
    return value


def _one_of(names: tuple[str, ...]) -> FieldHook:
    def structure(value: object, _: object = None) -> str:
        for name in names:
            if value == name and isinstance(value, str):
                return name
        raise _Invalid(f"expected one of {', '.join(names)}, got {_describe(value)}")

    return structure


def _optional(hook: FieldHook) -> FieldHook:
    def structure(value: Any, type_: Any) -> Any:
        return None if value is None else hook(value, type_)

    return structure


def _duration(value: object, _: object) -> float:
    try:
        return parse_duration(value)
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _size(value: object, _: object) -> int:
    try:
        return parse_size(value)
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _workspace(value: object, _: object) -> str | GitWorkspace | None:
    """A directory (a string) or a worktree (a mapping with ``repo``)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        tree: GitWorkspace = converter.structure(value, GitWorkspace)
        return tree
    _expected("a directory or a mapping {repo, base, branch}", value)


def _goal_id(value: object, _: object) -> str:
    # Before the record's own check: a number or a date would otherwise read as "got 42".
    return _str(value)


@attrs.frozen
class _Field:
    """How one attribute is written in the file, and how its value is checked."""

    key: str | None = None  # the YAML key, when it is not the attribute's name
    hook: FieldHook | None = None


# Keys of the file that differ from the attribute names, and values that need parsing
# (durations, sizes). What a value may be (ranges, patterns, non-empty) is checked by the
# records themselves (nexo_trio.core.validation), the same for a file and for Python.
_FIELDS: Final[dict[type, dict[str, _Field]]] = {
    Goal: {"id": _Field(hook=_goal_id), "workspace": _Field(hook=_workspace)},
    ShellCheck: {"timeout_s": _Field("timeout", _duration)},
    LlmJudgeCheck: {"timeout_s": _Field("timeout", _duration)},
    Budget: {"max_wall_time_s": _Field("max_wall_time", _optional(_duration))},
    LlmSettings: {"timeout_s": _Field("timeout", _duration)},
    Config: {
        "turn_timeout_s": _Field("turn_timeout", _duration),
        "kill_grace_s": _Field("kill_grace", _duration),
        "line_cap": _Field(hook=_size),
        "lease_timeout_s": _Field("lease_timeout", _duration),
    },
    PermissionSettings: {"tool_timeout_s": _Field("tool_timeout", _duration)},
}

_CRITERION_KINDS: Final[dict[str, type[Criterion]]] = {
    "shell": ShellCheck,
    "file_match": FileMatchCheck,
    "custom": CustomCheck,
    "llm_judge": LlmJudgeCheck,
}
_KIND_OF: Final = {cls: kind for kind, cls in _CRITERION_KINDS.items()}
_ALIASES: Final[dict[type, dict[str, str]]] = {ShellCheck: {"exit_code": "expect_exit"}}


def _yaml_key(cls: type, attribute: str) -> str:
    spec = _FIELDS.get(cls, {}).get(attribute)
    return spec.key if spec is not None and spec.key is not None else attribute


def _keys_of(cls: type) -> tuple[list[str], list[str]]:
    """The YAML keys of an attrs class: (all of them, the required ones)."""
    keys, required = [], []
    for a in attrs.fields(cls):
        key = _yaml_key(cls, a.name)
        keys.append(key)
        if a.default is attrs.NOTHING:
            required.append(key)
    return keys, required


# ---------------------------------------------------------------------------------------
# The converter.


def _class_hook(cls: type, conv: cattrs.BaseConverter) -> FieldHook:
    overrides: dict[str, Any] = {
        name: override(rename=spec.key, struct_hook=spec.hook)
        for name, spec in _FIELDS.get(cls, {}).items()
    }
    generated: Callable[[Any, Any], Any] = make_dict_structure_fn(
        cls, conv, _cattrs_forbid_extra_keys=True, **overrides
    )
    keys, required = _keys_of(cls)
    allowed = [*keys, *_ALIASES.get(cls, {})]
    if cls in _KIND_OF:
        allowed.insert(0, "kind")

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, Mapping):
            _expected("a mapping", value)
        for key in value:
            if not isinstance(key, str):
                raise _Invalid(f"expected a string key, got {_describe(key)}")
            if key not in keys:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise _Invalid(f"unknown key; {hint}allowed keys: {', '.join(allowed)}", (key,))
        for key in required:
            if key not in value:
                raise _Invalid("required key is missing", (key,))
        try:
            return generated(value, cls)
        except ClassValidationError as group:
            raise _first_error(group, cls) from None
        except FieldError as e:  # the record's own checks (its attrs validators)
            raise _Invalid(e.message, (_yaml_key(cls, e.field),)) from None
        except (ValueError, TypeError) as e:
            raise _Invalid(str(e)) from None

    return structure


def _first_error(group: ClassValidationError, cls: type) -> _Invalid:
    """The first problem of a cattrs error group, with its key path."""
    exc = group.exceptions[0]
    notes = [n for n in getattr(exc, "__notes__", ()) if isinstance(n, AttributeValidationNote)]
    prefix: KeyPath = (_yaml_key(cls, notes[0].name),) if notes else ()
    if isinstance(exc, _Invalid):
        return exc.under(*prefix)
    if isinstance(exc, FieldError):  # the record's own checks (its attrs validators)
        return _Invalid(exc.message, (*prefix, _yaml_key(cls, exc.field)))
    if isinstance(exc, ClassValidationError):  # pragma: no cover - our hooks unwrap these
        return _first_error(exc, group.cl).under(*prefix)
    if isinstance(exc, KeyError):  # pragma: no cover - checked before structuring
        return _Invalid("required key is missing", prefix)
    return _Invalid(str(exc) or type(exc).__name__, prefix)  # pragma: no cover


def _tuple_hook(type_: Any, conv: cattrs.BaseConverter) -> FieldHook:
    (item_type, *rest) = get_args(type_) or (Any,)
    if rest and rest != [Ellipsis]:  # pragma: no cover - no fixed-size tuples in our records
        raise TypeError(f"unsupported tuple type {type_}")

    def structure(value: Any, _: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            _expected("a list", value)
        items = []
        for index, item in enumerate(value):
            try:
                items.append(conv.structure(item, item_type))
            except _Invalid as e:
                raise e.under(index) from None
        return tuple(items)

    return structure


def _dict_hook(type_: Any, conv: cattrs.BaseConverter) -> FieldHook:
    _, value_type = get_args(type_) or (str, Any)

    def structure(value: Any, _: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            _expected("a mapping", value)
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Invalid(f"expected a string key, got {_describe(key)}")
            try:
                out[key] = item if value_type is Any else conv.structure(item, value_type)
            except _Invalid as e:
                raise e.under(key) from None
        return out

    return structure


def _criterion(value: Any, _: Any) -> Criterion:
    if not isinstance(value, Mapping):
        _expected("a mapping with a 'kind' key", value)
    if "kind" not in value:
        raise _Invalid(f"required key is missing (one of {', '.join(_CRITERION_KINDS)})", ("kind",))
    kind = value["kind"]
    cls = _CRITERION_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise _Invalid(
            f"expected one of {', '.join(_CRITERION_KINDS)}, got {_describe(kind)}", ("kind",)
        )
    fields = {k: v for k, v in value.items() if k != "kind"}
    for alias, name in _ALIASES.get(cls, {}).items():
        if alias in fields:
            if name in fields:
                raise _Invalid(f"give either {name} or {alias}, not both", (alias,))
            fields[name] = fields.pop(alias)
    result: Criterion = converter.structure(fields, cls)
    return result


def _unstructure_hook(cls: type, conv: cattrs.BaseConverter) -> Callable[[Any], dict[str, Any]]:
    overrides: dict[str, Any] = {
        name: override(rename=spec.key)
        for name, spec in _FIELDS.get(cls, {}).items()
        if spec.key is not None
    }
    generated: Callable[[Any], dict[str, Any]] = make_dict_unstructure_fn(cls, conv, **overrides)
    kind = _KIND_OF.get(cls)
    if kind is None:
        return generated

    def unstructure(obj: Any) -> dict[str, Any]:
        return {"kind": kind, **generated(obj)}

    return unstructure


def _is_tuple(type_: Any) -> bool:
    return get_origin(type_) is tuple


def _is_dict(type_: Any) -> bool:
    return get_origin(type_) is dict


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(
        detailed_validation=True,
        forbid_extra_keys=True,
        unstruct_collection_overrides={tuple: list},
    )
    conv.register_structure_hook(str, _str)
    conv.register_structure_hook(int, _int)
    conv.register_structure_hook(float, _float)
    conv.register_structure_hook(bool, _bool)
    conv.register_structure_hook_func(lambda t: t == DeciderName, _one_of(DECIDER_NAMES))
    conv.register_structure_hook_func(lambda t: t == StuckAction, _one_of(STUCK_ACTIONS))
    conv.register_structure_hook_func(lambda t: t == UnknownPolicy, _one_of(UNKNOWN_POLICIES))
    conv.register_structure_hook_func(
        lambda t: t == UnknownPolicy | None, _optional(_one_of(UNKNOWN_POLICIES))
    )
    conv.register_structure_hook_func(lambda t: t == SandboxMode, _one_of(SANDBOX_MODES))
    conv.register_structure_hook_func(lambda t: t == AcceptanceMode, _one_of(ACCEPTANCE_MODES))
    conv.register_structure_hook_func(lambda t: t == Criterion, _criterion)
    conv.register_structure_hook_factory(_is_tuple, _tuple_hook)
    conv.register_structure_hook_factory(_is_dict, _dict_hook)
    conv.register_structure_hook_factory(attrs.has, _class_hook)
    conv.register_unstructure_hook_factory(attrs.has, _unstructure_hook)
    return conv


converter: Final = _make_converter()
"""The one converter of the goal-file and config-file format (YAML key names, strict)."""


# ---------------------------------------------------------------------------------------
# YAML, with duplicate-key detection and ${VAR} substitution.

_REFERENCE: Final = re.compile(r"\$\$|\$\{(?P<body>[^}]*)\}|\$\{")
_BODY: Final = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)


def _substitute(text: str, environ: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        body = match["body"]
        if body is None:
            raise _Invalid("unterminated '${' (write '$$' for a literal '$')")
        ref = _BODY.fullmatch(body)
        if ref is None:
            raise _Invalid(
                f"invalid variable reference '${{{body}}}': expected ${{NAME}} or "
                "${NAME:-default} (write '$$' for a literal '$')"
            )
        name, default = ref["name"], ref["default"]
        value = environ.get(name)
        if default is not None and not value:
            return default
        if value is None:
            raise _Invalid(
                f"environment variable {name} is not set (use ${{{name}:-default}} "
                "to give a default)"
            )
        return value

    return _REFERENCE.sub(replace, text)


def _prepare(
    node: Node,
    loader: yaml.SafeLoader,
    environ: Mapping[str, str] | None,
    path: KeyPath,
    seen: set[int],
) -> None:
    """Check for duplicate keys and substitute variables, in place, before construction."""
    if id(node) in seen:  # aliases: visit each node once
        return
    seen.add(id(node))
    if isinstance(node, ScalarNode):
        if environ is None or "$" not in node.value:
            return
        old = node.value
        try:
            node.value = _substitute(old, environ)
        except _Invalid as e:
            raise e.under(*path) from None
        # A plain scalar gets its type from its text: resolve it again, as if the substituted
        # text had been written in the file. Quoted or explicitly tagged scalars keep theirs.
        resolve: Callable[[type[Node], str, tuple[bool, bool]], str] = loader.resolve
        if node.style is None and node.tag == resolve(ScalarNode, old, (True, False)):
            node.tag = resolve(ScalarNode, node.value, (True, False))
    elif isinstance(node, SequenceNode):
        for index, child in enumerate(node.value):
            _prepare(child, loader, environ, (*path, index), seen)
    elif isinstance(node, MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else "?"
            if isinstance(key_node, ScalarNode) and key != "<<":
                if key in keys:
                    raise _Invalid("duplicate key", (*path, key))
                keys.add(key)
            _prepare(value_node, loader, environ, (*path, key), seen)


def _yaml_error(source: str, error: yaml.YAMLError, text: str, substitute: bool) -> FileFormatError:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or getattr(error, "context", None) or str(error)
    if mark is None:
        return FileFormatError(source, "", f"invalid YAML: {problem}")
    message = f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    lines = text.splitlines()
    if substitute and mark.line < len(lines) and "${" in lines[mark.line]:
        message += " (inside {...} or [...], put ${...} references in quotes)"
    return FileFormatError(source, "", message)


def _load_yaml(text: str, source: str, environ: Mapping[str, str] | None) -> Any:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _prepare(node, loader, environ, (), set())
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise _yaml_error(source, e, text, environ is not None) from None
    except _Invalid as e:
        raise FileFormatError(source, _format_path(e.path), e.message) from None
    except RecursionError:
        raise FileFormatError(source, "", "the document is nested too deeply") from None
    finally:
        loader.dispose()


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise FileFormatError(str(path), "", f"not UTF-8 text: {e.reason}") from None
    except OSError as e:
        raise FileFormatError(str(path), "", f"cannot read the file: {e.strerror or e}") from None


def _structure(data: Any, cls: type[Any], source: str) -> Any:
    if not isinstance(data, Mapping):
        raise FileFormatError(
            source, "", f"expected a mapping of keys at the top level, got {_describe(data)}"
        )
    try:
        return converter.structure(data, cls)
    except _Invalid as e:
        raise FileFormatError(source, _format_path(e.path), e.message) from None


# ---------------------------------------------------------------------------------------
# The public functions.


def parse_goal(
    text: str,
    *,
    source: str,
    default_id: str | None = None,
    known_checks: Collection[str] | None = None,
) -> Goal:
    """The goal in the YAML ``text``; ``source`` names it in errors (usually the file name).

    A goal without ``id`` (or with ``id: null``) gets ``default_id``, else a new UUID4.
    With ``known_checks``, a custom check of another name is an error. Raises
    :class:`FileFormatError`.
    """
    data = _load_yaml(text, source, None)
    if data is None:
        raise FileFormatError(source, "", "the goal file is empty; it needs a description")
    if isinstance(data, Mapping) and data.get("id") is None:
        data = {**data, "id": default_id or str(uuid.uuid4())}
    goal: Goal = _structure(data, Goal, source)
    if known_checks is not None:
        for index, check in enumerate(goal.acceptance):
            if isinstance(check, CustomCheck) and check.name not in known_checks:
                known = ", ".join(sorted(known_checks)) or "none"
                raise FileFormatError(
                    source,
                    _format_path(("acceptance", index, "name")),
                    f"unknown custom check {check.name!r} (known: {known})",
                )
    return goal


def load_goal(path: Path, *, known_checks: Collection[str] | None = None) -> Goal:
    """Read the goal file at ``path``. A goal without ``id`` gets
    :func:`goal_id_for_path`, so running the same file again resumes the same goal.

    Raises :class:`FileFormatError` (also for a custom check not in ``known_checks``,
    when given).
    """
    return parse_goal(
        _read(path), source=str(path), default_id=goal_id_for_path(path), known_checks=known_checks
    )


def goal_id_for_path(path: Path) -> str:
    """The stable id of a goal file that names none: its name and a digest of its real path
    (``fix-login-3f9a1c0b2d4e`` for ``/work/goals/fix-login.yaml``)."""
    resolved = path.resolve()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", resolved.stem).lstrip("-.")[:100] or "goal"
    digest = hashlib.sha256(os.fsencode(resolved)).hexdigest()[:12]
    return f"{stem}-{digest}"


def parse_config(text: str, *, source: str, environ: Mapping[str, str] | None = None) -> Config:
    """The config in the YAML ``text``, after ``${VAR}`` substitution from ``environ``.

    ``environ`` defaults to ``os.environ``; keys that are absent keep their defaults, and an
    empty document is the default config. Raises :class:`FileFormatError`.
    """
    data = _load_yaml(text, source, os.environ if environ is None else environ)
    if data is None:
        return Config()
    config: Config = _structure(data, Config, source)
    return config


def load_config(path: Path | None, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read the config file at ``path``; ``None`` means the default config.

    Raises :class:`FileFormatError`.
    """
    if path is None:
        return Config()
    return parse_config(_read(path), source=str(path), environ=environ)


def goal_to_yaml(goal: Goal) -> str:
    """The goal as a goal file (durations in seconds); :func:`parse_goal` reads it back."""
    data = converter.unstructure(goal, Goal)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1_000_000)


def goal_to_spec(goal: Goal) -> dict[str, Any]:
    """The goal as JSON-ready data (a goal file's mapping; durations in seconds): what the
    queue keeps of a submitted goal. :func:`goal_from_spec` reads it back."""
    data: dict[str, Any] = converter.unstructure(goal, Goal)
    return data


def goal_from_spec(
    spec: Mapping[str, Any], *, source: str, known_checks: Collection[str] | None = None
) -> Goal:
    """The goal :func:`goal_to_spec` made (checked as a goal file is); ``source`` names it
    in errors. Raises :class:`FileFormatError`."""
    return parse_goal(
        yaml.safe_dump(dict(spec), sort_keys=False, allow_unicode=True, width=1_000_000),
        source=source,
        known_checks=known_checks,
    )


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as the mapping a config file would hold (durations in seconds)."""
    data: dict[str, Any] = converter.unstructure(config, Config)
    return data
