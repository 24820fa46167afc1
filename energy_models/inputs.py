"""Reading user input files: one strict path from bytes to typed, validated values.

Every input format (fleet and workload YAML, request traces, measurement tables, models.json,
config.json) reads its file through here and validates it with a pydantic model kept beside
the format's code. Whatever goes wrong comes back as one short line, ``FILE: FIELD: problem;
fix``, in the exception of the caller's layer (the ``error`` factory each function takes).

Sizes are bounded before anything is allocated from them: a file's bytes, and the nodes a
YAML document expands to once its aliases are followed (a "billion laughs" bomb is a few
hundred bytes that expand to billions of nodes).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

MAX_TEXT_BYTES = 16 * 2**20
"""Fleet, workload, models and config files: far above any real one."""
MAX_TABLE_BYTES = 1024 * 2**20
"""Request traces and measurement tables."""
MAX_YAML_NODES = 100_000
"""Nodes of a YAML document with every alias expanded where it is used."""
ECHO_CHARS = 60
"""Longest echo of a user's value in an error message."""

ErrorFactory = Callable[[str, str], Exception]
"""``(field, problem)`` -> the caller's exception, which names the file."""
T = TypeVar("T")


def message_error(cls: Callable[[str], Exception], where: str) -> ErrorFactory:
    """An ErrorFactory for exceptions that take one message."""
    return lambda field, problem: cls(f"{where}: {field}: {problem}")


def short(value: Any) -> str:
    """The value as the user wrote it (text quoted), cut to ECHO_CHARS so an echo never
    floods the line."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= ECHO_CHARS else text[: ECHO_CHARS - 3] + "..."


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``did you mean 'x'?`` for the closest known name, else the known names."""
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return "known: " + (", ".join(known) if known else "none")


def field_error(field: str, problem: str) -> PydanticCustomError:
    """Raise from a validator to blame ``field`` (relative to the validated value)."""
    return PydanticCustomError("field_error", "{problem}", {"field": field, "problem": problem})


def read_bytes(path: str | Path, error: ErrorFactory, max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The file's bytes, refusing a file over ``max_bytes`` before reading it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error("(file)", f"{size / 2**20:,.0f} MiB is over the {max_bytes / 2**20:,.0f} "
                                  f"MiB limit for this kind of file; split or trim it")
        return path.read_bytes()
    except FileNotFoundError:
        raise error("(file)", "no such file; check the path") from None
    except OSError as exc:
        raise error("(file)", f"cannot read: {exc.strerror}") from None


def read_text(path: str | Path, error: ErrorFactory, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The file decoded as UTF-8, with the size cap of ``read_bytes``."""
    data = read_bytes(path, error, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error("(file)", f"not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


FAST_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser where PyYAML was built with it: the same documents, several times faster."""


class StrictLoader(FAST_SAFE_LOADER):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                continue  # unhashable; SafeConstructor reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {short(key)}; give each key once",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_nodes(root: yaml.Node) -> int:
    """Nodes of the document with every alias expanded, counted without expanding them."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_YAML_NODES + 1)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def parse_yaml(text: str, error: ErrorFactory) -> Any:
    """One YAML document: duplicate keys and over-large alias expansions refused."""
    loader = None
    try:
        loader = StrictLoader(text)  # libyaml reads the stream here: bad characters raise
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node) > MAX_YAML_NODES:
            raise error("(file)", f"expands to over {MAX_YAML_NODES:,} YAML nodes once its "
                                  f"aliases are followed; write the values out")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(syntax)"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        if "duplicate key" not in problem:
            problem += "; fix the YAML syntax"
        raise error(at, problem) from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml(path: str | Path, error: ErrorFactory) -> Any:
    """A YAML file read as UTF-8 with the size cap, parsed by ``parse_yaml``."""
    return parse_yaml(read_text(path, error), error)


def load_json(path: str | Path, error: ErrorFactory, max_bytes: int = MAX_TEXT_BYTES) -> Any:
    """A JSON file read as UTF-8 with the size cap."""
    text = read_text(path, error, max_bytes)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"line {exc.lineno}", f"not JSON ({exc.msg}); fix the syntax") from None


class StrictModel(BaseModel):
    """Frozen, no unknown keys, no NaN or infinity; unknown keys get a did-you-mean.

    Strict types: a quoted "8", ``true`` or 8.5 is not a count, and "1e3" is not a number (YAML
    would hand them over as text or booleans and lax parsing would guess). YAML lists become
    the tuples the frozen fields hold.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            allowed = {info.alias or name for name, info in cls.model_fields.items()}
            for key in raw:
                if key not in allowed:
                    raise field_error(str(key), f"unknown field; {did_you_mean(key, allowed)}")
            return {key: _lists_as_tuples(value) for key, value in raw.items()}
        return raw


def _lists_as_tuples(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_lists_as_tuples(item) for item in value)
    if isinstance(value, dict):
        return {key: _lists_as_tuples(item) for key, item in value.items()}
    return value


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".")


_EXPECTED = {
    "dict_type": "must be a mapping", "model_type": "must be a mapping",
    "dataclass_type": "must be a mapping", "list_type": "must be a list",
    "tuple_type": "must be a list", "finite_number": "must be a finite number",
    "int_from_float": "must be a whole number", "int_parsing": "must be a whole number",
    "int_type": "must be a whole number", "float_parsing": "must be a number",
    "float_type": "must be a number", "string_type": "must be text",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
}


def _problem(detail: ErrorDetails) -> str:
    kind, ctx = detail["type"], detail.get("ctx") or {}
    if kind == "field_error":
        return str(ctx["problem"])
    if kind == "missing":
        return "missing; add it"
    if kind == "value_error":
        return detail["msg"].removeprefix("Value error, ")
    got = f"got {short(detail['input'])}; "
    if kind in _EXPECTED:
        return got + _EXPECTED[kind]
    if kind == "greater_than":
        return got + ("must be positive" if ctx["gt"] == 0 else f"must be above {ctx['gt']}")
    if kind == "greater_than_equal":
        lowest = {0: "must not be negative", 1: "must be positive"}
        return got + lowest.get(ctx["ge"], f"must be at least {ctx['ge']}")
    if kind in ("less_than_equal", "less_than"):
        return got + f"must be at most {ctx.get('le', ctx.get('lt'))}"
    if kind == "too_short":
        return got + "must not be empty"
    return got + detail["msg"].replace("Input should", "must")


def one_line(exc: ValidationError) -> tuple[str, str]:
    """``(field, problem)`` of the first error pydantic found."""
    detail = exc.errors()[0]
    field = _path(tuple(detail["loc"]))
    extra = (detail.get("ctx") or {}).get("field")
    if extra:
        field = f"{field}{'' if str(extra).startswith('[') or not field else '.'}{extra}"
    return field or "(top level)", _problem(detail)


def validate(schema: type[T], raw: Any, error: ErrorFactory, **context: Any) -> T:
    """``raw`` validated as ``schema`` (a model, dataclass or type); errors in one line."""
    try:
        return TypeAdapter(schema).validate_python(raw, context=context or None)
    except ValidationError as exc:
        raise error(*one_line(exc)) from None
