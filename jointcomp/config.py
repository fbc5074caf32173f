"""What every stage config shares: strict pydantic models (unknown keys are errors) and one
vocabulary for choosing layers — a ``scope`` of include/exclude name patterns and per-pattern
``overrides`` whose first match wins."""

from __future__ import annotations

import fnmatch
import re
import reprlib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

T = TypeVar("T")


class Strict(BaseModel):
    """Base of every config: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def match_any(name: str, patterns: Iterable[str]) -> bool:
    """True when ``name`` matches one of the shell-style ``patterns`` (``features.*``)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def first_match(name: str, table: Mapping[str, T]) -> T | None:
    """The value of the first pattern in ``table`` that matches ``name`` (None if none)."""
    for pattern, value in table.items():
        if fnmatch.fnmatchcase(name, pattern):
            return value
    return None


class Scope(Strict):
    """Which layers a stage works on, by their dotted names (``layer1.0.conv1``): those matching
    an ``include`` pattern and no ``exclude`` pattern. ``exclude_classifier`` also leaves out the
    output layer (the last Linear/Conv producing the model's output); unset, the stage decides
    (structured pruning leaves it out, every other stage keeps it)."""

    include: list[str] = Field(default_factory=lambda: ["*"], description="name patterns to use")
    exclude: list[str] = Field(default_factory=list, description="name patterns to leave alone")
    exclude_classifier: bool | None = Field(
        None, description="leave out the output layer (unset: the stage's default)"
    )

    def selects(self, name: str) -> bool:
        """Whether ``name`` is included and not excluded (the classifier rule aside)."""
        return match_any(name, self.include) and not match_any(name, self.exclude)

    def why_not(self, name: str) -> str | None:
        """Why ``name`` is out of scope (None when it is in)."""
        if not match_any(name, self.include):
            return "not matched by scope.include"
        if match_any(name, self.exclude):
            return "matches scope.exclude"
        return None


class StageConfig(Strict):
    """Base of a stage's config; ``stage`` is the name a recipe lists it under."""

    stage: ClassVar[str] = ""

    def to_entry(self) -> dict[str, Any]:
        """The recipe form ``{stage: {key: value}}`` (values as JSON data)."""
        return {self.stage: self.model_dump(mode="json")}


# --- error messages -------------------------------------------------------------

# C0 and C1 control characters (terminal escapes start with ESC, 0x1b, or CSI, 0x9b) and the
# Unicode marks that reorder or hide text; tab and (where allowed) newline excepted
_MARKS = r"\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff"
_CONTROL = re.compile(rf"[\x00-\x08\x0b-\x1f\x7f-\x9f{_MARKS}]")
_CONTROL_NEWLINE = re.compile(rf"[\x00-\x08\x0a-\x1f\x7f-\x9f{_MARKS}]")


def _escape_control(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, newlines: bool = False) -> str:
    """``text`` safe to show on a terminal: control characters (terminal escapes included) and
    invisible reordering marks written as ``\\xNN`` / ``\\uNNNN``; newlines kept only when
    ``newlines``. Markup is not touched: print the result as plain text."""
    pattern = _CONTROL if newlines else _CONTROL_NEWLINE
    return pattern.sub(_escape_control, text)


