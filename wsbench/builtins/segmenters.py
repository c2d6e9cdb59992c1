"""Built-in segmenters, registered through the same hook as third-party plugins."""

from wsbench.hookspecs import hookimpl
from wsbench.segmenters import ALL


@hookimpl
def register_segmenters(register):
    for cls in ALL:
        register(cls)
