"""The benchmark and load test (`python -m bench`, `make bench`); not part of the image.

A tool, not the product: it lives outside `app/` (setuptools installs only `app*`) and runs from
the repository root. Its extra dependencies are the `bench` extra of pyproject.toml.
"""
