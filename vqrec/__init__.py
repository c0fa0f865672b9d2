"""vqrec: vector-quantization retrieval for recommender embeddings.

One import name, four rooms (the repository folder each lives in, in brackets)::

    vqrec.index     [index/]     codebooks, ADC search, the on-disk artifacts and store (numpy + faiss + C kernel)
    vqrec.trainers  [trainers/]  embeddings -> codebooks, learned quantizers, the rebuild job (imports index)
    vqrec.service   [service/]   the REST service: loads artifacts, answers queries (imports index)
    vqrec.cli       [vqrec/cli/] the ``vqrec`` command, above the three others

Every logger is under ``vqrec.`` (``logging.getLogger("vqrec")`` governs them all); the library adds a
NullHandler only, and the CLI and the service configure logging.
"""

import logging
from importlib import metadata

try:
    __version__ = metadata.version("vqrec")
except metadata.PackageNotFoundError:  # pragma: no cover (a source tree without installing)
    __version__ = "0+unknown"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
