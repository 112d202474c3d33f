"""Integration tier: real Ray, Prefect, SeaweedFS and flows, in the test process (see tests/__init__.py)."""
