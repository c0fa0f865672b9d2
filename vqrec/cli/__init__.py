"""The ``vqrec`` command line: one module per command group (see ``app.py``), above trainers, index and
service, importing each step inside the command that runs it."""

from .app import app, main

__all__ = ["app", "main"]
