"""Built-in generators: rectified-flow models of CT patches.

* :mod:`wsbench.generators.unet` — the lean 3-D velocity U-Net;
* :mod:`wsbench.generators.rflow` — ``rflow``, a pixel-space rectified flow trained on the benchmark;
* :mod:`wsbench.generators.maisi` — ``maisi``, an adapter for NVIDIA MAISI-v2 weights (user-supplied);
* :mod:`wsbench.generators.quality` — the reconstruction / sample quality check.

The time/velocity convention is documented once, in :mod:`wsbench.interfaces.generator`.
"""
