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


def exit_with_one_line(main) -> None:
    """Run a script's ``main()`` and exit with its status; a :class:`WsbenchError` (bad input or
    configuration) becomes ``error: …`` on stderr and status 2, without a traceback — the
    same contract as the ``wsbench`` CLI, for the scripts in ``benchmarks/``."""
    import sys

    try:
        sys.exit(main())
    except WsbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
