"""wsbench — a benchmark harness for weakly-supervised 3D lung nodule segmentation.

Three plugin roles (Predictor, Generator, Segmenter) plus Dataset plug into one runner
and one evaluation protocol; see ``wsbench.hookspecs`` for how plugins register.
"""

__version__ = "0.1.0"

from wsbench.hookspecs import hookimpl  # noqa: E402  (re-exported for plugin authors)

__all__ = ["__version__", "hookimpl"]
