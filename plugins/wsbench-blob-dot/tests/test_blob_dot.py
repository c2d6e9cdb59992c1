import torch

from wsbench_blob_dot.segmenter import BlobDotSegmenter


def test_blob_scores_higher_than_tube_and_background():
    z, y, x = torch.meshgrid(*(torch.arange(32.0),) * 3, indexing="ij")
    vol = torch.full((32, 32, 32), -0.8)
    vol[((z - 12) ** 2 + (y - 12) ** 2 + (x - 12) ** 2) <= 16] = 0.2  # 8 mm ball
    vol[((y - 24) ** 2 + (x - 24) ** 2) <= 4] = 0.2  # a tube along z
    seg = BlobDotSegmenter({})
    out = seg.segment(vol[None, None])
    assert out.shape == (1, 32, 32, 32) and torch.isfinite(out).all()
    ball = out[0, 12, 12, 12]
    tube = out[0, 16, 24, 24]
    assert ball > 2 * tube and ball > 10 * out[0, 28, 4, 4]
