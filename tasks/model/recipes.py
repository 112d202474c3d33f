"""Training recipes as data: how a model is trained, apart from what it is.

The report's protocol is one recipe (Adam with its defaults, batch 128, constant rate, no smoothing, no augmentation,
the architecture's dropout). `fmnist search` looks for better ones per architecture; the best found so far is kept in
the store under recipes/<preset>/<architecture>.json (a compare-and-swap write) and `fmnist run --recipe best` trains
with them. Plain pydantic and numpy here: Ray trials import this module, Prefect is not imported.
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.errors import ConfigError, StoreError
from tasks.keys import RECIPES_PREFIX, recipe_key
from tasks.records import JsonProblem, path_of, quoted, read_record, validate

if TYPE_CHECKING:  # only for annotations: the GPU check imports this module where pyarrow and boto3 are absent
    from tasks.data.store import Store

Optimizer = Literal["adam", "adamw"]
Schedule = Literal["constant", "cosine", "one_cycle"]
Augmentation = Literal["none", "shift", "shift_flip"]

# The bounds of a batch and of an epoch budget, written once: the run's config (tasks.config) takes them from here,
# so a --batch-size no recipe can train with is refused before a run is claimed.
BatchSize = Annotated[int, Field(ge=8, le=8192)]
Epochs = Annotated[int, Field(ge=1, le=10_000)]
REPORT_BATCH_SIZE = 128  # the report's protocol
REPORT_MAX_EPOCHS = 100

ONE_CYCLE_WARMUP = 0.3  # fraction of the steps spent rising to the peak rate (Smith's one-cycle: ~0.3)
ONE_CYCLE_START = 25.0  # the rate starts at peak / 25, as in PyTorch's OneCycleLR default


class Recipe(BaseModel):
    """One way to train an architecture; the defaults are the report's protocol."""

    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(0.001, gt=0, le=1, description="Peak learning rate (Adam's default 0.001).")
    batch_size: BatchSize = Field(REPORT_BATCH_SIZE, description="Training batch size (the report: 128).")
    optimizer: Optimizer = Field("adam", description="'adam' (the report), or 'adamw' (decoupled weight decay).")
    weight_decay: float = Field(0.0, ge=0, le=0.5, description="AdamW's weight decay (0 with 'adam').")
    schedule: Schedule = Field("constant", description="'constant' (the report), 'cosine' decay to 0 over the "
                                                       "epochs, or 'one_cycle' (warm-up to the peak, then cosine).")
    label_smoothing: float = Field(0.0, ge=0, le=0.5, description="Cross-entropy label smoothing (the report: 0).")
    augmentation: Augmentation = Field("none", description="'none' (the report), 'shift' (random shifts of up to 2 "
                                                           "pixels) or 'shift_flip' (and horizontal flips).")
    dropout: float | None = Field(None, ge=0, lt=1, description="Rate of every Dropout layer (empty: the "
                                                                "architecture's, 0.4 in the report).")
    epochs: Epochs = Field(REPORT_MAX_EPOCHS, description="Epoch budget (early stopping may end sooner).")

    @model_validator(mode="after")
    def _weight_decay_needs_adamw(self) -> "Recipe":
        if self.optimizer == "adam" and self.weight_decay:
            raise ValueError(f"weight_decay {self.weight_decay} applies to optimizer 'adamw' only; found 'adam'")
        return self

    def capped(self, max_epochs: int) -> "Recipe":
        """The recipe with its epoch budget bounded by a run's max_epochs (so `--preset quick` stays quick)."""
        return self if self.epochs <= max_epochs else self.model_copy(update={"epochs": max_epochs})

    def describe(self) -> str:
        """The recipe in words: "AdamW wd 8.3e-3, lr 2.8e-3 cosine, batch 128, smoothing 0.03, shifts, 20 epochs"."""
        decay = f" wd {short_float(self.weight_decay)}" if self.optimizer == "adamw" else ""
        smoothing = f"smoothing {self.label_smoothing:.2f}" if self.label_smoothing else "no smoothing"
        dropout = "" if self.dropout is None else f", dropout {self.dropout:.2f}"
        return (f"{OPTIMIZER_WORDS[self.optimizer]}{decay}, lr {short_float(self.learning_rate)} "
                f"{SCHEDULE_WORDS[self.schedule]}, batch {self.batch_size}, {smoothing}, "
                f"{AUGMENTATION_WORDS[self.augmentation]}{dropout}, {self.epochs} epochs")


