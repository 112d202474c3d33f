"""Trials no node of the Ray cluster can hold, refused at once on the session's real local Ray (2 CPUs, no GPU).
The same through the real `fmnist` command: tests/cli/test_ray_limits.py."""

from __future__ import annotations

import time

import pytest

from tasks.config import PipelineConfig
from tasks.errors import PipelineError
from tasks.tune.cluster import PlacementError, preflight


@pytest.mark.parametrize("field, value, expected", [
    ("cpus_per_trial", 3, ("config field 'cpus_per_trial': each trial asks for 3 CPUs, but the largest node of the "
                           "Ray cluster has 2; lower --cpus-per-trial or add a bigger node")),
    ("gpus_per_trial", 0.5, ("config field 'gpus_per_trial': each trial asks for 0.5 of a GPU, but no node of the Ray "
                             "cluster has a GPU; use --gpus-per-trial 0")),
])
def test_a_trial_the_local_ray_cannot_hold_is_refused_at_once(ray_local, tmp_path, field, value, expected):
    """The session's local Ray has 2 CPUs and no GPU; it was started here, so no autoscaler can add a node."""
    import ray

    assert ray.cluster_resources().get("CPU") == 2 and not ray.cluster_resources().get("GPU")
    config = PipelineConfig(store=str(tmp_path), preset="quick", architectures=["baseline"], **{field: value})
    started = time.monotonic()
    with pytest.raises(PlacementError) as error:
        preflight(config)
    assert time.monotonic() - started < 5  # at once: no autoscaling wait on a Ray started here
    assert str(error.value).startswith(expected), str(error.value)
    assert isinstance(error.value, PipelineError)
    assert not (tmp_path / "runs").exists()  # nothing written: Tune never started
