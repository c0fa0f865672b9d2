"""Builds the one native piece of vqrec: the ADC top-k scan kernel (index/_adc.c).

It is a plain C shared library loaded with ctypes (no Python C-API), so it needs only a C compiler at
install time. If it cannot be built, vqrec falls back to the numpy scan and logs a warning.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "index._adc",
            sources=["index/_adc.c"],
            extra_compile_args=["-O3", "-funroll-loops", "-std=c99", "-fno-math-errno"],
            optional=True,
        )
    ]
)
