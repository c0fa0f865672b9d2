"""The package layout and the one native piece of vqrec.

Layout: one import name, ``vqrec``. The repository keeps one folder per room and maps it into the
namespace: ``index/`` -> ``vqrec.index``, ``service/`` -> ``vqrec.service``, ``trainers/`` ->
``vqrec.trainers``; ``vqrec/`` holds the package root, the CLI (``vqrec.cli``) and the text embedder
(``vqrec.embed``). A room whose folder is absent is left out, so the serving image, which copies no
``trainers/``, installs a vqrec without trainer code (``vqrec serve`` never imports it; ``vqrec train``
there says the trainers are not installed).

Native kernel: the ADC top-k scan (``index/_adc.c``, imported as ``vqrec.index._adc``) is a plain C shared
library loaded with ctypes (no Python C-API), so it needs only a C compiler at install time. If it cannot be
built, vqrec falls back to the numpy scan and logs a warning.
"""

import os

from setuptools import Extension, setup

ROOMS = {"vqrec.index": "index", "vqrec.service": "service", "vqrec.trainers": "trainers"}
PACKAGES = {
    "vqrec": "vqrec",
    "vqrec.cli": "vqrec/cli",
    "vqrec.embed": "vqrec/embed",
    "vqrec.index": "index",
    "vqrec.index.semantic": "index/semantic",
    "vqrec.service": "service",
    "vqrec.service.routes": "service/routes",
    "vqrec.trainers": "trainers",
    "vqrec.trainers.learned": "trainers/learned",
    "vqrec.trainers.learned.cove": "trainers/learned/cove",
    "vqrec.trainers.learned.rqvae": "trainers/learned/rqvae",
    "vqrec.trainers.rebuild": "trainers/rebuild",
}
HERE = os.path.dirname(os.path.abspath(__file__))
present = [name for name, folder in PACKAGES.items() if os.path.isfile(os.path.join(HERE, folder, "__init__.py"))]

setup(
    packages=present,
    package_dir={name: folder for name, folder in ROOMS.items() if name in present},
    package_data={"vqrec.index": ["_adc.c", "_fastscan.c", "_rq_encode.c", "_score_aware.c", "_half.h", "_topk.h"]},
    ext_modules=[
        Extension(
            "vqrec.index._adc",
            sources=["index/_adc.c", "index/_fastscan.c", "index/_rq_encode.c", "index/_score_aware.c"],
            depends=["index/_half.h", "index/_topk.h"],
            # no fused multiply-add: the scalar and SIMD paths and the numpy reference give the same bits
            extra_compile_args=["-O3", "-funroll-loops", "-std=gnu99", "-fno-math-errno", "-ffp-contract=off"],
            optional=True,
        )
    ],
)
