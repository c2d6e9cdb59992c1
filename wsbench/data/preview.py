"""A PNG preview of a LUNA16-format dataset: slices through nodules with the truth contour.

Used by ``wsbench data show``. Works for any :class:`wsbench.builtins.datasets.Luna16Dataset`
(the synthetic set included): it reads scans and truth masks through the dataset's own
reader and mask source, so what you see is what the benchmark evaluates against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsbench.data.intensity import HU_MAX, HU_MIN
from wsbench.errors import DataError, WsbenchError


def pick_spread(values, n: int) -> list[int]:
    """Indices of ``n`` items spread evenly over the sorted ``values`` (smallest … largest)."""
    order = np.argsort(np.asarray(values, float), kind="stable")
    if len(order) <= n:
        return [int(i) for i in order]
    pos = np.unique(np.round(np.linspace(0, len(order) - 1, n)).astype(int))
    return [int(order[p]) for p in pos]


def render_nodules(dataset, out: Path, n_nodules: int = 6, split: str = "test", crop_mm: float = 64.0) -> Path:
    """Write ``out`` (PNG): a whole axial slice, then crops through ``n_nodules`` nodules of
    ``split`` (``"all"`` for every scan) with the truth contour in red. Returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    from wsbench.data.luna16 import read_scan, world_to_voxel

    if not hasattr(dataset, "index"):
        raise WsbenchError(f"dataset '{dataset.name}' is not a LUNA16-format dataset; `data show` needs one")
    if hasattr(dataset, "root"):
        dataset.root()
    idx = dataset.index()
    split_of = dataset.assign_splits()
    items = [(u, a) for u in idx.series_uids() if split == "all" or split_of.get(u) == split
             for a in idx.annotations[u]]
    if not items:
        raise WsbenchError(f"no annotated nodules in the {split} split of {idx.root}; try --split all")
    picks = [items[i] for i in pick_spread([a.diameter_mm for _, a in items], n_nodules)]
    masks = dataset.mask_source()
    loaded: dict[str, tuple] = {}
    panels = []
    for uid, a in picks:
        if uid not in loaded:
            try:
                image, _ = read_scan(idx.scans[uid])
            except DataError:
                continue
            arr = sitk.GetArrayFromImage(image)
            ms, _, _ = masks.nodule_masks(uid, image, idx.annotations[uid])
            loaded[uid] = (image, arr, ms)
        image, arr, ms = loaded[uid]
        k = idx.annotations[uid].index(a)
        m = ms[k]
        truth = m.paste(arr.shape) if m is not None else np.zeros(arr.shape, bool)
        zyx = np.rint(world_to_voxel(image, a.xyz)).astype(int)
        zyx = np.clip(zyx, 0, np.array(arr.shape) - 1)
        if truth.any():  # the slice where the truth is largest near the centre
            areas = truth.sum(axis=(1, 2))
            zyx[0] = int(np.argmax(areas))
        panels.append((uid, a, image, arr, truth, zyx))
    if not panels:
        raise WsbenchError(f"none of the chosen scans of {idx.root} could be read")
    n = len(panels) + 1
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.7 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    uid, a, image, arr, truth, zyx = panels[0]
    sx, sy, sz = image.GetSpacing()
    ax = axes.ravel()[0]
    ax.imshow(arr[zyx[0]], cmap="gray", vmin=HU_MIN, vmax=HU_MAX, aspect=sy / sx)
    if truth[zyx[0]].any():
        ax.contour(truth[zyx[0]], [0.5], colors="r", linewidths=0.8)
    ax.set_title(f"…{uid[-8:]} slice {zyx[0]} ({sx:.2f}×{sy:.2f}×{sz:.2f} mm)", fontsize=8)
    for ax, (uid, a, image, arr, truth, zyx) in zip(axes.ravel()[1:], panels):
        sx, sy, sz = image.GetSpacing()
        hy, hx = int(crop_mm / 2 / sy), int(crop_mm / 2 / sx)
        y0, x0 = max(zyx[1] - hy, 0), max(zyx[2] - hx, 0)
        sl = (zyx[0], slice(y0, zyx[1] + hy), slice(x0, zyx[2] + hx))
        ax.imshow(arr[sl], cmap="gray", vmin=HU_MIN, vmax=HU_MAX, aspect=sy / sx, interpolation="nearest")
        if truth[sl].any():
            ax.contour(truth[sl], [0.5], colors="r", linewidths=0.8)
        kind = dict(a.extra).get("nodule_type", "")
        ax.set_title(f"{a.diameter_mm:.1f} mm {kind}  (slices {sz:g} mm)", fontsize=8)
    fig.suptitle(f"{dataset.name}: {idx.root}", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
