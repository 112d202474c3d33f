"""Recipes as data (tasks/model/recipes.py), the on-the-fly augmentation (tasks/model/protocol.py) and the search's pieces that
need no Ray: bad recipes, schedules, the stored best recipe's compare-and-swap (on a folder here; on SeaweedFS in
tests/integration/test_recipes_s3.py), the search space. `fmnist run --recipe best` as typed: tests/cli."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasks.model.architectures import ARCHITECTURES, build_model
from tasks.config import SearchConfig, build_config, build_search_config
from tasks.errors import ConfigError
from tasks.model.protocol import augmented
from tasks.model.recipes import (Recipe, best_recipes, compile_with_recipe, keep_if_better, learning_rate,
                           parse_recipe, recipe_for, recipe_from_sample, recipe_key, report_recipe)
from tasks.tune.search import epoch_budgets, search_space


# --- bad recipes: one line naming the field, what it expects, what was found ----------------------------------------

@pytest.mark.parametrize("values, field, found", [
    ({"learning_rate": -0.1}, "learning_rate", "-0.1"),
    ({"augmentation": "rotate"}, "augmentation", "'rotate'"),
    ({"optimizer": "sgd"}, "optimizer", "'sgd'"),
    ({"schedule": "step"}, "schedule", "'step'"),
    ({"epochs": 0}, "epochs", "0"),
    ({"dropout": 1.5}, "dropout", "1.5"),
    ({"colour": "red"}, "colour", "'red'"),
])
def test_a_recipe_outside_the_space_is_a_clear_error(values, field, found):
    with pytest.raises(ConfigError) as caught:
        parse_recipe(values, "recipes/full/cnn2.json")
    message = str(caught.value)
    assert message.startswith("recipes/full/cnn2.json: not a valid recipe: ") and field in message
    assert f"found {found}" in message and "\n" not in message


def test_weight_decay_belongs_to_adamw_only():
    with pytest.raises(ConfigError, match="weight_decay 0.01 applies to optimizer 'adamw' only"):
        parse_recipe({"optimizer": "adam", "weight_decay": 0.01}, "x")
    assert recipe_from_sample({"optimizer": "adam", "weight_decay": 0.01}).weight_decay == 0.0  # a search sample
    assert recipe_from_sample({"optimizer": "adamw", "weight_decay": 0.01}).weight_decay == 0.01


def test_a_run_config_refuses_a_bad_recipe_and_an_unknown_architecture():
    with pytest.raises(ConfigError, match="learning_rate.*found -1"):
        build_config(recipe="best", recipes={"cnn2": {"learning_rate": -1}})
    with pytest.raises(ConfigError, match="resnet9"):
        build_config(recipe="best", recipes={"resnet9": {}})


def test_the_report_recipe_is_the_seed_protocol():
    recipe = recipe_for(build_config(preset="quick").model_dump(), "cnn2")
    assert recipe == report_recipe(128, 2) and recipe.epochs == 2 and recipe.augmentation == "none"
    model = build_model("mlp1")
    compile_with_recipe(model, recipe, fit_rows=2400)
    assert type(model.optimizer).__name__ == "Adam" and float(model.optimizer.learning_rate) == pytest.approx(0.001)
    assert model.loss == "categorical_crossentropy"


def test_a_best_run_uses_its_recipe_with_epochs_capped_by_max_epochs():
    stored = {"learning_rate": 0.003, "batch_size": 256, "epochs": 40, "augmentation": "shift"}
    config = build_config(preset="quick", recipe="best", recipes={"mlp1": stored}).model_dump()
    recipe = recipe_for(config, "mlp1")
    assert (recipe.learning_rate, recipe.batch_size, recipe.augmentation, recipe.epochs) == (0.003, 256, "shift", 2)
    assert recipe_for(config, "cnn2") == report_recipe(128, 2)  # none given for it: the report's protocol


def test_schedules_follow_the_recipe_over_its_epochs():
    steps = 100
    cosine = learning_rate(Recipe(learning_rate=0.01, schedule="cosine", epochs=10), steps)
    assert float(cosine(0)) == pytest.approx(0.01) and float(cosine(1000)) == pytest.approx(0.0, abs=1e-6)
    one_cycle = learning_rate(Recipe(learning_rate=0.01, schedule="one_cycle", epochs=10), steps)
    assert float(one_cycle(0)) == pytest.approx(0.01 / 25)
    assert float(one_cycle(300)) == pytest.approx(0.01, rel=1e-3)  # the peak after 30% of the steps
    assert float(one_cycle(999)) < 0.0005
    assert learning_rate(Recipe(learning_rate=0.02), steps) == 0.02


# --- augmentation: on the fly, a function of (seed, epoch) ---------------------------------------------------------

def test_augmentation_is_drawn_from_seed_and_epoch_and_keeps_the_images_whole():
    images = np.zeros((200, 28, 28, 1), np.float32)
    images[:, 10:18, 10:18] = 1.0  # a centred square: a shift of at most 2 px keeps all of it
    first, again = augmented(images, 0, 3, "shift_flip"), augmented(images, 0, 3, "shift_flip")
    assert np.array_equal(first, again) and not np.array_equal(first, augmented(images, 0, 4, "shift_flip"))
    assert first.shape == images.shape and first.dtype == images.dtype
    assert np.allclose(first.sum(axis=(1, 2, 3)), 64.0)  # nothing cut off
    moved = [tuple(np.argwhere(image[..., 0])[0] - 10) for image in augmented(images, 0, 3, "shift")]
    assert set(moved) <= {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)} and len(set(moved)) > 15
    assert augmented(images, 0, 3, "none") is images


def test_flips_mirror_left_and_right():
    image = np.zeros((400, 28, 28), np.float32)
    image[:, 14, 3] = 1.0  # one pixel near the left edge (a shift moves it to columns 1-5, a flip to 22-26)
    flipped = augmented(image, 1, 0, "shift_flip")
    at_right = flipped[:, :, 20:].sum(axis=(1, 2)) > 0
    assert flipped.sum() == 400  # every pixel still there
    assert 0.35 < at_right.mean() < 0.65  # about half mirrored


# --- the search space and the sixth model -------------------------------------------------------------------------

def test_the_search_space_tunes_the_recipe_and_dropout_only_where_there_is_dropout():
    assert "dropout" in search_space("cnn2", 40) and "dropout" not in search_space("mlp1", 40)
    assert set(search_space("baseline", 40)) == {"learning_rate", "batch_size", "optimizer", "weight_decay",
                                                 "schedule", "label_smoothing", "augmentation", "epochs"}
    assert epoch_budgets(40) == [10, 20, 40] and epoch_budgets(2) == [1, 2] and epoch_budgets(1) == [1]


def test_the_sixth_model_is_a_residual_cnn_under_a_million_parameters():
    spec = ARCHITECTURES["resnet_bn"]
    model = build_model("resnet_bn")
    assert model.count_params() == spec.params < 1_000_000 and not spec.in_report
    assert {type(layer).__name__ for layer in model.layers} >= {"Conv2D", "BatchNormalization", "Add",
                                                               "GlobalAveragePooling2D", "Dropout"}
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    assert build_config().architectures == ["baseline", "mlp1", "mlp3_dropout", "cnn1_mlp", "cnn2"]  # not a default
    assert build_config(architectures=["resnet_bn"]).architectures == ["resnet_bn"]  # selectable by name


def test_search_options_are_checked():
    assert build_search_config(time_budget="30m").time_budget == 1800
    assert build_search_config(time_budget="2h").time_budget == 7200
    for field, value in (("time_budget", "soon"), ("num_samples", 0), ("reduction_factor", 1), ("scheduler", "pbt"),
                         ("recipe", "best")):
        with pytest.raises(ConfigError, match=f"config field '{field}'"):
            build_search_config(**{field: value})
    assert SearchConfig().seeds == 3 and SearchConfig().scheduler == "asha"


# --- the stored best recipe -----------------------------------------------------------------------------------------

def record(val: float) -> dict:
    return {"architecture": "mlp1", "recipe": Recipe(learning_rate=val / 100).model_dump(), "val_accuracy_mean": val,
            "test_accuracy_mean": val, "run_id": f"r{val}"}


def test_a_recipe_is_kept_only_when_it_validates_better(store):
    assert keep_if_better(store, "full", "mlp1", record(0.88)) == "stored"
    assert keep_if_better(store, "full", "mlp1", record(0.87)) == "kept the stored one"  # worse: the stored one stays
    assert keep_if_better(store, "full", "mlp1", record(0.89)) == "stored"
    stored = json.loads(store.get_bytes(recipe_key("full", "mlp1")))
    assert stored["run_id"] == "r0.89" and "stored_at" in stored
    assert best_recipes(store, "full", ["mlp1"]) == {"mlp1": stored["recipe"]}
    with pytest.raises(ConfigError, match="no stored recipe for cnn2 in .*recipes/full .*fmnist search --preset full"):
        best_recipes(store, "full", ["mlp1", "cnn2"])
    with pytest.raises(ConfigError, match="no stored recipe for mlp1"):  # presets are kept apart
        best_recipes(store, "quick", ["mlp1"])


def test_a_search_form_left_untouched_takes_the_chosen_presets_sample_count():
    """The Prefect UI's form sends every field; untouched ones as the deployment's form parameters (null for the
    preset's fields). Choosing 'quick' there must give the quick search's 6 recipes, not the full one's 16."""
    form = SearchConfig().form_parameters()
    assert form["num_samples"] is None and form["max_epochs"] is None
    assert SearchConfig(**{**form, "preset": "quick"}).num_samples == 6
    assert SearchConfig(**{**form, "preset": "quick", "num_samples": 3}).num_samples == 3  # a value typed wins
    assert SearchConfig(num_samples=5).form_parameters()["num_samples"] == 5


def test_tpe_models_the_results_after_a_third_of_the_samples():
    from tasks.tune.search import startup_trials, tpe_sampler

    assert [startup_trials(n) for n in (1, 6, 16, 30, 100)] == [3, 3, 5, 10, 10]
    assert type(tpe_sampler(16, 0)).__name__ == "TPESampler"
