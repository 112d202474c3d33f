"""The unit tier's store-backed tests, collected again here against SeaweedFS.

A test of tests/unit that takes a store (the `store` fixture, `backend`, or a fixture of its module that takes one
of them) runs there on a local folder. An integration module imports those tests, with the fixtures of their
module, by

    globals().update(on_s3(tests.unit.test_x))

and this tier's conftest makes `backend` "s3": the same tests, names and assertions, on the session's SeaweedFS.
"""

from __future__ import annotations

import inspect
from types import ModuleType

STORE_FIXTURES = {"backend", "store"}


def _is_fixture(value: object) -> bool:
    # pytest 8.4+ wraps a fixture function in a FixtureFunctionDefinition; older ones marked the function.
    return type(value).__name__ == "FixtureFunctionDefinition" or hasattr(value, "_pytestfixturefunction")


def _parameters(value: object) -> set[str]:
    return set(inspect.signature(value).parameters)


def on_s3(module: ModuleType) -> dict[str, object]:
    """The store-backed tests of `module` and every fixture defined in it, by name."""
    fixtures = {name: value for name, value in vars(module).items() if _is_fixture(value)}
    store_backed = set(STORE_FIXTURES)
    grew = True
    while grew:  # fixtures that take a store-backed fixture are store-backed too
        grew = False
        for name, fixture in fixtures.items():
            if name not in store_backed and _parameters(fixture) & store_backed:
                store_backed.add(name)
                grew = True
    tests = {name: value for name, value in vars(module).items()
             if name.startswith("test_") and inspect.isfunction(value) and _parameters(value) & store_backed}
    assert tests, f"{module.__name__} has no store-backed test"
    return {**fixtures, **tests}
