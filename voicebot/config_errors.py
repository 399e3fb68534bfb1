"""Config problems said in the project's words rather than pydantic's.

pydantic validates the file (voicebot.config); its error types are mapped here to sentences
about TOML ("must be true or false", "unknown key 'prot'; did you mean 'port'?"), list
positions are counted from 1 as ``voicebot config check`` counts routes, and the checks pydantic
cannot make are here too: a quoted boolean ("yes"), and an API key that is empty or a
placeholder left from an example.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic_core import ErrorDetails


def _union_tag(part: int | str) -> bool:
    """pydantic names the member of a union it tried (``literal['builtin']``,
    ``function-after[...]``); a config key never looks like that."""
    return isinstance(part, str) and any(c in part for c in "[('")


def loc_path(prefix: str, loc: Iterable[int | str]) -> str:
    """``routes[1].providers[2]``: keys dotted, list positions counted from 1."""
    out = prefix
    for part in loc:
        if _union_tag(part):
            continue
        out += f"[{part + 1}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def relevant(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """Drop a union's literal alternative when the value was a table or list: for
    ``reasoning = {...}`` the error is in the table, not that it is not "builtin"."""
    tagged = [e for e in errors if any(_union_tag(p) for p in e["loc"])]
    return [
        e
        for e in errors
        if not (e["type"] == "literal_error" and isinstance(e.get("input"), dict | list) and len(tagged) > 1)
    ]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions, list and dict)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _models_in(args[0])
    if origin in (typing.Union, types.UnionType, list, tuple):
        return [m for arg in args for m in _models_in(arg)]
    if origin is dict and len(args) == 2:
        return _models_in(args[1])
    return []


def _field(model: type[BaseModel], key: str) -> Any | None:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info.annotation
    return None


def _keys(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def models_at(root: type[BaseModel], loc: Iterable[int | str]) -> list[type[BaseModel]]:
    """The models that may sit at ``loc`` (a pydantic error location) under ``root``."""
    models = [root]
    for part in loc:
        if isinstance(part, int):
            continue  # a list position: the list's element models
        annotations = [a for model in models if (a := _field(model, part)) is not None]
        if annotations:  # else a dict key (providers.NAME) or a union member's tag: stay
            models = [m for a in annotations for m in _models_in(a)]
    return models


def suggestion(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _bound(ctx: dict[str, Any] | None, key: str) -> str:
    return str((ctx or {}).get(key, "?"))


def message(error: ErrorDetails, root: type[BaseModel]) -> str:
    """One validation error as a sentence."""
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx")
    shown = f"{value!r}" if isinstance(value, str | int | float | bool) else type(value).__name__
    if kind == "extra_forbidden":
        loc = tuple(error["loc"])
        key = str(loc[-1])
        keys = {k for model in models_at(root, loc[:-1]) for k in _keys(model)}
        return f"unknown key {key!r}{suggestion(key, keys)}"
    if kind == "missing":
        return "is required"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, not {shown}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number, not {shown}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, not {shown}"
    if kind in ("string_type",):
        return f"must be a text string in quotes, not {shown}"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list [...], not {shown}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a table, not {shown}"
    if kind == "greater_than_equal":
        return f"must be at least {_bound(ctx, 'ge')}, not {shown}"
    if kind == "greater_than":
        return f"must be more than {_bound(ctx, 'gt')}, not {shown}"
    if kind == "less_than_equal":
        return f"must be at most {_bound(ctx, 'le')}, not {shown}"
    if kind == "less_than":
        return f"must be less than {_bound(ctx, 'lt')}, not {shown}"
    if kind == "too_short":
        return f"needs at least {_bound(ctx, 'min_length')} item(s)"
    if kind == "too_long":
        return f"takes at most {_bound(ctx, 'max_length')} item(s)"
    if kind in ("literal_error", "enum"):
        return f"must be one of {_bound(ctx, 'expected')}, not {shown}"
    if kind in ("value_error", "assertion_error"):
        reason = (ctx or {}).get("error")
        return str(reason) if reason is not None else error["msg"].removeprefix("Value error, ")
    if kind == "path_not_file":
        return f"no such file: {shown}"
    return error["msg"].removeprefix("Value error, ")


# -- checks pydantic does not make -------------------------------------------------------

_BOOL_WORDS = ("true", "false")  # what ${VAR} interpolation may legitimately produce


def quoted_booleans(root: type[BaseModel], tree: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(path, message) for every boolean key given as a string other than "true"/"false".

    pydantic's lax mode reads "yes", "on", "1" as true; a TOML file says ``true``. Only the
    two words survive, since ``${VAR}`` interpolation always yields a string."""
    found: list[tuple[str, str]] = []
    if not isinstance(tree, dict):
        return found
    for key, value in tree.items():
        annotation = _field(root, str(key))
        if annotation is None:
            continue
        path = f"{prefix}.{key}" if prefix else str(key)
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        bool_field = annotation is bool or (union and bool in typing.get_args(annotation))
        if bool_field and isinstance(value, str) and value not in _BOOL_WORDS:
            found.append((path, f"must be true or false (unquoted), not {value!r}"))
            continue
        for model in _models_in(annotation):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    found.extend(quoted_booleans(model, item, f"{path}[{i + 1}]"))
            elif isinstance(value, dict) and typing.get_origin(annotation) is dict:
                for name, item in value.items():
                    found.extend(quoted_booleans(model, item, f"{path}.{name}"))
            else:
                found.extend(quoted_booleans(model, value, path))
    return found


_PLACEHOLDER = re.compile(
    r"^(x+|\*+|changeme|change[-_ ]?me|replace[-_ ]?me|todo|tbd|placeholder|dummy|none|null|secret|"
    r"(api[-_ ]?)?key|token|.*[-_ ]here)$|\.\.\.|…|^<.*>$|\byour[-_ ]",
    re.IGNORECASE,
)


def secret_problem(value: SecretStr) -> str | None:
    """Why a configured secret (an API key, a token) cannot be the real one, or None."""
    text = value.get_secret_value().strip()
    if not text:
        return "is empty: set the real key (usually through its environment variable)"
    if _PLACEHOLDER.search(text):
        return "looks like a placeholder from an example, not a real key"
    return None


def secret_problems(model: BaseModel, prefix: str) -> list[tuple[str, str]]:
    """(path, message) for each secret field of ``model`` that is empty or a placeholder."""
    out = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr) and (problem := secret_problem(value)) is not None:
            out.append((f"{prefix}.{name}", problem))
    return out
