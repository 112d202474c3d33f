"""tests/unit/test_store_listing.py's store-backed tests again, on the session's SeaweedFS (tests/integration/on_s3.py)."""

import tests.unit.test_store_listing as unit
from tests.integration.on_s3 import on_s3

globals().update(on_s3(unit))
