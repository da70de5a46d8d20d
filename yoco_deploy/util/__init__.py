"""Utilities every stage uses: atomic writes, locks, hashing, versions, strict configs, files."""