OPTIMIZER_WORDS: dict[str, str] = {"adam": "Adam", "adamw": "AdamW"}
SCHEDULE_WORDS: dict[str, str] = {"constant": "constant", "cosine": "cosine", "one_cycle": "one-cycle"}
AUGMENTATION_WORDS: dict[str, str] = {"none": "no augmentation", "shift": "shifts", "shift_flip": "shifts and flips"}


def short_float(value: float) -> str:
    """A rate in two significant digits, the exponent without padding: 0.0028 -> "2.8e-3"."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def parse_recipe(values: Any, where: str) -> Recipe:
    """A Recipe from a dict, or ConfigError naming `where`, each bad field, what it expects and what it found."""
    try:
        return validate(Recipe, values, name=path_of)
    except JsonProblem as exc:
        raise ConfigError(f"{where}: not a valid recipe: {exc}") from None


def report_recipe(batch_size: int = REPORT_BATCH_SIZE, epochs: int = REPORT_MAX_EPOCHS) -> Recipe:
    """The report's protocol as a recipe (with the run's batch size and epoch bound)."""
    return Recipe(batch_size=batch_size, epochs=epochs)


def recipe_for(config: dict, architecture: str) -> Recipe:
    """The recipe a trial trains with, from the config it was given (PipelineConfig.model_dump()).

    A run with resolved recipes (`--recipe best`) uses its architecture's, its epochs capped by the run's
    max_epochs (so `--preset quick --recipe best` stays quick); otherwise the report's protocol.
    """
    chosen = (config.get("recipes") or {}).get(architecture)
    if chosen is None:
        return report_recipe(config["batch_size"], config["max_epochs"])
    return parse_recipe(chosen, f"the recipe of {architecture}").capped(config["max_epochs"])


def recipe_from_sample(sample: dict) -> Recipe:
    """A search sample as a Recipe: weight decay is sampled for every trial but means something only for AdamW."""
    values = dict(sample)
    if values.get("optimizer") == "adam":
        values["weight_decay"] = 0.0
    return parse_recipe(values, "search sample")


# --- what Keras trains with ---------------------------------------------------------------------------------------

def learning_rate(recipe: Recipe, steps_per_epoch: int) -> Any:
    """The rate, or a Keras schedule over the recipe's epochs (its state is the optimizer's `iterations`, which the
    .keras checkpoint keeps: a resumed trial continues the schedule where it stopped)."""
    import keras

    if recipe.schedule == "constant":
        return recipe.learning_rate
    total = max(1, steps_per_epoch * recipe.epochs)
    if recipe.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(recipe.learning_rate, decay_steps=total)
    warmup = max(1, int(ONE_CYCLE_WARMUP * total))
    return keras.optimizers.schedules.CosineDecay(recipe.learning_rate / ONE_CYCLE_START, decay_steps=max(1, total - warmup),
                                                  warmup_target=recipe.learning_rate, warmup_steps=warmup)


def compile_with_recipe(model, recipe: Recipe, fit_rows: int, steps_per_execution: int = 1) -> None:
    """Optimizer, schedule and label-smoothed cross-entropy of the recipe; the report's recipe compiles exactly as
    the seed protocol does (Adam with its defaults, plain categorical cross-entropy)."""
    import keras

    rate = learning_rate(recipe, math.ceil(fit_rows / recipe.batch_size))
    optimizer = (keras.optimizers.AdamW(rate, weight_decay=recipe.weight_decay) if recipe.optimizer == "adamw"
                 else keras.optimizers.Adam(rate))
    loss = (keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing) if recipe.label_smoothing
            else "categorical_crossentropy")
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], steps_per_execution=steps_per_execution)


# --- the best recipes, kept in the store ---------------------------------------------------------------------------

class BestRecipe(BaseModel):
    """recipes/<preset>/<architecture>.json: the best recipe `fmnist search` found for an architecture, with the
    numbers it was chosen on (written by keep_if_better; other keys the search adds are kept as they are)."""

    model_config = ConfigDict(extra="allow")

    recipe: Recipe
    val_accuracy_mean: float | None = Field(None, description="Mean validation accuracy of its seeds: what it is "
                                                              "ranked on (never the test accuracy).")
    test_accuracy_mean: float | None = None
    run_id: str | None = Field(None, description="The search run that found it.")


def _best_recipe_naming(loc: tuple[str | int, ...]) -> str:
    """A recipe's fields by their own names (as parse_recipe says them), the record's others in quotes."""
    return path_of(loc[1:]) if loc[:1] == ("recipe",) and len(loc) > 1 else quoted(loc)


def _parse_best(store: "Store", key: str, data: bytes) -> BestRecipe:
    return read_record(BestRecipe, data, name=_best_recipe_naming, error=lambda problem: ConfigError(
        f"{store.url_for(key)}: not a valid recipe: {problem}; delete it, and the next `fmnist search` stores a new "
        "one"))


def read_best(store: "Store", preset: str, architecture: str) -> BestRecipe | None:
    """The stored record of the architecture's best recipe, or None; ConfigError naming the file if it is damaged."""
    key = recipe_key(preset, architecture)
    data, _ = store.read_versioned(key)
    return None if data is None else _parse_best(store, key, data)


