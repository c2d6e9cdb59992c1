"""wsbench-blob-dot: a multi-scale Laplacian-of-Gaussian blob segmenter for wsbench."""

__version__ = "0.1.0"
