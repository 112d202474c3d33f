"""Integration: `fmnist search` end to end on local Ray against SeaweedFS, with a real Prefect server.

A quick search (6 recipes on each of two architectures, up to 4 epochs, ASHA with rungs at epochs 1 and 2)
leaves the leaderboard with every trial, stops some trials early, retrains the winners with two seeds and tests
them once; the test rows are read only after the leaderboard is published. Then `--recipe best` trains with what
the search stored, and `--time-budget` ends a search that could not finish cleanly with what it has.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import optuna
import pytest

import flows.steps
import tasks.tune.fanout
import tasks.tune.search
from flows.cli import main
from tasks.model.artifacts import load_run_model
from tasks.data.shards import load_split
from tasks.data.store import open_store
from tasks.model.training import to_model_input

pytestmark = pytest.mark.slow
LEADERBOARD_FIELDS = {"architecture", "trial_id", "config", "epochs", "val_accuracy", "best_val_accuracy",
                      "stopped_early", "ended", "new"}
RECIPE_FIELDS = {"learning_rate", "batch_size", "optimizer", "weight_decay", "schedule", "label_smoothing",
                 "augmentation", "dropout", "epochs"}


@pytest.fixture(scope="module")
def quick_search(prefect_api, s3_server, ray_local):
    """The search, run in this process so that the driver's reads can be recorded in order."""
    events: list[tuple[str, str]] = []

    def recorded(name: str, original, describe):
        def wrapper(*args, **kwargs):
            events.append((name, describe(*args, **kwargs)))
            return original(*args, **kwargs)
        return wrapper

    store_uri = f"s3://{s3_server.bucket}/search-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tasks.tune.search, "load_split", recorded("read", tasks.tune.search.load_split,
                                                          lambda store, version, split, *a, **k: split))
        patch.setattr(tasks.tune.search, "load_dataset_arrays", recorded("read", tasks.tune.search.load_dataset_arrays,
                                                                   lambda *a, **k: "train+test"))
        patch.setattr(flows.steps, "publish_leaderboard", recorded("leaderboard", flows.steps.publish_leaderboard,
                                                                    lambda *a, **k: ""))
        code = main(["search", "--preset", "quick", "--architectures", "baseline,mlp1", "--num-samples", "6",
                     "--max-epochs", "4", "--grace-period", "1", "--reduction-factor", "2", "--seeds", "2",
                     "--store", store_uri, "--s3-endpoint", s3_server.endpoint, "--run-id", "search-e2e"])
    assert code == 0
    store = open_store(store_uri, s3_server.endpoint)
    return store, events, json.loads(store.get_bytes("runs/search-e2e/search/leaderboard.json"))


def test_the_leaderboard_lists_every_trial_and_asha_stopped_some(quick_search):
    store, _, rows = quick_search
    assert len(rows) == 12 and all(set(row) == LEADERBOARD_FIELDS for row in rows)
    assert sorted({row["architecture"] for row in rows}) == ["baseline", "mlp1"]
    assert all(set(row["config"]) == RECIPE_FIELDS and 1 <= row["epochs"] <= 4 for row in rows)
    assert all(row["config"]["epochs"] == 4 and row["new"] for row in rows)  # under ASHA the budget is max_t
    assert len({row["trial_id"] for row in rows}) == 12
    stopped = [row for row in rows if row["stopped_early"]]
    assert stopped and all(row["ended"] == "stopped by ASHA" and row["epochs"] < row["config"]["epochs"] for row in stopped)
    markdown = store.get_bytes("runs/search-e2e/search/leaderboard.md").decode()
    assert markdown.count("| baseline |") == 6 and "stopped by ASHA" in markdown


def test_winners_are_chosen_on_validation_retrained_with_seeds_and_loadable(quick_search, tmp_path):
    store, _, rows = quick_search
    for arch in ("baseline", "mlp1"):
        finished = [row for row in rows if row["architecture"] == arch and row["ended"] == "finished"]
        winner = max(finished, key=lambda row: row["val_accuracy"])  # the final epoch's, of a whole budget
        metrics = json.loads(store.get_bytes(f"runs/search-e2e/{arch}/metrics.json"))
        assert metrics["recipe"] == winner["config"] and metrics["recipe_name"] == "search"
        assert [s["seed"] for s in metrics["seeds"]] == [1, 2]  # not the search's seed 0
        assert metrics["chosen_seed"] == max(metrics["seeds"], key=lambda s: s["final_val_accuracy"])["seed"]
        assert metrics["val_accuracy_mean"] == pytest.approx(sum(s["final_val_accuracy"] for s in metrics["seeds"]) / 2)
        tests = [s["test_accuracy"] for s in metrics["seeds"]]
        assert metrics["test_accuracy_mean"] == pytest.approx(sum(tests) / 2)
        for name in ("model.keras", "history.csv", "curves.png", "confusion.png"):
            assert store.get_bytes(f"runs/search-e2e/{arch}/{name}") == store.get_bytes(
                f"runs/search-e2e/{arch}/seed-{metrics['chosen_seed']}/{name}")
        model = load_run_model(store, "search-e2e", arch)  # safe_mode, sha256 checked against metrics.json
        images, labels, _ = load_split(store, metrics["dataset_version"], "test", metrics["rows"]["test"])
        predicted = model.predict(to_model_input(images, model.input_shape[1:]), verbose=0).argmax(1)
        assert float((predicted == labels).mean()) == metrics["test_accuracy"]


