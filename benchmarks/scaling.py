"""How the wall time of N Tune trials grows on M GPU slots: the project's fan-out on a multi-node Ray cluster.

A `ray.cluster_utils.Cluster` on this machine: a head without CPUs or GPUs (like cluster.yaml's head, which trains
nothing) and M worker nodes with ONE logical GPU each (no real GPU is needed: Ray only counts them). One GPU per
node rather than one node with M GPUs, because the question is the nightly cluster's (several nodes): every trial
is then placed by the head's scheduler on another node's raylet, which starts its worker process there, the path a
multi-node run takes. The cluster grows 1 -> 2 -> 4 workers between the measurements (nodes are added, never
restarted), so its start-up is paid once.

The trials go through the project's own `tasks.tune.fanout.make_tuner(config, store, run_id, version, trainable=probe)`
with `PipelineConfig(store=<tmp dir>, gpus_per_trial=1.0, cpus_per_trial=0.01)`: one GPU slot per trial, so M
slots run M trials at once. The probe sleeps T seconds and reports once. make_tuner grid-searches over
`config.architectures` (the five names, each at most once), so it makes 5 trials; N = 10 and 20 are the same
grid repeated N/5 times through Tune's `num_samples`, set on the tuner make_tuner returns (`tasks/` untouched:
run config, storage, failure config, resources, param space and callbacks all stay the project's; only the repeat
count differs). Ray 2.60 reads `num_samples` when `fit()` starts; the script checks the trial count it gets.

Ideal wall = ceil(N/M) x T ("waves" of M trials). Fitted: wall = a + b x waves, so a is the fixed cost of one
Tuner.fit() (experiment set-up, state saved at the end) and b - T the overhead per wave (placement group, actor
and worker-process start, result processing). The per-wave overhead then predicts a nightly run on 16 GPU slots.

    .venv/bin/python benchmarks/scaling.py [--sleep 1.0] [--trials 5,10,20] [--slots 1,2,4]

T is 1 s by default: the 9 runs are 63 waves in all, and each wave costs T plus about 2 s of overhead on a
loaded 2-core machine, so a longer T would push the whole benchmark past about 3 minutes without changing the
fitted overhead. The cluster keeps its files under a private temporary directory
(RAY_TMPDIR), so no other `ray.init()` on this machine can find and join it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import machine, write_result  # noqa: E402

# The seed protocol's epochs per model (design section 9: what early stopping ended at on the full run) and the
# H100 seconds per epoch measured there (Keras 3.15 on JAX, batch 128, one model per process).
SEED_EPOCHS = {"baseline": 35, "mlp1": 31, "mlp3_dropout": 46, "cnn1_mlp": 28, "cnn2": 42}
H100_SECONDS_PER_EPOCH = (0.5, 0.9)
NIGHTLY_SLOTS = 16  # 4 nodes x 4 GPUs


def make_probe(sleep_s: float):
    """A stand-in for tasks.model.training.train_trial: sleeps `sleep_s` and reports once, with its start and end."""

    def probe(config: dict) -> None:
        import time as _time

        import ray
        from ray import tune

        started = _time.time()
        _time.sleep(sleep_s)
        tune.report({
            "architecture": config["spec"]["architecture"], "started": started, "ended": _time.time(),
            "node_id": ray.get_runtime_context().get_node_id(),
            # what tasks.tune.fanout's progress callback reads from a finished trial's report
            "finished": True, "epoch": 0, "test_accuracy": 0.0,
        })

    return probe


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (how many trials really ran at the same time)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def slot_turnover(intervals: list[tuple[float, float]], slots: int) -> float:
    """Median gap between a probe's start and the latest end before it, for the probes that waited for a slot."""
    gaps = []
    for start, _ in intervals[slots:]:
        ends = [e for _, e in intervals if e <= start]
        if ends:
            gaps.append(start - max(ends))
    return statistics.median(gaps) if gaps else float("nan")


