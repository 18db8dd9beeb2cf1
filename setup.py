"""Builds the optional compiled parts; everything else is declared in pyproject.toml.

* ``otel_memory.activity._census``: the heap census's compiled pass (``otel_memory.activity.census``);
* ``otel_memory.kernel._proc``: the task path's ``statm`` reading, which keeps the GIL
  (``otel_memory.kernel.readings``).

Without a working C compiler the build skips them (``optional=True``) and the package uses its
pure-Python code for the same results.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("otel_memory.activity._census", sources=["otel_memory/activity/_census.c"], optional=True),
        Extension("otel_memory.kernel._proc", sources=["otel_memory/kernel/_proc.c"], optional=True),
    ]
)
