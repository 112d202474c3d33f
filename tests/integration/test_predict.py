"""`fmnist predict` with a real trained model (tests/trained_run.py), the real test set, real PNG files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.trained_run import copy_store, trained_folder, trained_run_id
from tests.unit.test_predict import predict

TEST_IMAGES = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


@pytest.fixture(scope="module")
def artifacts() -> Path:
    return trained_folder() / "artifacts"


@pytest.fixture(scope="module")
def own_predictions(artifacts, raw_dataset) -> np.ndarray:
    """The model's own predictions on the first 200 test images, loaded as training's tests load it."""
    from tasks.model.artifacts import load_run_model
    from tasks.data.store import open_store
    from tasks.model.training import to_model_input

    model = load_run_model(open_store(str(artifacts)), trained_run_id(), "baseline")
    return model.predict(to_model_input(raw_dataset.test_images[:200], model.input_shape[1:]), verbose=0)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory, raw_dataset) -> Path:
    """200 test images as 28 x 28 grayscale PNGs, named in order, with their labels in labels.npy beside the folder."""
    folder = tmp_path_factory.mktemp("pngs") / "images"
    folder.mkdir()
    for i, image in enumerate(raw_dataset.test_images[:200]):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    np.save(folder.parent / "labels.npy", raw_dataset.test_labels[:200].astype(np.int64))
    return folder


def test_200_pngs_are_classified_as_the_model_classifies_their_arrays(capsys, artifacts, pngs, own_predictions,
                                                                      raw_dataset):
    code, out, err = predict(capsys, str(pngs), "--labels", str(pngs.parent / "labels.npy"), "--store", str(artifacts))
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 201 and err.strip().endswith(f"overall champion, test accuracy {_recorded(artifacts):.2f}%)")
    from tasks.data.shards import CLASS_NAMES

    for i, line in enumerate(lines[:200]):
        name, cls, probability, label = line.split("\t")
        assert name == str(pngs / f"{i:03d}.png") and cls == CLASS_NAMES[own_predictions[i].argmax()]
        assert float(probability) == pytest.approx(own_predictions[i].max(), abs=6e-5)
        assert label.startswith(f"label {CLASS_NAMES[raw_dataset.test_labels[i]]} (")
    correct = int((own_predictions.argmax(1) == raw_dataset.test_labels[:200]).sum())
    assert lines[-1].startswith(f"accuracy: {100 * correct / 200:.2f}% ({correct} of 200 correct, standard error ")
    print(lines[-1])  # the accuracy on the 200 PNGs, shown with -s


def _recorded(artifacts: Path) -> float:
    return 100 * json.loads((artifacts / "models" / "champion.json").read_text())["overall"]["test_accuracy"]


def test_json_output_parses_and_carries_top_k(capsys, artifacts, pngs, own_predictions):
    code, out, _ = predict(capsys, str(pngs), "--json", "--top", "3", "--store", str(artifacts),
                           "--model", f"{trained_run_id()}/baseline")
    document = json.loads(out)
    assert code == 0 and document["model"]["architecture"] == "baseline" and document["accuracy"] is None
    assert len(document["predictions"]) == 200 and len(document["classes"]) == 10
    first = document["predictions"][0]
    assert first["class_index"] == own_predictions[0].argmax() and len(first["top"]) == 3
    assert first["top"][0]["probability"] >= first["top"][1]["probability"] >= first["top"][2]["probability"]


def test_the_idx_test_set_scores_the_models_recorded_accuracy(capsys, artifacts):
    """The IDX .gz finds its labels file beside it; the accuracy on all 10,000 rows is the one metrics.json records."""
    code, out, _ = predict(capsys, str(TEST_IMAGES), "--store", str(artifacts), "--model", "champion:baseline")
    assert code == 0
    assert out.strip().splitlines()[-1].startswith(f"accuracy: {_recorded(artifacts):.2f}% (")
    assert len(out.strip().splitlines()) == 10_001


def test_npy_arrays_uint8_and_float_give_the_same_classes(capsys, artifacts, tmp_path, raw_dataset, own_predictions):
    images = raw_dataset.test_images[:200]
    np.save(tmp_path / "u8.npy", images)
    np.save(tmp_path / "unit.npy", images.astype(np.float32) / 255)
    np.save(tmp_path / "one.npy", images[0])
    outputs = []
    for name in ("u8.npy", "unit.npy", "one.npy"):
        code, out, err = predict(capsys, str(tmp_path / name), "--json", "--store", str(artifacts))
        assert code == 0, err
        outputs.append([p["class_index"] for p in json.loads(out)["predictions"]])
    assert outputs[0] == outputs[1] == list(own_predictions.argmax(1)) and outputs[2] == outputs[0][:1]


def test_predict_reads_a_model_from_s3(capsys, artifacts, s3_server, s3_store_uri):
    from tasks.data.store import open_store

    copy_store(artifacts, open_store(s3_store_uri, s3_server.endpoint))
    code, out, err = predict(capsys, str(TEST_IMAGES), "--store", s3_store_uri, "--s3-endpoint", s3_server.endpoint)
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith(f"accuracy: {_recorded(artifacts):.2f}% (")


# --- bad input: one line, exit 2 ----------------------------------------------------------------------------

def _no_champion(tmp_path: Path, artifacts: Path) -> list[str]:
    store = tmp_path / "store"
    shutil.copytree(artifacts, store)
    (store / "models" / "champion.json").unlink()
    return ["--store", str(store)]


def _tampered(tmp_path: Path, artifacts: Path) -> list[str]:
    store = tmp_path / "store"
    shutil.copytree(artifacts, store)
    model = store / "runs" / trained_run_id() / "baseline" / "model.keras"
    model.write_bytes(model.read_bytes() + b"\0")
    return ["--store", str(store)]


def _model_deleted(tmp_path: Path, artifacts: Path) -> list[str]:
    store = tmp_path / "store"
    shutil.copytree(artifacts, store)
    (store / "runs" / trained_run_id() / "baseline" / "model.keras").unlink()
    return ["--store", str(store)]


BAD = {
    # name: (inputs to write → argv, what the line must say)
    "not-an-image": (lambda t, a: [_write(t / "shirt.png", b"<html>not a png</html>")], ["shirt.png", "not an image",
                                                                                          "expected a PNG or JPEG"]),
    "unknown-file": (lambda t, a: [_write(t / "notes.txt", b"hello")], ["notes.txt", "not an image"]),
    "empty-folder": (lambda t, a: [str(_mkdir(t / "photos"))], ["photos", "no PNG or JPEG files", "found nothing"]),
    "missing": (lambda t, a: [str(t / "nope.png")], ["nope.png", "no such file or folder"]),
    "npy-shape": (lambda t, a: [_npy(t / "x.npy", np.zeros((3, 32, 32), np.uint8))], ["x.npy", "(3, 32, 32)",
                                                                                      "expected (N, 28, 28)"]),
    "npy-range": (lambda t, a: [_npy(t / "x.npy", np.full((28, 28), 300.0))], ["x.npy", "300", "expected [0, 1]"]),
    "idx-truncated": (lambda t, a: [_write(t / "t10k-images-idx3-ubyte.gz", TEST_IMAGES.read_bytes()[:5000])],
                      ["t10k-images-idx3-ubyte.gz", "truncated"]),
    "labels-count": (lambda t, a: [_npy(t / "x.npy", np.zeros((5, 28, 28), np.uint8)), "--labels",
                                   _npy(t / "y.npy", np.zeros(4, np.int64))], ["y.npy", "4 labels for 5 images"]),
    "no-store": (lambda t, a: [_npy(t / "x.npy", np.zeros((28, 28), np.uint8)), "--store", str(t / "elsewhere")],
                 ["elsewhere", "no such folder"]),
    "no-champion": (lambda t, a: [_npy(t / "x.npy", np.zeros((28, 28), np.uint8)), *_no_champion(t, a)],
                    ["no champion yet", "--model RUN_ID/ARCH"]),
    "no-such-run": (lambda t, a: [_npy(t / "x.npy", np.zeros((28, 28), np.uint8)), "--store", str(a),
                                  "--model", "nosuchrun/baseline"], ["nosuchrun", "no run"]),
    "no-such-model": (lambda t, a: [_npy(t / "x.npy", np.zeros((28, 28), np.uint8)), "--store", str(a),
                                    "--model", f"{trained_run_id()}/cnn2"], ["no finished 'cnn2' model",
                                                                             "cnn2/metrics.json"]),
    "bad-choice": (lambda t, a: [_npy(t / "x.npy", np.zeros((28, 28), np.uint8)), "--store", str(a),
                                 "--model", "best"], ["--model 'best'", "expected 'champion'"]),
    "model-deleted": (lambda t, a: [_npy(t / "x.npy", np.zeros((28, 28), np.uint8)), *_model_deleted(t, a)],
                      ["model.keras: no such object", "overall champion record names it"]),
    "hash-mismatch": (lambda t, a: [_npy(t / "x.npy", np.zeros((28, 28), np.uint8)), *_tampered(t, a)],
                      ["model.keras: sha256", "but its record says", "refusing to load it"]),
}


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _mkdir(path: Path) -> Path:
    path.mkdir()
    (path / "readme.txt").unlink(missing_ok=True)
    return path


def _npy(path: Path, array: np.ndarray) -> str:
    np.save(path, array)
    return str(path)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_naming_it_and_exit_2(case, tmp_path, capsys, artifacts):
    make, expected = BAD[case]
    code, out, err = predict(capsys, *make(tmp_path, artifacts))
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("fmnist predict: error: ")
    for text in expected:
        assert text in lines[0], (text, lines[0])


