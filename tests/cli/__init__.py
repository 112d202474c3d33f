"""CLI tier: the `fmnist` command run as a user types it, from a fresh folder (see tests/__init__.py)."""
