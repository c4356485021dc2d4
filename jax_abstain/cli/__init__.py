"""Command lines: thin wrappers that parse arguments and call a job or a library function.

Each module here is one console script (see pyproject.toml); `common` holds the shared
argument parser and the one-line error handling.
"""
