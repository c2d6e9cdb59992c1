"""The built-in synthetic LUNA16-format set (``luna16-synth``, the default dataset).

:func:`build` writes a genuine LUNA16 tree (``subset*/`` int16 ``.mhd/.raw``,
``annotations.csv``, ``candidates_V2.csv``, ``seg-lungs-LUNA16/``) plus one nodule-mask
volume per scan, which the LUNA16 reader then reads like real data. Modules:

* :mod:`.grid` — scan grid and world ↔ voxel mapping,
* :mod:`.anatomy` — analytic thorax (body wall, ribs, spine, mediastinum, lungs, fissures),
* :mod:`.trees` — vessel and airway trees and their rasterisation,
* :mod:`.nodules` — real LIDC-IDRI nodule outlines: placement and partial-volume insertion,
* :mod:`.scan` — one CT (anatomy + trees + nodules + candidates + scanner blur and noise),
* :mod:`.builder` — the tree on disk.
"""

from wsbench.data.synth.builder import DEFAULT_SCANS, GENERATOR_VERSION, build

__all__ = ["DEFAULT_SCANS", "GENERATOR_VERSION", "build"]
