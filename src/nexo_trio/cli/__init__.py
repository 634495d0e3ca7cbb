"""The ``nexo-trio`` command line."""

from nexo_trio.cli.main import main

__all__ = ["main"]