def best_recipes(store: "Store", preset: str, architectures: list[str]) -> dict[str, dict]:
    """The stored best recipe of each architecture; ConfigError naming every one that has none."""
    found = {arch: read_best(store, preset, arch) for arch in architectures}
    missing = [arch for arch, record in found.items() if record is None]
    if missing:
        raise ConfigError(f"--recipe best: no stored recipe for {', '.join(missing)} in "
                          f"{store.url_for(f'{RECIPES_PREFIX}/{preset}')} (preset '{preset}'); run `fmnist search --preset "
                          f"{preset} --architectures {','.join(missing)}` first, or use --recipe report")
    return {arch: record.recipe.model_dump() for arch, record in found.items() if record is not None}


# What keep_if_better did: stored the record; found it stored already by the same run (its own earlier write: a
# retried step, a resumed report); or kept the stored one (at least as good on validation accuracy).
RecipeKept = Literal["stored", "already ours", "kept the stored one"]
KEPT_WORDS: dict[str, str] = {"stored": "stored", "already ours": "stored (already, by this run)",
                              "kept the stored one": "kept the stored one (not beaten by two standard errors of "
                                                     "validation accuracy)"}
MARGIN_SES = 2.0  # a new record must beat the stored mean by this many standard errors of the difference


def _margin(stored: "BestRecipe", record: dict) -> float:
    """Two standard errors of the difference of the two means, each from its seeds' spread (val_accuracy_se); 0
    where either record has none (one seed, or written before they were recorded). The stored record is the best
    of many searches' noisy means on the same validation rows: without a margin it ratchets up on luck alone."""
    theirs, ours = (stored.model_extra or {}).get("val_accuracy_se"), record.get("val_accuracy_se")
    if not isinstance(theirs, (int, float)) or not isinstance(ours, (int, float)):
        return 0.0
    return MARGIN_SES * (theirs ** 2 + ours ** 2) ** 0.5


def keep_if_better(store: "Store", preset: str, architecture: str, record: dict, attempts: int = 10) -> RecipeKept:
    """Store `record` as the architecture's best recipe if it beats the stored one on mean validation accuracy by
    two standard errors of the difference (never on test accuracy: the test set only reports). Compare-and-swap, so two searches finishing at once
    cannot lose the better recipe. A stored record with this record's `run_id` is the run's own earlier write:
    "already ours", never "kept the stored one"."""
    key = recipe_key(preset, architecture)
    for _ in range(attempts):
        data, token = store.read_versioned(key)
        stored = _parse_best(store, key, data) if data else None
        if stored is not None and record.get("run_id") is not None and stored.run_id == record["run_id"]:
            return "already ours"
        current = stored.val_accuracy_mean if stored else None
        if stored is not None and (stored.model_extra or {}).get("val_accuracy_of") != record.get("val_accuracy_of"):
            current = None  # measured another way (older searches: a maximum over epochs, which ran high): replaced
        if current is not None and record["val_accuracy_mean"] <= current + _margin(stored, record):
            return "kept the stored one"
        stamped = {**record, "stored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if store.put_if_version(key, json.dumps(stamped, indent=2).encode(), token):
            return "stored"
    raise StoreError(f"{store.url_for(key)}: changed by other searches {attempts} times; not updated")