class _ShortRepr(reprlib.Repr):
    """reprlib with every value cut before it is formatted (reprlib formats big ints and
    unknown objects whole, then cuts)."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 64:
            return f"<an int of {x.bit_length():,} bits>"
        return repr(x)

    def repr_bytes(self, x: bytes, level: int) -> str:
        return repr(x[: self.maxstring]) + ("..." if len(x) > self.maxstring else "")

    def repr_instance(self, x: object, level: int) -> str:
        if isinstance(x, (bool, float, complex, type(None))) or type(x).__module__ == "datetime":
            return super().repr_instance(x, level)
        return f"<{type(x).__name__}>"  # an object whose repr could be anything


def short(value: object, limit: int = 60, *, quote: bool = True) -> str:
    """A bounded, printable description of ``value`` for a message: at most ``limit``
    characters, nested values and long strings cut *before* they are formatted (an alias-built
    structure or a 5000-digit integer costs nothing here), control characters escaped.
    ``quote=False`` shows a string as it is, not as its repr."""
    r = _ShortRepr()
    r.maxlevel, r.maxdict, r.maxlist, r.maxtuple, r.maxset = 3, 4, 6, 6, 6
    r.maxstring = r.maxother = max(8, limit)
    if isinstance(value, str) and not quote:
        text = value[: limit + 1]
    else:
        try:
            text = r.repr(value)
        except Exception:  # a value whose own repr fails
            text = f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return printable(text)


def _unwrap(annotation: Any) -> list[Any]:
    """The members of a (possibly Optional / Union) annotation."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _unwrap(a)]
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _field_step(current: Any, key: str) -> tuple[Any, bool]:
    """From schema ``current`` through its field ``key``: the model the field holds (directly,
    optionally, or as a mapping's values; None if none) and whether the field is a mapping,
    whose next path part is a key the user wrote (an override's name pattern)."""
    field = current.model_fields.get(key) if _is_model(current) else None
    if field is None:
        return None, False
    members = _unwrap(field.annotation)
    values = [v for m in members if typing.get_origin(m) is dict for v in _unwrap(m.__args__[-1])]
    models = [m for m in members + values if _is_model(m)]
    mapping = any(typing.get_origin(m) is dict for m in members)
    return (models[0] if models else None), mapping


def _model_at(root: type[BaseModel], path: list[str | int]) -> type[BaseModel] | None:
    """The schema class reached by following ``path`` from ``root`` (for listing allowed keys)."""
    current: Any = root
    user_key = False
    for key in path:
        if isinstance(key, int):
            continue
        if user_key:  # a mapping's key (e.g. an override's pattern): its value has the model
            user_key = False
            continue
        if not _is_model(current) or key not in current.model_fields:
            return None
        current, user_key = _field_step(current, key)
    return current if _is_model(current) else None


_UNION_TAGS = {"float", "int", "str", "bool", "list", "dict", "none"}


def _clean_loc(loc: tuple[Any, ...], root: Any = None) -> list[str | int]:
    """Drop pydantic's union-member tags (``'float'``, ``"literal['test']"``, ``'DistillSpec'``,
    ``'function-after[...]'``) from an error location, keeping keys and list indices — also a
    mapping's keys as the user wrote them (``overrides: {Conv1: ...}``, ``{'layer[12]': ...}``),
    found by following the schema from ``root``."""
    out: list[str | int] = []
    current, user_key = root, False
    for part in loc:
        if isinstance(part, int):
            out.append(part)
        elif user_key:
            out.append(part)
            user_key = False
        elif not ("[" in part or part in _UNION_TAGS or part[:1].isupper()):
            out.append(part)
            current, user_key = _field_step(current, part)
    return out


def format_validation_error(
    error: ValidationError, root: type[BaseModel], prefix: str = ""
) -> list[str]:
    """One line per offending key: ``path: what is wrong (got X)``, unions merged into one line."""
    grouped: dict[str, list[str]] = {}
    for err in error.errors():
        loc = _clean_loc(err["loc"], root)
        path = ".".join(str(p) for p in loc)
        full = f"{prefix}.{path}" if prefix and path else (prefix or path or "(top level)")
        if err["type"] == "extra_forbidden":
            model = _model_at(root, loc[:-1])
            allowed = ", ".join(model.model_fields) if model else "none"
            grouped.setdefault(full, []).append(f"unknown key; allowed keys here: {allowed}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required key is missing"
        elif "input" in err and err["type"] != "missing":
            msg = f"{short(msg, 300, quote=False)} (got {short(err['input'])})"
        grouped.setdefault(short(full, 200, quote=False), []).append(msg)
    lines = []
    for path, msgs in grouped.items():
        unique = list(dict.fromkeys(msgs))
        lines.append(f"{path}: " + "; or ".join(unique))
    return lines
