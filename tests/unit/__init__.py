"""Unit tier: no Ray, no Prefect server or flow run, no S3 server, no `fmnist` subprocess (see tests/__init__.py)."""
