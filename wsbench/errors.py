"""User-facing errors.

A :class:`WsbenchError` is printed by the CLI as one line (no traceback): its message must
name the file/option at fault and the fix.
"""


class WsbenchError(Exception):
    """An error caused by input or configuration that the user can fix."""


class OptionError(WsbenchError):
    """An unknown or ill-typed plugin option."""


class PluginNotFound(WsbenchError):
    """No plugin of that role has that name."""


class DataError(WsbenchError):
    """Missing or malformed input data (a file, a CSV row, a volume)."""
