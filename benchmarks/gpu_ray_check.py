"""The stages of the GPU call (issue 19 section 2), each run as its own process by benchmarks/gpu_ray_check.sh.

Every Ray stage goes through the project's fan-out: `tasks.tune.fanout.make_tuner` + `fit_or_explain` with the
project's trainer (`tasks.model.training.train_trial`) inside each trial, on a folder store, per-epoch checkpoints
and FailureConfig as in a run. The trainable is wrapped only to record what the trainer does not: the GPU id Ray
gave the trial, its peak device memory, and its start and end times.

    python benchmarks/gpu_ray_check.py prepare   # the dataset published once into WORK/store
    python benchmarks/gpu_ray_check.py five      # the five, seed protocol, packed (gpus_per_trial 0.2)
    python benchmarks/gpu_ray_check.py sixth     # resnet_bn, its 40-epoch recipe, SEEDS seeds packed
    python benchmarks/gpu_ray_check.py winners   # the five searched winners, SEEDS seeds each, packed
    python benchmarks/gpu_ray_check.py restart   # one trial's worker SIGKILLed after epoch KILL_AFTER; resumed
    python benchmarks/gpu_ray_check.py summary   # WORK/results/*.json -> OUT/gpu_ray_check.{json,md}

Environment: WORK (the stages' folder), OUT (results), DATA (the raw Fashion-MNIST folder), SMOKE=1 (tiny rows and
epochs, CPU: the check of this script in the simulated device venv), GPUS (GPUs Ray gets; the shell script counts
them), CPUS, and overrides TRAIN_ROWS, TEST_ROWS, MAX_EPOCHS, SEEDS, GPUS_PER_TRIAL.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FIVE = ("baseline", "mlp1", "mlp3_dropout", "cnn1_mlp", "cnn2")
SMOKE = os.environ.get("SMOKE", "0") == "1"
WORK = Path(os.environ.get("WORK", "/tmp/gpu-ray-check"))
RESULTS = WORK / "results"
TRIALS = WORK / "trials"  # one JSON per trial attempt, written by the wrapped trainable
WINNERS_FILE = REPO / "benchmarks" / "results" / "search_winners_recipes.json"
GOALS = {"five_packed_train_wall_s": 30.0, "s_per_epoch": 0.15, "sixth_test_accuracy_mean": 0.95}


def env_number(name: str, default, kind=int):
    value = os.environ.get(name, "")
    return kind(value) if value else default


def profile() -> dict:
    """Rows, epochs and seeds of each stage: the protocol's, or tiny ones for the smoke profile."""
    gpus = env_number("GPUS", 0, float)
    return {
        "train_rows": env_number("TRAIN_ROWS", 2000 if SMOKE else None),
        "test_rows": env_number("TEST_ROWS", 500 if SMOKE else None),
        "max_epochs": env_number("MAX_EPOCHS", 1 if SMOKE else 100),
        "seeds": env_number("SEEDS", 1 if SMOKE else 3),
        "gpus": gpus,
        "cpus": env_number("CPUS", os.cpu_count() or 1, float),
        "gpus_per_trial": env_number("GPUS_PER_TRIAL", 0.2 if gpus else 0.0, float),
        "restart_epochs": 3 if SMOKE else 6,
        "kill_after": env_number("KILL_AFTER", 1 if SMOKE else 2),
    }


# --- what each trial records beside the trainer ----------------------------------------------------------------

def peak_device_bytes() -> int | None:
    """The trial's peak device memory (JAX's allocator on a GPU; TensorFlow's); None on a CPU."""
    try:
        if os.environ.get("KERAS_BACKEND") == "jax":
            import jax

            device = jax.local_devices()[0]
            return None if device.platform == "cpu" else (device.memory_stats() or {}).get("peak_bytes_in_use")
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] if gpus else None
    except Exception:  # noqa: BLE001  (a measurement, never the trial's failure)
        return None


