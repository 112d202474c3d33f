"""Every private name of Keras the project touches, in one place, checked when this module loads.

A `.keras` file does not hold the layers' seed-generator state (Dropout's masks) nor Keras' global seed
generator (design §10), and Keras has no public API to read or set them; a resumed trial needs both to train on
bit-identically. If an upgrade of Keras moves one, importing this module fails with one line naming the Keras
version and what is missing. Imported inside a trial only (it imports Keras).
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import keras

from tasks.errors import IncompatibleVersion

TESTED_WITH = "3.15"


def _check() -> None:
    missing = []
    try:
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
    except ImportError as exc:
        missing.append(f"keras.src ({exc})")
    else:
        missing += [f"{m.__name__}.{name}" for m, name in ((global_state, "get_global_attribute"),
                                                           (seed_generator, "GLOBAL_SEED_GENERATOR"),
                                                           (seed_generator, "global_seed_generator"))
                    if not hasattr(m, name)]
    if not hasattr(keras.layers.Layer, "_flatten_layers"):
        missing.append("Layer._flatten_layers")
    if not hasattr(keras.layers.Dropout(0.5), "_seed_generators"):
        missing.append("Layer._seed_generators")
    if missing:
        raise IncompatibleVersion(f"Keras {version('keras')} lacks {', '.join(missing)}, which this project uses to "
                                  f"resume trials bit-identically (tested with Keras {TESTED_WITH}); install the "
                                  f"version pyproject.toml pins")


_check()


def layers_random_generators(model: Any) -> dict[str, Any]:
    """Every SeedGenerator of the model's layers (Dropout's masks), keyed by position and layer name: the
    names come back from the .keras config, the generators' own names do not (they are auto-numbered)."""
    return {f"{position}/{layer.name}/{index}": generator
            for position, layer in enumerate(model._flatten_layers(include_self=True))
            for index, generator in enumerate(layer._seed_generators)}


def global_seed_generator_if_made() -> Any | None:
    """Keras' global SeedGenerator, if anything made one (random ops with seed=None); None otherwise."""
    from keras.src.backend.common import global_state
    from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR

    return global_state.get_global_attribute(GLOBAL_SEED_GENERATOR)


def global_seed_generator() -> Any:
    """Keras' global SeedGenerator, made if there is none yet."""
    from keras.src.random.seed_generator import global_seed_generator as made_or_found

    return made_or_found()
