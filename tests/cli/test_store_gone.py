"""The S3 store gone for good in the middle of `fmnist run`, as a user meets it (issue 21, X6).

Before: the run raised the promised StoreError with the resume hint, then the flow's clean-up (`run.release()`)
read lease.json from the dead store, and that second error became the command's last line. The last line must be
the cause and the resume command; a lease that cannot be given up is a note above it.
"""

from __future__ import annotations

import threading

from tasks.data.store import open_store
from tests.cli_user import finish, start_fmnist
from tests.trial_processes import wait_for


def test_s3_gone_for_good_mid_run_ends_with_the_cause_and_the_resume_command(tmp_path, s3_server, s3_store_uri):
    store = open_store(s3_store_uri, s3_server.endpoint)
    process = start_fmnist(["fmnist", "run", "--store", s3_store_uri, "--s3-endpoint", s3_server.endpoint,
                            "--preset", "quick", "--architectures", "cnn2", "--max-epochs", "6", "--train-rows",
                            "6000", "--max-failures", "1", "--store-wait-s", "3"], tmp_path)
    try:
        wait_for(lambda: any("checkpoint_" in key for key in store.list_keys("runs/")), 300, "a checkpoint in S3")
        s3_server.stop()
        result = finish(process, timeout=300)
    finally:
        s3_server.start()
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("fmnist run: error: "), result.stderr[-3000:]
    assert f"lost the store {s3_store_uri}" in last, last
    assert "resume with `fmnist run --resume " in last, last
    assert "lease" not in last, last  # clean-up's trouble is a note, not the last line
