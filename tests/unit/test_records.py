"""Stored records as pydantic models read through one helper (tasks/records.py), the kind a stored config names, and
bounds written once (a batch no recipe can train with is refused by the config)."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.config import PipelineConfig, SearchConfig, build_config, config_record, stored_kind
from tasks.errors import ConfigError, PipelineError
from tasks.keys import RunPaths, recipe_key
from tasks.model.recipes import Recipe, best_recipes, keep_if_better
from tasks.records import JsonProblem, describe, read_record
from tasks.runs.lease import Lease
from tasks.runs.run import claim_run, read_stored_config


class Point(BaseModel):
    model_config = ConfigDict(strict=True)

    x: int
    y: float = Field(ge=0)


@pytest.mark.parametrize("data, problem", [
    (b"", "empty (0 bytes)"),
    (b'{"x": 1, "y"', "not JSON at byte 12 of 12 (Expecting ':' delimiter); it ends early (truncated)"),
    (b"[1]", "expected a JSON object, found a list"),
    (b'{"y": 1}', "lacks 'x'"),
    (b'{"x": "1", "y": 1}', "'x' is a string, expected an integer"),
    (b'{"x": 1, "y": -1}', "'y': Input should be greater than or equal to 0 (found -1)"),
])
def test_one_helper_says_what_is_wrong_in_the_callers_error(data, problem):
    with pytest.raises(PipelineError) as caught:
        read_record(Point, data, error=lambda found: PipelineError(f"point.json is damaged: {found}; delete it"))
    message = str(caught.value)
    assert message.startswith("point.json is damaged: ") and problem in message and message.endswith("; delete it")
    assert "\n" not in message


def test_every_problem_is_named_on_one_line():
    with pytest.raises(ValidationError) as caught:
        Point.model_validate({"x": [], "y": "far"})
    assert describe(caught.value) == "'x' is a list, expected an integer; 'y' is a string, expected a number"


# --- the batch-size bound: the recipe's, once ----------------------------------------------------------------------

@pytest.mark.parametrize("batch", [4, 8193])
def test_a_batch_no_recipe_can_train_with_is_refused_by_the_config(batch):
    with pytest.raises(ConfigError) as caught:
        build_config(batch_size=batch)
    message = str(caught.value)
    assert message.startswith("config field 'batch_size': ") and f"(found {batch})" in message and "\n" not in message


def test_the_config_and_the_recipe_share_the_batch_and_epoch_bounds():
    config, recipe = PipelineConfig.model_json_schema()["properties"], Recipe.model_json_schema()["properties"]
    assert (config["batch_size"]["minimum"], config["batch_size"]["maximum"]) == (8, 8192)
    assert {k: recipe["batch_size"][k] for k in ("minimum", "maximum", "default")} == \
        {k: config["batch_size"][k] for k in ("minimum", "maximum", "default")}
    epochs = config["max_epochs"]["anyOf"][0]
    assert (epochs["minimum"], epochs["maximum"]) == (recipe["epochs"]["minimum"], recipe["epochs"]["maximum"])
    assert build_config(batch_size=8).batch_size == 8


# --- config.json says which kind of run it began --------------------------------------------------------------------

def test_a_stored_config_names_its_kind():
    run, search = build_config(run_id="a"), SearchConfig(run_id="b")
    assert json.loads(config_record(run))["kind"] == "run" and json.loads(config_record(search))["kind"] == "search"
    assert stored_kind(json.loads(config_record(search))) == "search"


def test_a_config_stored_before_it_named_its_kind_is_told_by_the_model_that_validates_it():
    run = build_config(run_id="a").model_dump(mode="json")
    search = SearchConfig(run_id="b").model_dump(mode="json")
    assert (stored_kind(run), stored_kind(search)) == ("run", "search")
    assert stored_kind({"preset": "full", "recipe": "wide"}) is None  # neither: the listing shows its recipe


def test_a_search_is_not_resumed_as_a_run(store):
    store.put_bytes(RunPaths("s1").config, config_record(SearchConfig(run_id="s1", store=store.uri)))
    with pytest.raises(ConfigError, match="run id 's1' in .* is a search's .*choose another --run-id or leave it empty"):
        read_stored_config(store, "s1")


def test_a_claimed_run_reads_back_its_stored_config(store):
    config = PipelineConfig(preset="quick", store=store.uri, run_id="r1", architectures=["cnn2"])
    claim_run(config, store).release()
    assert json.loads(store.get_bytes(RunPaths("r1").config))["kind"] == "run"
    assert read_stored_config(store, "r1") == config
    store.put_bytes(RunPaths("r1").config, b'{"kind": "run", "batch_size": 4}')
    with pytest.raises(ConfigError, match=r"config.json: not a valid run config \(config field 'batch_size'"):
        read_stored_config(store, "r1")


# --- the best recipe and the lease ----------------------------------------------------------------------------------

@pytest.mark.parametrize("content, problem", [
    (b"{cut", "not a valid recipe: not JSON at byte 1 of 4"),
    (b"[]", "not a valid recipe: expected a JSON object, found a list"),
    (b'{"val_accuracy_mean": 0.9}', "not a valid recipe: lacks 'recipe'"),
    (json.dumps({"recipe": {"batch_size": 4}}).encode(), "not a valid recipe: batch_size: Input should be greater"),
])
def test_a_damaged_best_recipe_is_one_line_naming_the_file(store, content, problem):
    store.put_bytes(recipe_key("full", "mlp1"), content)
    for attempt in (lambda: best_recipes(store, "full", ["mlp1"]),
                    lambda: keep_if_better(store, "full", "mlp1", {"recipe": Recipe().model_dump(),
                                                                   "val_accuracy_mean": 0.9})):
        with pytest.raises(ConfigError) as caught:
            attempt()
        message = str(caught.value)
        assert message.startswith(f"{store.url_for(recipe_key('full', 'mlp1'))}: {problem}"), message
        assert message.endswith("delete it, and the next `fmnist search` stores a new one") and "\n" not in message


@pytest.mark.parametrize("content", [b"", b"garbage", b"[]", b'{"host": "h"}', b'{"host": "h", "pid": "x", "id": "i", '
                                                                                b'"renewed_at": 1}'])
def test_an_unreadable_lease_is_held_by_nobody(content):
    assert Lease.read(content) is None


def test_a_lease_reads_back():
    lease = Lease.read(b'{"host": "h", "pid": 7, "id": "i", "renewed_at": 12.5}')
    assert (lease.host, lease.pid, lease.id, lease.renewed_at) == ("h", 7, "i", 12.5)


def test_json_problem_is_a_value_error():
    assert issubclass(JsonProblem, ValueError)
