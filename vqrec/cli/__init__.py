"""The ``vqrec`` command line: one module per command group (see ``root.py``), above trainers, index and
service, importing each step inside the command that runs it."""

from .root import app, main

__all__ = ["app", "main"]
