"""Builds the optional compiled parts; everything else is declared in pyproject.toml.

* ``otel_memory._census``: the heap census's compiled pass (``otel_memory.census``);
* ``otel_memory._proc``: the task path's ``statm`` reading, which keeps the GIL
  (``otel_memory.readings``).

Without a working C compiler the build skips them (``optional=True``) and the package uses its
pure-Python code for the same results.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("otel_memory._census", sources=["otel_memory/_census.c"], optional=True),
        Extension("otel_memory._proc", sources=["otel_memory/_proc.c"], optional=True),
    ]
)
