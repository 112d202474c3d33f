"""Every key the job writes in a store, spelled once, relative to the store's root.

    datasets/fashion-mnist/<version>/{manifest.json, <split>-NNNNN.parquet}   the Parquet shards
    runs/<run_id>/{config.json, run.json, summary.*, lease.json, tune/, <arch>/…}   one run
    runs/<run_id>/{search/<arch>/, search/<arch>.{rows,warm-start}.json, search/leaderboard.*, retrain/,
                   <arch>/seed-<n>/}                                           a search's own
    models/champion.json                                                       the champion pointer
    models/recent.json                                                         each slot's last 3 models (alerts)
    recipes/<preset>/<arch>.json                                               the best searched recipes
"""

from __future__ import annotations

from dataclasses import dataclass

DATASET_PREFIX = "datasets/fashion-mnist"
RUNS_PREFIX = "runs"
CHAMPION_KEY = "models/champion.json"
RECENT_KEY = "models/recent.json"
RECIPES_PREFIX = "recipes"


def version_prefix(version: str) -> str:
    """Where one dataset version's shards and manifest live."""
    return f"{DATASET_PREFIX}/{version}"


def recipe_key(preset: str, architecture: str) -> str:
    """The best recipe found so far for one architecture on one preset's rows."""
    return f"{RECIPES_PREFIX}/{preset}/{architecture}.json"


@dataclass(frozen=True)
class RunPaths:
    """Every key of one run."""

    run_id: str

    @property
    def root(self) -> str:
        return f"{RUNS_PREFIX}/{self.run_id}"

    @property
    def config(self) -> str:
        return f"{self.root}/config.json"  # written when the id is claimed: what a resume rebuilds the run from

    @property
    def record(self) -> str:
        return f"{self.root}/run.json"  # written last: its presence marks a finished run

    @property
    def summary_json(self) -> str:
        return f"{self.root}/summary.json"

    @property
    def summary_md(self) -> str:
        return f"{self.root}/summary.md"

    @property
    def samples(self) -> str:
        return f"{self.root}/samples.png"

    @property
    def lease(self) -> str:
        return f"{self.root}/lease.json"  # held while a process runs it (tasks/runs/lease.py)

    def experiment(self, name: str) -> str:
        """A Ray Tune experiment's folder: its saved state and the trials' checkpoints."""
        return f"{self.root}/{name}"

    @property
    def tune(self) -> str:
        return self.experiment("tune")

    @property
    def search(self) -> str:
        return f"{self.root}/search"  # a search's experiments (search/<arch>) and its leaderboard

    @property
    def leaderboard_json(self) -> str:
        return f"{self.search}/leaderboard.json"

    @property
    def leaderboard_md(self) -> str:
        return f"{self.search}/leaderboard.md"

    def searched_rows(self, architecture: str) -> str:
        """One architecture's leaderboard rows, written when its search ends: a resumed search skips it."""
        return f"{self.search}/{architecture}.rows.json"

    def warm_start_rows(self, architecture: str) -> str:
        """The earlier searches' trials one architecture's search began from: a resume keeps the same ones."""
        return f"{self.search}/{architecture}.warm-start.json"

    def model_prefix(self, architecture: str) -> str:
        return f"{self.root}/{architecture}"

    @staticmethod
    def seed_folder(architecture: str, seed: int) -> str:
        """Where one seed of a search's retrained winner is published, as a folder name under the run."""
        return f"{architecture}/seed-{seed}"

    def metrics(self, architecture: str) -> str:
        return f"{self.model_prefix(architecture)}/metrics.json"

    def model(self, architecture: str) -> str:
        return f"{self.model_prefix(architecture)}/model.keras"
