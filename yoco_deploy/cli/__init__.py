"""The ``yoco-deploy`` command line: a thin shell over the library (``main`` is the entry point)."""

from yoco_deploy.cli.main import main

__all__ = ["main"]
