"""The error a caller can fix (a bad option, an empty selection), in a module with no imports.

``api`` raises it and the CLI turns it into one line and exit 2; it lives here so the CLI can
catch it without importing ``api`` (and its engine and asyncio) for commands that never scan.
"""


class UsageError(Exception):
    """A mistake the caller can fix (bad option, empty selection); never a traceback in the CLI."""
