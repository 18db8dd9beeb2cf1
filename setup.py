"""Builds the optional compiled census pass; everything else is declared in pyproject.toml.

Without a working C compiler the build skips the extension (``optional=True``) and
``otel_memory.census`` uses its pure-Python pass.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("otel_memory._census", sources=["otel_memory/_census.c"], optional=True)
    ]
)
