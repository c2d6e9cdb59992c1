"""The module wsbench loads through the entry point: hook implementations only."""

from wsbench import hookimpl

from wsbench_blob_dot.segmenter import BlobDotSegmenter


@hookimpl
def register_segmenters(register):
    register(BlobDotSegmenter)
