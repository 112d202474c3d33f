"""tests/unit/test_lease.py's store-backed tests again, on the session's SeaweedFS (tests/integration/on_s3.py)."""

import tests.unit.test_lease as unit
from tests.integration.on_s3 import on_s3

globals().update(on_s3(unit))
