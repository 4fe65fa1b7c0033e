"""The data layer's error type (its own module so that every data module can raise it)."""

from __future__ import annotations


class DatasetError(ValueError):
    """A problem with a dataset's files; the message names the file and the problem."""


__all__ = ["DatasetError"]
