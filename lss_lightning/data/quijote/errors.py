"""The one error type of the Quijote readers: its message names the file or folder and the fix."""

from __future__ import annotations


class QuijoteError(RuntimeError):
    """Quijote data that cannot be read as asked (missing, malformed or inconsistent)."""
