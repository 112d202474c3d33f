"""Model tests: the five architectures are the report's, layer for layer."""

import pytest

from tasks.model.architectures import ARCHITECTURES, build_model
from tasks.config import ALL_ARCHITECTURES

REPORT_PARAMS = {"baseline": 7_850, "mlp1": 203_530, "mlp3_dropout": 247_766, "cnn1_mlp": 850_038, "cnn2": 409_034}


def test_registry_matches_the_config_choices():
    assert tuple(k for k, a in ARCHITECTURES.items() if a.in_report) == ALL_ARCHITECTURES


@pytest.mark.parametrize("key", list(ARCHITECTURES))
def test_every_registered_model_builds_with_its_recorded_parameter_count_and_can_be_named(key):
    """Adding a model is one registry entry: this holds it to its parameter count, the config's choices to it."""
    from tasks.config import PipelineConfig

    assert build_model(key).count_params() == ARCHITECTURES[key].params
    assert key in PipelineConfig.model_json_schema()["properties"]["architectures"]["items"]["enum"]


@pytest.mark.parametrize("key", ALL_ARCHITECTURES)
def test_parameter_count_is_the_reports(key):
    assert build_model(key).count_params() == REPORT_PARAMS[key] == ARCHITECTURES[key].params


@pytest.mark.parametrize("key, shape", [("baseline", (None, 28, 28)), ("mlp3_dropout", (None, 28, 28)),
                                        ("cnn1_mlp", (None, 28, 28, 1)), ("cnn2", (None, 28, 28, 1))])
def test_input_shape_is_the_reports(key, shape):
    assert build_model(key).input_shape == shape


def test_layer_names_and_shapes_follow_the_report_tables():
    cnn2 = build_model("cnn2")
    assert [(layer.name, layer.output.shape[1:]) for layer in cnn2.layers] == [
        ("Conv1", (28, 28, 16)), ("MaxPool2D1", (14, 14, 16)), ("Dropout1", (14, 14, 16)),
        ("Conv2", (14, 14, 32)), ("MaxPool2D2", (7, 7, 32)), ("Dropout2", (7, 7, 32)),
        ("Flatten", (1568,)), ("Hidden1", (256,)), ("Dropout3", (256,)), ("Output", (10,)),
    ]
    cnn1 = build_model("cnn1_mlp")
    assert cnn1.get_layer("Flatten").output.shape[1:] == (3136,)
    assert cnn1.get_layer("Hidden1").count_params() == 803_072


def test_every_model_ends_in_a_ten_way_softmax():
    for key in ALL_ARCHITECTURES:
        output = build_model(key).layers[-1]
        assert output.units == 10 and output.activation.__name__ == "softmax"


def test_validation_split_is_the_reports():
    assert {k: a.validation_split for k, a in ARCHITECTURES.items() if a.in_report} == {
        "baseline": 0.2, "mlp1": 0.2, "mlp3_dropout": 0.2, "cnn1_mlp": 0.2, "cnn2": 0.1}


def describe(layer) -> tuple:
    """A layer as the report's tables and text give it: kind, size, activation or rate, kernel and pooling."""
    kind = type(layer).__name__
    if kind == "Dense":
        return kind, layer.units, layer.activation.__name__
    if kind == "Conv2D":
        return kind, layer.filters, layer.kernel_size, layer.padding, layer.activation.__name__
    if kind == "MaxPooling2D":
        return kind, layer.pool_size, layer.strides
    if kind == "Dropout":
        return kind, layer.rate
    return (kind,)


MLP3 = [("Dense", 256, "relu"), ("Dropout", 0.4), ("Dense", 128, "relu"), ("Dropout", 0.4),
        ("Dense", 100, "relu"), ("Dropout", 0.4), ("Dense", 10, "softmax")]
CONV_BLOCK = [("MaxPooling2D", (2, 2), (2, 2)), ("Dropout", 0.4)]
REPORT_LAYERS = {  # the report's Figures 2, 4, 6, 8 and 9 with the text around them (dropout 0.4: see design §2)
    "baseline": [("Flatten",), ("Dense", 10, "softmax")],
    "mlp1": [("Flatten",), ("Dense", 256, "relu"), ("Dense", 10, "softmax")],
    "mlp3_dropout": [("Flatten",), *MLP3],
    "cnn1_mlp": [("Conv2D", 16, (3, 3), "same", "relu"), *CONV_BLOCK, ("Flatten",), *MLP3],
    "cnn2": [("Conv2D", 16, (3, 3), "same", "relu"), *CONV_BLOCK, ("Conv2D", 32, (3, 3), "same", "relu"),
             *CONV_BLOCK, ("Flatten",), ("Dense", 256, "relu"), ("Dropout", 0.4), ("Dense", 10, "softmax")],
}


@pytest.mark.parametrize("key", ALL_ARCHITECTURES)
def test_every_layer_has_the_reports_kind_size_activation_and_dropout_rate(key):
    assert [describe(layer) for layer in build_model(key).layers] == REPORT_LAYERS[key]
