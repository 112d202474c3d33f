"""`fmnist predict`'s speed: inputs read and converted, then classified in 1,024-row batches, against the plain
alternative, `model.predict(array)` (Keras' default 32-row batches) on the same array already in memory.

Cases: 10,000 images from a .npy, from the IDX .gz (with its labels beside it), and 1,000 PNG files; for the
baseline (the smallest model) and cnn2 (the largest per image). Weights do not change the speed: the models are
built from tasks.model.architectures and saved/loaded as .keras through the project's safe loader, as predict does.
Also the whole command, `fmnist predict x.npy`, as a user runs it (Python + TensorFlow start-up included).

    PYTHONPATH=. .venv/bin/python benchmarks/predict.py      # about 2 minutes on 2 cores
"""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, median, write_result  # noqa: E402

TEST_IMAGES = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
TRIES = 3


def lscpu() -> str:
    """The lines of `lscpu` that say what the CPU is (the brief asks for its words)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "lscpu not available"
    wanted = ("Model name", "CPU(s)", "Thread(s) per core", "Hypervisor vendor")
    return "; ".join(" ".join(line.split()) for line in out.splitlines() if line.split(":")[0].strip() in wanted)


def timed(action) -> tuple[float, object]:
    runs = []
    result = None
    for _ in range(TRIES):
        started = time.perf_counter()
        result = action()
        runs.append(time.perf_counter() - started)
    return median(runs), result


def published(store, key: str):
    """A model saved as .keras into the store and loaded back through tasks.model.artifacts, as predict loads it."""
    from tasks.model.architectures import build_model
    from tasks.predict.classify import ModelRef, load_model
    from tasks.model.training import model_bytes

    blob = model_bytes(build_model(key))
    store.put_bytes(f"runs/bench/{key}/model.keras", blob)
    ref = ModelRef("bench", key, f"runs/bench/{key}/model.keras", hashlib.sha256(blob).hexdigest(), None, "bench")
    return load_model(store, ref)


def main() -> None:
    from PIL import Image

    from tasks.predict.classify import classify
    from tasks.predict.inputs import load_inputs
    from tasks.data.store import open_store

    load_before = os.getloadavg()[0]
    folder = Path(tempfile.mkdtemp(prefix="predict-bench-"))
    images = np.frombuffer(gzip.decompress(TEST_IMAGES.read_bytes()), np.uint8, offset=16).reshape(-1, 28, 28)
    np.save(folder / "test.npy", images)
    (folder / "pngs").mkdir()
    for i, image in enumerate(images[:1000]):
        Image.fromarray(image).save(folder / "pngs" / f"{i:04d}.png")
    store = open_store(str(folder / "store"))
    rows = []
    for key in ("baseline", "cnn2"):
        model = published(store, key)
        array = images.astype(np.float32).reshape((-1, *model.input_shape[1:])) / 255.0
        model.predict(array[:64], verbose=0)  # first call builds the predict function: not part of any figure
        plain_s, plain = timed(lambda: model.predict(array, verbose=0))
        cases = {
            "10,000 from .npy": (lambda: classify(model, load_inputs([str(folder / "test.npy")]).pixels()), plain_s),
            "10,000 from the IDX .gz": (lambda: classify(model, load_inputs([str(TEST_IMAGES)]).pixels()), plain_s),
        }
        pngs = sorted((folder / "pngs").iterdir())

        def plain_pngs():
            stack = np.stack([np.asarray(Image.open(p)) for p in pngs]).astype(np.float32) / 255.0
            return model.predict(stack.reshape((-1, *model.input_shape[1:])), verbose=0)

        png_plain_s, _ = timed(plain_pngs)
        cases["1,000 PNG files"] = (lambda: classify(model, load_inputs([str(folder / "pngs")]).pixels()), png_plain_s)
        for name, (action, baseline_s) in cases.items():
            ours_s, probabilities = timed(action)
            if name != "1,000 PNG files":
                assert np.array_equal(probabilities.argmax(1), plain.argmax(1))  # the same answers
            rows.append((key, name, ours_s, baseline_s))
            print(f"{key:9s} {name:26s} predict {ours_s:.3f} s, plain {baseline_s:.3f} s, ratio {ours_s / baseline_s:.2f}")

    # The whole command, as typed (needs a champion: a run's model named with --model instead).
    (folder / "store" / "runs" / "bench" / "baseline" / "metrics.json").write_text(
        '{"model_sha256": "%s", "test_accuracy": 0}' % hashlib.sha256(
            (folder / "store" / "runs" / "bench" / "baseline" / "model.keras").read_bytes()).hexdigest())
    (folder / "store" / "runs" / "bench" / "config.json").write_text("{}")
    command = [str(Path(sys.executable).parent / "fmnist"), "predict", str(folder / "test.npy"), "--store",
               str(folder / "store"), "--model", "bench/baseline"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    whole_s, _ = timed(lambda: subprocess.run(command, env=env, check=True, capture_output=True))
    print(f"whole command, 10,000 from .npy, baseline: {whole_s:.2f} s")

    table = "\n".join(f"| {key} | {name} | {ours:.3f} | {plain:.3f} | {ours / plain:.2f} |"
                      for key, name, ours, plain in rows)
    write_result("predict.md", f"""# fmnist predict: images classified per second

Machine: {machine()}
lscpu: {lscpu()}
Load average (1 min) before and after: {load_before:.1f}, {os.getloadavg()[0]:.1f} (a 2-core machine shared with other work:
above 2, every figure here is slowed by the others; the ratios less so, both sides running in the same minutes).
Median of {TRIES} tries each. `benchmarks/predict.py`.

Project: `load_inputs` (read, check, convert to float32) + `classify` (1,024-row batches), from the file.
Plain: `model.predict(array)` with Keras' default 32-row batches, on the same images already in memory as float32
(for the PNGs: Pillow + numpy + `model.predict`, no conversion rule). Both give the same classes.

| model | images | project (s) | plain (s) | ratio |
|---|---|---:|---:|---:|
{table}

Whole command, `fmnist predict test.npy --model RUN/baseline` (10,000 images, Python and TensorFlow start-up,
model load and 10,000 output lines included): **{whole_s:.2f} s**.
""")


if __name__ == "__main__":
    main()
