"""cluster.yaml checked the way `ray up` checks it, offline.

`prepare_config` merges it onto Ray's AWS defaults (ray/autoscaler/aws/defaults.yaml, read from the installed
package) and `validate_config` checks the result against Ray's JSON schema and its own rules. Neither needs network
or AWS credentials (nor a running Ray). What `ray up` does after that does need them (asking EC2 for instance types,
creating the key pair and security group, launching), so it is not tested here. The five trials placed on a real
multi-node Ray: tests/integration/test_cluster.py.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tasks.config import ALL_ARCHITECTURES


CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


# GPUs per AWS instance type, to check that a node type declares what its machine has (a g5.xlarge declared with
# 4 GPUs would make the autoscaler start it for trials that can never run there). Extend when adding a type.
GPUS_OF_INSTANCE = {
    "g4dn.xlarge": 1, "g4dn.2xlarge": 1, "g4dn.12xlarge": 4,
    "g5.xlarge": 1, "g5.2xlarge": 1, "g5.4xlarge": 1, "g5.8xlarge": 1, "g5.12xlarge": 4, "g5.48xlarge": 8,
    "g6.xlarge": 1, "g6.12xlarge": 4, "p4d.24xlarge": 8,
}


def load_cluster_yaml() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def check_like_ray_up(config: dict) -> dict:
    """The offline part of `ray up`'s checks (ray.autoscaler._private.commands._bootstrap_config)."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_the_checks_ray_up_runs():
    raw = load_cluster_yaml()
    prepared = check_like_ray_up(raw)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]
    # prepare_config merges onto Ray's defaults one top-level key at a time: a command list the file leaves out
    # comes from the defaults (which pip-install a nightly Ray). Every node must run our commands and only those.
    assert prepared["head_setup_commands"] == raw["setup_commands"] + raw["head_setup_commands"]
    assert prepared["worker_setup_commands"] == raw["setup_commands"] + raw["worker_setup_commands"]
    for key in ("initialization_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert prepared[key] == raw[key], key
    # Ray Client and `ray job submit` need the same Ray (and Python) on both sides: bump the image with Ray.
    assert prepared["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert prepared["docker"]["head_image"] == f"rayproject/ray:{ray.__version__}-py311"


def test_trials_can_only_land_on_gpu_workers_and_five_fit_at_once():
    config = load_cluster_yaml()
    types = config["available_node_types"]
    for name, node_type in types.items():
        assert {"CPU", "GPU"} <= set(node_type.get("resources", {})), f"{name}: declare CPU and GPU explicitly"
    head = types[config["head_node_type"]]
    assert head["resources"]["CPU"] == 0 and head["resources"]["GPU"] == 0 and head["max_workers"] == 0

    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert workers and all(t["resources"]["GPU"] >= 1 for t in workers.values()), "every worker type has GPUs"
    for name, node_type in workers.items():
        instance = node_type["node_config"]["InstanceType"]
        assert instance in GPUS_OF_INSTANCE, f"{name}: {instance} missing from GPUS_OF_INSTANCE"
        assert node_type["resources"]["GPU"] == GPUS_OF_INSTANCE[instance], f"{name}: {instance} GPU count"
        assert node_type["min_workers"] == 0, f"{name}: GPU machines only while there is work"

    # Five 1-GPU trials at once must be possible within the global and per-type worker limits.
    budget, gpus = config["max_workers"], 0
    for node_type in sorted(workers.values(), key=lambda t: -t["resources"]["GPU"]):
        count = min(node_type["max_workers"], budget)
        gpus, budget = gpus + count * node_type["resources"]["GPU"], budget - count
    assert gpus >= len(ALL_ARCHITECTURES)


def test_credentials_come_from_instance_roles_never_from_the_file():
    text = CLUSTER_YAML.read_text()
    assert not re.search(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b", text), "an AWS access key id"
    assert not re.search(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])", text), "something like a secret key"
    assert not re.search(r"aws_(secret_access_key|access_key_id|session_token)|AWS_SECRET", text, re.IGNORECASE)
    config = load_cluster_yaml()
    assert "aws_credentials" not in config["provider"]
    for name, node_type in config["available_node_types"].items():
        arn = node_type["node_config"].get("IamInstanceProfile", {}).get("Arn", "")
        assert re.fullmatch(r"arn:aws:iam::\d{12}:instance-profile/[\w+=,.@-]+", arn), f"{name}: instance profile"


def test_dashboard_and_ray_ports_are_not_opened_to_the_internet():
    config = load_cluster_yaml()
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    # Extra inbound rules would be added to the group Ray creates (which opens only SSH to the outside).
    assert not config["provider"].get("security_group", {}).get("IpPermissions")


def _set(path: str, value):
    def change(config: dict) -> None:
        *parents, last = path.split(".")
        target = config
        for key in parents:
            target = target[key]
        target[last] = value
    return change


@pytest.mark.parametrize("change, error, message", [
    (_set("max_workers", "many"), jsonschema.ValidationError, "'many' is not of type 'integer'"),
    (_set("max_worker", 4), jsonschema.ValidationError, "'max_worker' was unexpected"),
    (_set("available_node_types.gpu_1x_a10g.min_worker", 1), jsonschema.ValidationError, "'min_worker' was unexpected"),
    (_set("available_node_types.gpu_1x_a10g.resources.GPU", 0.5), jsonschema.ValidationError, "not of type 'integer'"),
    (_set("head_node_type", "cpu_head"), ValueError, "`head_node_type` must be one of `available_node_types`"),
], ids=["wrong type", "unknown key", "unknown key in a node type", "fractional GPU count", "head type not a node type"])
def test_the_check_rejects_a_broken_cluster_file(change, error, message):
    config = load_cluster_yaml()
    change(config)
    with pytest.raises(error, match=re.escape(message)):
        check_like_ray_up(config)
