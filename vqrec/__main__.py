"""``python -m vqrec ...`` runs the ``vqrec`` command line."""

from vqrec.cli import main

main()
