"""Whole runs: the pipeline config and its cached stages."""
