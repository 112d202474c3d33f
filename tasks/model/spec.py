"""What crosses from the driver into one Ray Tune trial: one typed TrialSpec.

Tune hands a trial a config dict. The project's dicts have two keys: `spec` (a TrialSpec's model_dump(), made in
the driver from the run) and, in a search only, `recipe` (the sample Tune's searcher drew from the search space,
which replaces the spec's recipe). `TrialSpec.from_tune` is the only reader of that dict.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.model.recipes import Recipe, recipe_from_sample


class TrialSpec(BaseModel):
    """One trial: which run and experiment it belongs to, what it trains, and with which recipe."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    experiment: str = Field(description="The Tune experiment's folder under runs/<run_id>/ ('tune', 'retrain', "
                                        "'search/<architecture>').")
    dataset_version: str
    store: str
    s3_endpoint: str | None = None
    architecture: str
    recipe: Recipe = Field(description="What it trains with, its epochs already capped by the run's max_epochs.")
    recipe_name: str = Field("report", description="Where the recipe came from: 'report', 'best' or 'search'.")
    seed: int
    patience: int
    steps_per_execution: int
    eval_batch_size: int
    cpus_per_trial: float
    store_wait_s: float = Field(120, description="How long the trial's start waits for a store that does not answer.")
    train_rows: int | None = None
    test_rows: int | None = None
    publish: bool = Field(True, description="Test the model once and publish it under runs/<run_id>/<artifact_name>/; "
                                            "a search's trials see training rows only and publish nothing.")
    artifact_name: str | None = Field(None, description="The folder it publishes to (default: the architecture).")

    @property
    def folder(self) -> str:
        """Where a published trial's files go, under runs/<run_id>/."""
        return self.artifact_name or self.architecture

    @property
    def label(self) -> str:
        """How the trial is named in tables and log lines."""
        return self.folder if self.publish else self.architecture

    @classmethod
    def from_tune(cls, config: dict[str, Any]) -> "TrialSpec":
        """The spec of a Tune trial's config (with a search's sampled recipe, if it has one)."""
        spec = cls.model_validate(config["spec"])
        if "recipe" in config:
            spec = spec.model_copy(update={"recipe": recipe_from_sample(config["recipe"]).capped(spec.recipe.epochs)})
        return spec

    def tune_dirname(self, trial_id: str) -> str:
        """The trial's folder in Tune's experiment: short, unique, and naming what it trains."""
        seed = f",seed={self.seed}" if self.artifact_name and self.artifact_name != self.architecture else ""
        return f"{trial_id}_architecture={self.architecture}{seed}"
