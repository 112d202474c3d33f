"""The test suite, in three tiers (README, "Tests"):

- tests/unit: no Ray, no Prefect server or flow run, no S3 server, no `fmnist` subprocess; quick, run while working.
- tests/integration: real Ray, Prefect, SeaweedFS and flows, in this process.
- tests/cli: the `fmnist` command run as a user types it (tests/cli_user.py), from a fresh folder.

Helpers shared by the tiers live beside this file (seaweed_server, trained_run, trial_processes); fixtures in
tests/conftest.py start nothing unless a test asks for them.
"""