def instrumented_trial(config: dict, arrays=None) -> None:
    """The project's trainable, with the trial's placement, peak memory and times written to TRIALS."""
    import ray

    from tasks.model.spec import TrialSpec
    from tasks.model.training import train_trial

    spec = TrialSpec.from_tune(config)
    record = {"label": spec.label, "architecture": spec.architecture, "seed": spec.seed, "pid": os.getpid(),
              "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"), "started": time.time()}
    folder = Path(os.environ["GPU_CHECK_TRIALS"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{os.environ.get('GPU_CHECK_STAGE', 'stage')}-{spec.label.replace('/', '_')}-{os.getpid()}.json"
    path.write_text(json.dumps(record))  # written again at the end; an attempt killed leaves this one
    kill_after = int(os.environ.get("GPU_CHECK_KILL_AFTER") or 0)
    if kill_after:
        from ray import tune

        if tune.get_checkpoint() is None:  # the first attempt only: dies after reporting epoch `kill_after`
            report = tune.report

            def report_then_die(metrics, *args, **kwargs):
                report(metrics, *args, **kwargs)
                if metrics.get("epoch") == kill_after and not metrics.get("finished"):
                    os.kill(os.getpid(), signal.SIGKILL)

            tune.report = report_then_die
    try:
        train_trial(config, arrays)
        record["ok"] = True
    finally:
        record.update(ended=time.time(), peak_device_bytes=peak_device_bytes())
        path.write_text(json.dumps(record))


# --- the stages ------------------------------------------------------------------------------------------------

def start_ray(p: dict) -> None:
    """A local Ray of its own (never one found on the machine), with the driver's backend for the trials."""
    import ray

    from tasks.tune.cluster import worker_env

    stage = os.environ.get("GPU_CHECK_STAGE", "")
    env = {**worker_env(), "GPU_CHECK_TRIALS": str(TRIALS), "GPU_CHECK_STAGE": stage,
           "GPU_CHECK_KILL_AFTER": str(p["kill_after"]) if stage == "restart" else ""}
    ray.init(address="local", num_cpus=p["cpus"], num_gpus=p["gpus"], include_dashboard=False, log_to_driver=False,
             configure_logging=False, runtime_env={"env_vars": env})


def dataset():
    from tasks.data.store import open_store

    store = open_store(str(WORK / "store"))
    return store, json.loads((WORK / "dataset.json").read_text())["version"]


def new_run(stage: str, p: dict, **fields):
    from tasks.config import PipelineConfig
    from tasks.runs.run import Run

    store, version = dataset()
    config = PipelineConfig(**{"store": store.uri, "train_rows": p["train_rows"], "test_rows": p["test_rows"],
                               "max_epochs": p["max_epochs"], "gpus_per_trial": p["gpus_per_trial"], **fields})
    return Run.on_published_dataset(config, store, f"{stage}-{uuid.uuid4().hex[:6]}", version)


def fan_out(run, name: str, specs: list) -> dict:
    """The specs as one Tune experiment through the project's make_tuner + fit_or_explain; what each trial did."""
    from tasks.model.training import load_dataset_arrays
    from tasks.tune.fanout import Experiment, fit_or_explain, make_tuner

    config = run.config
    arrays = load_dataset_arrays(run.store, run.dataset_version, config.train_rows, config.test_rows, run.manifest)
    tuner = make_tuner(run, Experiment(name, specs, arrays, trainable=instrumented_trial),
                       progress=lambda line: print(f"  {line}", flush=True))
    started = time.time()
    results = fit_or_explain(tuner, run, tolerate_failures=True)
    fit_s = time.time() - started
    trials = []
    for spec in specs:
        key = run.paths.metrics(spec.folder)
        metrics = json.loads(run.store.get_bytes(key)) if run.store.exists(key) else {}
        attempts = sorted((json.loads(f.read_text()) for f in TRIALS.glob(
            f"{os.environ.get('GPU_CHECK_STAGE', 'stage')}-{spec.label.replace('/', '_')}-*.json")),
            key=lambda r: r["started"])
        trials.append({"label": spec.label, "architecture": spec.architecture, "seed": spec.seed,
                       "epochs": metrics.get("epochs"), "test_accuracy": metrics.get("test_accuracy"),
                       "seconds_per_epoch": metrics.get("seconds_per_epoch"),
                       "train_seconds": metrics.get("train_seconds"),
                       "resumed_from_epoch": metrics.get("resumed_from_epoch"), "backend": metrics.get("backend"),
                       "attempts": len(attempts), "gpu_ids": [a["gpu_ids"] for a in attempts],
                       "peak_device_bytes": max((a.get("peak_device_bytes") or 0 for a in attempts), default=0) or None,
                       "started": attempts[0]["started"] if attempts else None,
                       "ended": attempts[-1].get("ended") if attempts else None})
    starts = [t["started"] for t in trials if t["started"]]
    ends = [t["ended"] for t in trials if t["ended"]]
    return {"trials": trials, "tuner_fit_s": round(fit_s, 1),
            "failed": [r.error.__class__.__name__ for r in results if r.error],
            "first_start_to_last_end_s": round(max(ends) - min(starts), 1) if starts and ends else None}


def stage_prepare(p: dict) -> dict:
    from tasks.data.dataset import fetch_dataset
    from tasks.data.shards import publish_dataset
    from tasks.data.store import open_store

    version = publish_dataset(fetch_dataset(os.environ["DATA"]), open_store(str(WORK / "store"))).version
    (WORK / "dataset.json").write_text(json.dumps({"version": version}))
    return {"version": version}


def stage_five(p: dict) -> dict:
    from tasks.model.recipes import recipe_for
    from tasks.tune.fanout import trial_spec

    run = new_run("five", p, architectures=list(FIVE), cpus_per_trial=max(1.0, p["cpus"] // 5) if not SMOKE else 0.38)
    specs = [trial_spec(run, "tune", arch, recipe_for(run.config.model_dump(), arch)) for arch in FIVE]
    return fan_out(run, "tune", specs)


def share(trials: int) -> float:
    """One GPU split among `trials`, rounded down so that all of them fit at once (Ray counts in 1/10,000)."""
    return min(1.0, math.floor(10_000 / trials) / 10_000)


def seeded_specs(run, recipes: dict[str, dict], seeds: list[int], cap_epochs: int | None) -> list:
    from tasks.keys import RunPaths
    from tasks.model.recipes import parse_recipe
    from tasks.tune.fanout import trial_spec

    specs = []
    for arch, values in recipes.items():
        recipe = parse_recipe(values, f"the recipe of {arch}")
        if cap_epochs is not None:
            recipe = recipe.capped(cap_epochs)
        specs += [trial_spec(run, "seeds", arch, recipe, seed=seed, artifact_name=RunPaths.seed_folder(arch, seed),
                             recipe_name="search") for seed in seeds]
    return specs


def seed_means(trials: list[dict]) -> dict:
    by_arch: dict[str, list[float]] = {}
    for t in trials:
        if t["test_accuracy"] is not None:
            by_arch.setdefault(t["architecture"], []).append(t["test_accuracy"])
    return {arch: round(sum(v) / len(v), 4) for arch, v in by_arch.items()}


def stage_sixth(p: dict) -> dict:
    recipes = {"resnet_bn": json.loads(WINNERS_FILE.read_text())["resnet_bn"]}
    seeds = list(range(1, p["seeds"] + 1))
    run = new_run("sixth", p, architectures=["resnet_bn"], cpus_per_trial=max(1.0, p["cpus"] // 4) if not SMOKE else 0.5,
                  gpus_per_trial=share(len(seeds)) if p["gpus"] else 0.0)
    result = fan_out(run, "seeds", seeded_specs(run, recipes, seeds, 1 if SMOKE else None))
    result["test_accuracy_mean"] = seed_means(result["trials"]).get("resnet_bn")
    return result


def stage_winners(p: dict) -> dict:
    recipes = {arch: values for arch, values in json.loads(WINNERS_FILE.read_text()).items() if arch in FIVE}
    seeds = list(range(1, p["seeds"] + 1))
    count = len(recipes) * len(seeds)
    run = new_run("winners", p, architectures=list(recipes), cpus_per_trial=max(1.0, p["cpus"] // count) if not SMOKE
                  else 1.9 / count, gpus_per_trial=share(count) if p["gpus"] else 0.0)
    result = fan_out(run, "seeds", seeded_specs(run, recipes, seeds, 1 if SMOKE else None))
    result["test_accuracy_mean"] = seed_means(result["trials"])
    return result


def stage_restart(p: dict) -> dict:
    """mlp1 alone for a few epochs; its first attempt's process SIGKILLs itself right after reporting epoch
    KILL_AFTER with its checkpoint (instrumented_trial, GPU_CHECK_KILL_AFTER). Tune restarts it (max_failures) from
    that checkpoint on the GPU: resumed_from_epoch says where it came back, attempts how often it started."""
    from tasks.model.recipes import recipe_for
    from tasks.tune.fanout import trial_spec

    run = new_run("restart", {**p, "max_epochs": p["restart_epochs"]}, architectures=["mlp1"],
                  patience=p["restart_epochs"], max_failures=2, cpus_per_trial=1.0)
    result = fan_out(run, "tune", [trial_spec(run, "tune", "mlp1", recipe_for(run.config.model_dump(), "mlp1"))])
    trial = result["trials"][0]
    result["killed_after_epoch"] = p["kill_after"]
    result["restarted_from_checkpoint"] = (trial["attempts"] == 2 and trial["resumed_from_epoch"] == p["kill_after"]
                                           and trial["epochs"] == p["restart_epochs"])
    return result


# --- the summary -------------------------------------------------------------------------------------------------

def stage_summary(p: dict) -> dict:
    order = ["unpack", "prepare", "five", "sixth", "restart", "winners", "plain"]
    results = {f.stem: json.loads(f.read_text())
               for f in sorted(RESULTS.glob("*.json"), key=lambda f: (order + [f.stem]).index(f.stem))}
    out = Path(os.environ.get("OUT") or WORK)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_ray_check.json").write_text(json.dumps(results, indent=1))
    lines = [f"# gpu_ray_check {'(SMOKE profile)' if SMOKE else ''}", "",
             f"Card: {os.environ.get('GPU_NAME', 'none')}; KERAS_BACKEND={os.environ.get('KERAS_BACKEND')}; "
             f"profile {json.dumps(p)}", "",
             "| stage | ok | wall s | first start to last end s | notes |", "|---|---|---:|---:|---|"]
    for stage, r in results.items():
        notes = ""
        if "test_accuracy_mean" in r:
            notes = f"test accuracy mean {r['test_accuracy_mean']}"
        if "restarted_from_checkpoint" in r:
            notes = (f"SIGKILLed after epoch {r['killed_after_epoch']}, restarted from that checkpoint: "
                     f"{r['restarted_from_checkpoint']}")
        if "total_seconds" in r:
            notes = f"plain sequential Keras total {r['total_seconds']} s"
        lines.append(f"| {stage} | {r.get('ok')} | {r.get('wall_s')} | {r.get('first_start_to_last_end_s', '')} | "
                     f"{notes} |")
    five, sixth = results.get("five", {}), results.get("sixth", {})
    five_spe = [t["seconds_per_epoch"] for t in five.get("trials", []) if t.get("seconds_per_epoch") is not None]
    checks = [("the five packed, first trial's start to last one's end, s (at most)", five.get("first_start_to_last_end_s"),
               GOALS["five_packed_train_wall_s"]),
              ("the slowest of the five, median s/epoch (at most)", round(max(five_spe), 3) if len(five_spe) == 5 else None,
               GOALS["s_per_epoch"])]
    lines += ["", "| goal | measured | goal | met |", "|---|---:|---:|---|"]
    lines += [f"| {name} | {value} | {goal} | {'—' if value is None else ('yes' if value <= goal else 'no')} |"
              for name, value, goal in checks]
    mean = sixth.get("test_accuracy_mean")
    lines.append(f"| resnet_bn test accuracy, seed mean (at least) | {mean} | {GOALS['sixth_test_accuracy_mean']} | "
                 f"{'—' if mean is None else ('yes' if mean >= GOALS['sixth_test_accuracy_mean'] else 'no')} |")
    for stage, r in results.items():
        if r.get("trials"):
            lines += ["", f"## {stage}", "", "| trial | GPU ids | peak device MiB | s/epoch | epochs | test acc | attempts |",
                      "|---|---|---:|---:|---:|---:|---:|"]
            for t in r["trials"]:
                peak = f"{t['peak_device_bytes'] / 2**20:.0f}" if t.get("peak_device_bytes") else ""
                spe = f"{t['seconds_per_epoch']:.3f}" if t.get("seconds_per_epoch") is not None else ""
                lines.append(f"| {t['label']} | {t['gpu_ids']} | {peak} | {spe} | {t['epochs']} | "
                             f"{t['test_accuracy']} | {t['attempts']} |")
    (out / "gpu_ray_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return {}


STAGES = {"prepare": stage_prepare, "five": stage_five, "sixth": stage_sixth, "winners": stage_winners,
          "restart": stage_restart, "summary": stage_summary}


def main() -> None:
    stage = sys.argv[1]
    os.environ["GPU_CHECK_STAGE"] = stage
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    p = profile()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if stage == "summary":
        stage_summary(p)
        return
    started = time.time()
    result: dict = {"ok": False}
    try:
        if stage != "prepare":
            start_ray(p)
            result["ray_init_s"] = round(time.time() - started, 1)  # Ray's start-up, apart from the trials
        result = {**result, **STAGES[stage](p), "ok": True}
    finally:
        result["wall_s"] = round(time.time() - started, 1)
        (RESULTS / f"{stage}.json").write_text(json.dumps(result))
        print(f"{stage}: {json.dumps({k: v for k, v in result.items() if k != 'trials'})}", flush=True)
    if stage in ("five", "sixth", "winners", "restart"):
        import ray

        ray.shutdown()
    if result.get("failed"):
        sys.exit(1)


if __name__ == "__main__":
    main()