def run_once(store_root: str, n_trials: int, slots: int, sleep_s: float) -> dict:
    from tasks.config import ALL_ARCHITECTURES, PipelineConfig
    from tasks.data.shards import PrepareResult
    from tasks.model.recipes import recipe_for
    from tasks.runs.run import Run
    from tasks.tune.fanout import Experiment, make_tuner, trial_spec
    from tasks.data.store import open_store

    per_grid = len(ALL_ARCHITECTURES)
    if n_trials % per_grid:
        raise SystemExit(f"--trials: {n_trials} is not a multiple of {per_grid} (the architectures grid)")
    config = PipelineConfig(store=store_root, gpus_per_trial=1.0, cpus_per_trial=0.01, max_failures=0)
    run_id = f"scale-m{slots}-n{n_trials}"
    run = Run.unclaimed(config, open_store(store_root), run_id, PrepareResult("none", False, {}))
    specs = [trial_spec(run, "tune", arch, recipe_for(config.model_dump(), arch)) for arch in config.architectures]
    # The architectures grid repeated n_trials / 5 times through Tune's num_samples.
    tuner = make_tuner(run, Experiment("tune", specs, tune_config=None, trainable=make_probe(sleep_s)))
    local = tuner._local_tuner  # Ray 2.60: the TunerInternal that fit() runs; its TuneConfig is read at fit()
    local._tune_config = dataclasses.replace(local._tune_config, num_samples=n_trials // per_grid)

    called_at = time.time()
    started = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - started
    returned_at = called_at + wall

    errors = [r.error for r in results if r.error]
    if errors or len(results) != n_trials:
        raise SystemExit(f"{run_id}: expected {n_trials} finished trials, got {len(results)} with errors {errors}")
    rows = [r.metrics for r in results]
    intervals = sorted((r["started"], r["ended"]) for r in rows)
    return {
        "n": n_trials, "m": slots, "waves": math.ceil(n_trials / slots), "wall": wall,
        "concurrent": max_overlap(intervals),
        "nodes": len({r["node_id"] for r in rows}),
        # read from the probes' own clocks: fit() call -> first probe running, last probe done -> fit() returned,
        # and the median time a slot stood empty between one probe's end and the next probe's start on it
        "to_first": intervals[0][0] - called_at,
        "after_last": returned_at - max(e for _, e in intervals),
        "turnover": slot_turnover(intervals, slots),
        # how much later than the first the last probe of the first wave started (a wave's launch stagger)
        "spread": intervals[min(slots, n_trials) - 1][0] - intervals[0][0],
    }


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares wall = a + b * waves."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    b = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    return mean_y - b * mean_x, b


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds each probe trial sleeps (T)")
    parser.add_argument("--trials", default="5,10,20", help="N values, multiples of 5")
    parser.add_argument("--slots", default="1,2,4", help="M values: worker nodes with one logical GPU each")
    parser.add_argument("--output", default="scaling.md")
    args = parser.parse_args()
    trial_counts = [int(v) for v in args.trials.split(",")]
    slot_counts = sorted(int(v) for v in args.slots.split(","))

    # Before Ray is imported: the cluster's sessions and its address file go to a private folder, never to
    # /tmp/ray/ray_current_cluster where another `ray.init()` on this machine would find and join it.
    private_tmp = tempfile.mkdtemp(prefix="rsb-", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    os.environ["RAY_TMPDIR"] = private_tmp
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray
    from ray.cluster_utils import Cluster

    from tasks.tune.cluster import connect_ray

    store_root = tempfile.mkdtemp(prefix="scaling-store-")
    load_before = os.getloadavg()
    begun = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0, "include_dashboard": False})
    rows: list[dict] = []
    try:
        connect_ray(cluster.address)  # the project's own connect (its runtime_env, no dashboard, quiet)
        workers = 0
        for slots in slot_counts:
            while workers < slots:
                cluster.add_node(num_cpus=1, num_gpus=1)
                workers += 1
            cluster.wait_for_nodes()
            gpus = ray.cluster_resources().get("GPU", 0)
            if gpus != slots:
                raise SystemExit(f"cluster reports {gpus} GPUs, expected {slots}")
            for n_trials in trial_counts:
                row = run_once(store_root, n_trials, slots, args.sleep)
                rows.append(row)
                print(f"M={slots} N={n_trials}: {row['wall']:.2f} s (ideal {row['waves'] * args.sleep:.1f} s), "
                      f"at most {row['concurrent']} at once, on {row['nodes']} node(s)", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    total = time.perf_counter() - begun
    load_after = os.getloadavg()

    a, b = fit_line([(r["waves"], r["wall"]) for r in rows])
    per_wave = b - args.sleep
    # The same fit for each M alone: on this 2-core machine M trials starting together contend for the cores, so
    # the overhead per wave grows with M; the widest wave's figure is the conservative one for a five-wide wave.
    per_m = {m: fit_line([(r["waves"], r["wall"]) for r in rows if r["m"] == m]) for m in slot_counts
             if len({r["waves"] for r in rows if r["m"] == m}) >= 2}
    worst_per_wave = max([per_wave] + [bm - args.sleep for _, bm in per_m.values()])
    lo = {k: e * H100_SECONDS_PER_EPOCH[0] for k, e in SEED_EPOCHS.items()}
    hi = {k: e * H100_SECONDS_PER_EPOCH[1] for k, e in SEED_EPOCHS.items()}
    longest_lo, longest_hi = max(lo.values()), max(hi.values())
    longest_model = max(SEED_EPOCHS, key=SEED_EPOCHS.get)
    nightly_waves = math.ceil(len(SEED_EPOCHS) / NIGHTLY_SLOTS)
    predicted = (a + nightly_waves * per_wave + longest_lo, a + nightly_waves * per_wave + longest_hi)
    predicted_worst = a + nightly_waves * worst_per_wave + longest_hi
    all_epochs = sum(SEED_EPOCHS.values())

    lines = [
        "# Scaling: N trials on M GPU slots through the project's fan-out",
        "",
        f"Machine: {machine()}",
        f"Load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after: other jobs shared the 2 cores.",
        "",
        "`ray.cluster_utils.Cluster` on this machine: a head with 0 CPUs / 0 GPUs, M worker nodes with 1 CPU and "
        "1 logical GPU each (one GPU per node, so every trial is placed across nodes, as on the nightly cluster). "
        f"Trials: `tasks.tune.fanout.make_tuner(..., trainable=probe)` with `gpus_per_trial=1.0, cpus_per_trial=0.01`, "
        f"the probe sleeping T = {args.sleep} s and reporting once; N = 10 and 20 repeat the five-architecture grid "
        "through Tune's `num_samples`. Wall = `Tuner.fit()` from call to return. Ideal = ceil(N/M) x T. "
        f"Whole benchmark: {total:.0f} s.",
        "",
        "| N trials | M GPU slots | waves ceil(N/M) | ideal s | measured s | overhead ratio measured/ideal "
        "| fitted s | most at once | call to 1st probe s | 1st wave start spread s | slot turnover s "
        "| last probe to return s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ideal = r["waves"] * args.sleep
        lines.append(f"| {r['n']} | {r['m']} | {r['waves']} | {ideal:.1f} | {r['wall']:.2f} | {r['wall'] / ideal:.2f} "
                     f"| {a + b * r['waves']:.2f} | {r['concurrent']} | {r['to_first']:.2f} | {r['spread']:.2f} "
                     f"| {r['turnover']:.2f} "
                     f"| {r['after_last']:.2f} |")
    lines += [
        "",
        f"Least-squares fit over the {len(rows)} runs: wall = {a:.2f} s + {b:.2f} s x waves, i.e. a fixed "
        f"{a:.2f} s per `Tuner.fit()` and {per_wave:.2f} s of overhead per wave on top of T (trial actor and "
        "worker-process start, placement, result handling, on this loaded 2-core machine). "
        "'Most at once' is the largest number of probes whose sleep overlapped: it never exceeds M, so the GPU "
        "slots gate the trials as intended. The last four columns come from the probes' own clocks: the time "
        "from `fit()` to the first probe running, how much later the last probe of the first wave started than "
        "the first, the median time a slot stood empty between one probe's end and the next one's start (the "
        "per-wave overhead seen directly), and from the last probe's end to `fit()` returning.",
        "",
        "The same fit for each M alone: "
        + "; ".join(f"M={m}: {am:.2f} s + {bm:.2f} s x waves ({bm - args.sleep:.2f} s per wave over T)"
                    for m, (am, bm) in per_m.items())
        + ". On these 2 shared cores the overhead per wave grows with M (M trial processes start at the same "
        "time on the same cores), so one line fits the 9 runs only roughly; on a real cluster each node starts "
        "its own trial on its own cores.",
        "",
        "## What it predicts for the nightly run (4 nodes x 4 GPUs = 16 slots)",
        "",
        f"The seed protocol is five trials at `gpus_per_trial=1`: {len(SEED_EPOCHS)} <= {NIGHTLY_SLOTS} slots, "
        f"so they run as one wave and 11 of the 16 GPUs stay idle. With the H100 figures of design section 9 "
        f"({H100_SECONDS_PER_EPOCH[0]}-{H100_SECONDS_PER_EPOCH[1]} s/epoch per model) and the seed epochs "
        + ", ".join(f"{k} {e}" for k, e in SEED_EPOCHS.items())
        + ", the trials take "
        + ", ".join(f"{k} {lo[k]:.0f}-{hi[k]:.0f} s" for k in SEED_EPOCHS)
        + ".",
        "",
        f"Predicted wall of the Tune part = fixed {a:.1f} s + one wave's overhead {per_wave:.1f} s + the longest "
        f"single trial {longest_lo:.0f}-{longest_hi:.0f} s ({longest_model}, {SEED_EPOCHS[longest_model]} epochs) "
        f"= **about {predicted[0]:.0f}-{predicted[1]:.0f} s**; with the largest per-wave overhead measured "
        f"above ({worst_per_wave:.1f} s) instead, at most about {predicted_worst:.0f} s.",
        "",
        f"**The prediction is dominated by the longest single trial**: the scheduling overhead measured here is "
        f"{a + per_wave:.1f}-{a + worst_per_wave:.1f} s in all, and more GPUs cannot shorten a run whose five "
        f"trials already all run at once; 5 slots give the same wall as 16. The whole cluster's work is {all_epochs} epochs "
        f"({all_epochs * H100_SECONDS_PER_EPOCH[0]:.0f}-{all_epochs * H100_SECONDS_PER_EPOCH[1]:.0f} GPU-seconds), "
        "so the only way to go faster is a shorter longest trial (faster epochs), not more slots.",
        "",
        "Not in this prediction (not measurable here): the trainer's own start (importing the backend, "
        "compiling), the per-epoch report and checkpoint upload to the object store, reading the dataset, and "
        "above all the autoscaler starting the GPU nodes for the nightly run (cluster.yaml stops them 5 minutes "
        "after the last trial, so every nightly run starts them again: minutes, not seconds). The overhead "
        "measured here is on one 2-core machine shared with other jobs; on real nodes with their own cores it "
        "should be lower, so it is an upper estimate of Tune's share.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    print("written to", write_result(args.output, text))


if __name__ == "__main__":
    main()
