"""The pipeline's own stored JSON records, read with a diagnosis in words, and the one formatter of validation errors.

Each record (a dataset manifest, the champion pointer, a best recipe, a run's config, a run's lease) is a pydantic
model in the module that owns it. `read_record` reads one from the bytes the store returned: a damaged file must not
surface as a bare JSONDecodeError, KeyError or ValidationError after a night's training, so it says what is wrong
and where (not JSON at byte N, a list where an object belongs, a key missing) in one line, and the caller's error
names the file and the repair, which the caller knows. `describe` is the only place that turns a pydantic
ValidationError into words: the config's and the recipe's messages use it too.
"""

from __future__ import annotations

import json
from typing import Any, Callable, TypeVar

from pydantic import BaseModel, ValidationError

from tasks.errors import PipelineError

M = TypeVar("M", bound=BaseModel)
# Names the place a validation error points at (pydantic's `loc`), as a user would say it: "'splits'",
# "entry 'cnn2'", "config field 'batch_size'"; "" for the document itself.
Naming = Callable[[tuple[str | int, ...]], str]


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


def path_of(loc: tuple[str | int, ...]) -> str:
    """pydantic's loc as a path a user would type: architectures[0], splits.train."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def quoted(loc: tuple[str | int, ...]) -> str:
    """The default Naming: the path in quotes ('splits.train'), nothing for the document itself."""
    return f"'{path_of(loc)}'" if loc else ""


# pydantic's type errors, as the kind of JSON value that was expected.
_EXPECTED_KIND = {"int_type": "an integer", "float_type": "a number", "string_type": "a string",
                  "bool_type": "a boolean", "dict_type": "an object", "model_type": "an object",
                  "model_attributes_type": "an object", "list_type": "a list", "none_required": "null"}


def _problem(error: Any, name: Naming) -> str:
    loc, kind = tuple(error["loc"]), error["type"]
    if kind == "missing" and loc:
        return f"{name(loc[:-1])} lacks '{loc[-1]}'".lstrip()
    if kind in _EXPECTED_KIND:
        if not loc:
            return f"expected {_EXPECTED_KIND[kind]}, found {kind_of(error['input'])}"
        return f"{name(loc)} is {kind_of(error['input'])}, expected {_EXPECTED_KIND[kind]}"
    if kind == "value_error" and not loc:  # a model's own check across fields: its message is the whole story
        return str(error.get("ctx", {}).get("error", error["msg"]))
    return f"{name(loc)}: {error['msg']} (found {error.get('input')!r})"


def describe(exc: ValidationError, name: Naming = quoted, sep: str = "; ") -> str:
    """The one formatter of validation errors: per problem, where (by `name`), what was expected, what was found
    ("'revision' is a string, expected an integer", "entry 'cnn2' lacks 'test_accuracy'",
    "config field 'batch_size': Input should be greater than or equal to 8 (found 4)"); `sep` between them."""
    return sep.join(dict.fromkeys(_problem(error, name) for error in exc.errors(include_url=False)))


def validate(model: type[M], value: Any, name: Naming = quoted) -> M:
    """`value` as a `model`, or a JsonProblem of one line saying what is off."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise JsonProblem(describe(exc, name)) from None


def read_record(model: type[M], data: bytes, error: Callable[[str], PipelineError], name: Naming = quoted) -> M:
    """The record these bytes hold, or error(problem): the caller's one-line error, naming the file and the repair,
    around what is wrong (not JSON at byte N, cut short, a key missing, a value of the wrong kind or out of range)."""
    try:
        return validate(model, parse_object(data), name)
    except JsonProblem as exc:
        raise error(str(exc)) from None