def test_the_test_rows_are_read_only_after_the_winners_are_chosen(quick_search):
    _, events, _ = quick_search
    published = events.index(("leaderboard", ""))
    reads_before = [what for name, what in events[:published] if name == "read"]
    assert reads_before == ["train"]  # the search's trials got the training rows, nothing else
    assert ("read", "train+test") in events[published:]  # the retrain reads the test rows, after selection


def test_table1_summary_recipes_and_the_prefect_artifacts(quick_search, prefect_api):
    store, _, rows = quick_search
    summary = json.loads(store.get_bytes("runs/search-e2e/summary.json"))
    assert [row["key"] for row in summary["table1"]] == ["baseline", "mlp1"] and summary["trials"] == 12
    assert summary["table1"][0]["report_test_acc"] == 84.60 and summary["table1"][0]["seeds"] == 2
    assert "± " in store.get_bytes("runs/search-e2e/summary.md").decode()
    assert json.loads(store.get_bytes("runs/search-e2e/run.json"))["status"] == "completed"
    for arch in ("baseline", "mlp1"):  # the quick preset's rows: kept as the quick preset's best recipes
        stored = json.loads(store.get_bytes(f"recipes/quick/{arch}.json"))
        assert stored["run_id"] == "search-e2e" and stored["recipe"] == summary["metrics"][arch]["recipe"]
        assert stored["val_accuracy_of"] == "final epoch, retrain seeds disjoint from the search's"

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read(key: str):
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))

    # Other tests' searches share this Prefect server: find this one's artifacts by its flow run. Keyed per protocol,
    # as a run's are: quick with --max-epochs 4 is a custom protocol, never the quick searches' history.
    summary_artifact = next(a for a in asyncio.run(read("fmnist-search-summary-custom"))
                            if "Search search-e2e:" in a.data)
    assert not [a for a in asyncio.run(read("fmnist-search-summary-quick")) if "Search search-e2e:" in a.data]
    leaderboard = next(a for a in asyncio.run(read("fmnist-search-leaderboard-custom"))
                       if a.flow_run_id == summary_artifact.flow_run_id)
    assert sorted(row["Trial"] for row in json.loads(leaderboard.data)) == sorted(row["trial_id"] for row in rows)


def test_recipe_best_trains_with_the_stored_recipe(quick_search, s3_server):
    store, _, _ = quick_search
    assert main(["run", "--preset", "quick", "--recipe", "best", "--architectures", "mlp1", "--store",
                 store.uri, "--s3-endpoint", s3_server.endpoint, "--run-id", "best-e2e"]) == 0
    stored = json.loads(store.get_bytes("recipes/quick/mlp1.json"))["recipe"]
    metrics = json.loads(store.get_bytes("runs/best-e2e/mlp1/metrics.json"))
    assert metrics["recipe"] == {**stored, "epochs": min(stored["epochs"], 2)} and metrics["recipe_name"] == "best"
    assert json.loads(store.get_bytes("runs/best-e2e/config.json"))["recipes"] == {"mlp1": stored}


def test_the_time_budget_ends_the_search_cleanly_with_what_it_has(prefect_api, ray_local, tmp_path):
    store = tmp_path / "store"
    assert main(["search", "--preset", "quick", "--architectures", "baseline", "--num-samples", "500",
                 "--time-budget", "40s", "--seeds", "1", "--store", str(store), "--run-id", "budget"]) == 0
    rows = json.loads((store / "runs/budget/search/leaderboard.json").read_text())
    assert 0 < len(rows) < 500
    assert (store / "runs/budget/baseline/model.keras").is_file() and (store / "runs/budget/run.json").is_file()
    ended = {row["ended"] for row in rows}
    assert ended <= {"finished", "stopped by ASHA", "stopped by the time budget"}


