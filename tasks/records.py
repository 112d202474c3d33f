"""The pipeline's own JSON files (the champion pointer, a dataset manifest), read with a diagnosis in words.

A damaged file must not surface as a bare JSONDecodeError or KeyError after a night's training: these helpers
say what is wrong and where (not JSON at byte N, a list where an object belongs, a key missing), and leave the
file's name and the repair to the reader, which knows both.
"""

from __future__ import annotations

import json
from typing import Any


class JsonProblem(ValueError):
    """What is wrong with a JSON document, in a few words, without naming the file."""


def kind_of(value: Any) -> str:
    """A JSON value's kind as a user would say it ("a list", "null")."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def parse_object(data: bytes) -> dict[str, Any]:
    """The JSON object these bytes hold, or a JsonProblem saying why they hold none."""
    if not data:
        raise JsonProblem("empty (0 bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonProblem(f"not JSON: not UTF-8 text at byte {exc.start} of {len(data)}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        at = len(text[:exc.pos].encode())  # the error's position is in characters; a user's tools count bytes
        # An error at the very end (or an unterminated string) is what a write cut short leaves.
        ends_early = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated")
        raise JsonProblem(f"not JSON at byte {at} of {len(data)} ({exc.msg})" + ("; it ends early (truncated)" if ends_early else ""))
    if not isinstance(value, dict):
        raise JsonProblem(f"expected a JSON object, found {kind_of(value)}")
    return value


def require(obj: dict[str, Any], key: str, expected: str, where: str = "") -> Any:
    """obj[key] when present and of the expected kind ("an integer", "a string", "a number", "an object",
    "a list"); else a JsonProblem naming where it is ("entry 'cnn2' lacks 'test_accuracy'")."""
    owner = f"{where} " if where else ""
    if key not in obj:
        raise JsonProblem(f"{owner}lacks '{key}'")
    value = obj[key]
    found = kind_of(value)
    if found != expected and not (expected == "a number" and found == "an integer"):
        raise JsonProblem(f"{owner}'{key}' is {found}, expected {expected}")
    return value


def require_keys(obj: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    """Every key present (any value, null included); else one JsonProblem listing the missing ones."""
    missing = [k for k in keys if k not in obj]
    if missing:
        raise JsonProblem(f"{where} lacks {', '.join(repr(k) for k in missing)}")

