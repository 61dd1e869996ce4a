"""Errors that map to the CLI's exit statuses.

`UserError` is bad input: the message is one line naming the problem and the fix, and the CLI exits 2.
`ValidationError` means the compiled model disagrees with onnxruntime (exit 3). Anything else escaping the
API is an internal error (exit 1).
"""

from __future__ import annotations

from typing import Any


class EdgetuneError(Exception):
    """Base class for errors edgetune raises on purpose."""

    exit_code = 1


class UserError(EdgetuneError):
    """The input (model, flags, files) is wrong; the message says how to fix it."""

    exit_code = 2


class ValidationError(EdgetuneError):
    """Outputs of the compiled model are beyond tolerance of onnxruntime's.

    `compiled` carries the model anyway so that the caller can keep it for inspection.
    """

    exit_code = 3

    def __init__(self, message: str, compiled: Any = None):
        super().__init__(message)
        self.compiled = compiled