def test_the_search_runs_from_the_prefect_ui_form(prefect_api, tmp_path, monkeypatch):
    """`fmnist deploy --flow search`'s deployment, run with what the UI's Custom run form sends: every field of the
    schema at its default, then the user's changes (quick, one model, 2 recipes, 1 seed)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.runner import Runner

    from flows.deploy import nightly_deployment
    from tasks.config import SearchConfig

    monkeypatch.setenv("PREFECT_API_URL", prefect_api)  # the runner starts the flow run in a subprocess
    name, store = f"search-{uuid.uuid4().hex[:6]}", tmp_path / "store"
    deployment = nightly_deployment(SearchConfig(store=str(store)), name=name, flow="search")
    changed = {"preset": "quick", "architectures": ["baseline"], "num_samples": 2, "seeds": 1}

    async def submit_form_and_serve_once():
        runner = Runner(name=name)
        deployment_id = await runner.aadd_deployment(deployment)
        async with get_client() as client:
            stored = await client.read_deployment(deployment_id)
            fields = stored.parameter_openapi_schema["definitions"]["SearchConfig"]["properties"]
            given = stored.parameters["config"]
            payload = {field: given.get(field, spec.get("default")) for field, spec in fields.items()} | changed
            flow_run = await client.create_flow_run_from_deployment(deployment_id, parameters={"config": payload})
        await runner.start(run_once=True)
        async with get_client() as client:
            finished = await client.read_flow_run(flow_run.id)
            artifacts = await client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
        return payload, finished, artifacts

    payload, finished, artifacts = asyncio.run(submit_form_and_serve_once())
    assert set(payload) == set(SearchConfig.model_fields) and payload["time_budget"] is None
    assert finished.state.is_completed(), finished.state
    (leaderboard,) = store.glob("runs/*/search/leaderboard.json")
    assert len(json.loads(leaderboard.read_text())) == 2
    assert {a.key for a in artifacts} == {"fmnist-search-leaderboard-quick", "fmnist-search-table1-quick",
                                          "fmnist-search-summary-quick"}  # the quick preset chosen in the form


# --- the quick preset as it is: ASHA prunes, Optuna is told so, and a second night starts from the first ------------

def optuna_study_of(experiment) -> tuple[dict[str, optuna.trial.FrozenTrial], list[optuna.trial.FrozenTrial]]:
    """The Optuna study as Tune saved it with the search's experiment (searcher-state-*.pkl): each Tune trial's
    Optuna trial, and every trial of the study (warm-start ones first)."""
    from tasks.tune.ray_compat import TruthfulOptunaSearch

    searcher = TruthfulOptunaSearch(sampler=None, finished_key="finished")
    searcher.restore_from_dir(str(experiment))
    trials = searcher._ot_study.get_trials(deepcopy=False)
    return {tid: trials[ot_trial.number] for tid, ot_trial in searcher._ot_trials.items()}, trials


@pytest.fixture(scope="module")
def two_nights(prefect_api, ray_local, tmp_path_factory):
    """Two quick searches of baseline in one store, as typed (the quick preset: 2 epochs, ASHA's rung at epoch 1),
    then a third with --no-warm-start."""
    store = tmp_path_factory.mktemp("nights") / "store"
    common = ["search", "--preset", "quick", "--architectures", "baseline", "--seeds", "1", "--store", str(store)]
    for night in ("night-1", "night-2"):
        assert main([*common, "--run-id", night]) == 0
    assert main([*common, "--run-id", "fresh", "--num-samples", "2", "--no-warm-start"]) == 0
    return store


def leaderboard_of(store, run_id: str) -> list[dict]:
    return json.loads((store / f"runs/{run_id}/search/leaderboard.json").read_text())


def test_the_quick_search_prunes_and_optuna_sees_the_cut_trials_as_pruned(two_nights):
    rows = leaderboard_of(two_nights, "night-1")
    cut = [row for row in rows if row["stopped_early"]]
    assert len(rows) == 6 and cut and all(row["epochs"] == 1 and row["config"]["epochs"] == 2 for row in cut)
    by_trial, trials = optuna_study_of(two_nights / "runs/night-1/search/baseline")
    assert len(trials) == 6
    for row in rows:
        told = by_trial[row["trial_id"]]
        if row["stopped_early"]:
            assert told.state == optuna.trial.TrialState.PRUNED and told.last_step == 1
        else:
            assert told.state == optuna.trial.TrialState.COMPLETE and told.value == pytest.approx(row["val_accuracy"])


def test_a_second_night_starts_from_the_first_and_the_leaderboard_says_which_trials_were_new(two_nights):
    first, second = leaderboard_of(two_nights, "night-1"), leaderboard_of(two_nights, "night-2")
    new, old = [row for row in second if row["new"]], [row for row in second if not row["new"]]
    assert len(new) == 6 and {row["run_id"] for row in old} == {"night-1"}
    assert sorted(row["trial_id"] for row in old) == sorted(row["trial_id"] for row in first)
    _, trials = optuna_study_of(two_nights / "runs/night-2/search/baseline")
    assert len(trials) == 12  # night 1's six, added before the first proposal, then six new ones
    assert [t.state for t in trials[:6]].count(optuna.trial.TrialState.PRUNED) == sum(r["stopped_early"] for r in first)
    proposals = [{k: v for k, v in row["config"].items()} for row in new]
    assert not any(p in [row["config"] for row in first] for p in proposals)  # it spent its samples on new recipes
    assert "from night-1" in (two_nights / "runs/night-2/search/leaderboard.md").read_text()
    fresh = leaderboard_of(two_nights, "fresh")
    assert len(fresh) == 2 and all(row["new"] for row in fresh)  # --no-warm-start: nothing carried over
