"""The LUNA16 reader on tiny LUNA16-format trees written here with SimpleITK.

Scans have a flipped x axis (direction diag(-1, 1, 1)), anisotropic spacing and a non-zero
origin, so a nodule written at a known world coordinate only lands where expected if every
world ↔ voxel step honours all three.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from wsbench.builtins.datasets import Luna16Dataset
from wsbench.data.intensity import hu_to_norm
from wsbench.data.luna16 import Luna16Index, read_scan, subset_numbers, voxel_to_world, world_to_voxel
from wsbench.data.types import Geometry
from wsbench.errors import DataError, OptionError, WsbenchError

SPACING = (0.7, 0.8, 2.0)  # x, y, z mm
SIZE = (72, 64, 30)  # x, y, z voxels
DIRECTION = (-1, 0, 0, 0, 1, 0, 0, 0, 1)  # x flipped
GEO = Geometry(size=16, spacing_mm=1.0, max_offset_vox=3)
NODULE_HU = 200.0  # brighter than the 30 HU body wall, so only a nodule exceeds WALL_MAX
WALL_MAX = float(hu_to_norm(np.array([115.0]))[0])
HALF = float(hu_to_norm(np.array([(NODULE_HU - 850.0) / 2]))[0])  # half-way lung → nodule, normalised


def make_image(origin, nodules, dtype=np.int16, direction=DIRECTION, spacing=SPACING, size=SIZE):
    """A chest-like phantom: air outside, a body, a lung, and balls of ``(world xyz, diameter)``."""
    nx, ny, nz = size
    hu = np.full((nz, ny, nx), -1000.0, np.float32)
    hu[:, 4:-4, 4:-4] = 30.0  # body wall
    hu[1:-1, 8:-8, 8:-8] = -850.0  # lung (air not touching the border)
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    world = world_grid(img)
    for xyz, d in nodules:
        hu[((world - np.asarray(xyz)) ** 2).sum(-1) <= (d / 2) ** 2] = NODULE_HU
    out = sitk.GetImageFromArray(hu.astype(dtype))
    out.CopyInformation(img)
    return out


def world_grid(img):
    """World (x, y, z) of every voxel, (z, y, x, 3), computed independently of wsbench."""
    nx, ny, nz = img.GetSize()
    zz, yy, xx = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    d = np.array(img.GetDirection()).reshape(3, 3)
    ijk = np.stack([xx, yy, zz], -1) * np.array(img.GetSpacing())
    return np.array(img.GetOrigin()) + ijk @ d.T


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def centre_of_voxel(img, zyx):
    return tuple(img.TransformIndexToPhysicalPoint(tuple(int(v) for v in zyx[::-1])))


def write_tree(root: Path, n_scans=4, subsets=True, flat_extra=False):
    """``n_scans`` scans in subset0..n-1 (or flat), one 6 mm nodule each at a voxel centre."""
    root.mkdir(parents=True, exist_ok=True)
    ann, cand, truth = [], [], {}
    for i in range(n_scans):
        uid = f"1.2.3.{i}"
        folder = root / f"subset{i}" if subsets else root
        folder.mkdir(exist_ok=True)
        origin = (100.0 + i, -50.0, -300.0 + 5 * i)
        probe = make_image(origin, [])
        zyx = (12 + i, 30, 40 - i)
        xyz = centre_of_voxel(probe, zyx)
        img = make_image(origin, [(xyz, 6.0)])
        sitk.WriteImage(img, str(folder / f"{uid}.mhd"))
        ann.append([uid, *xyz, 6.0])
        truth[uid] = (zyx, xyz)
        # a class-1 candidate at the nodule, class-0 candidates in the lung far from it
        cand.append([uid, *xyz, 1])
        for zz, yy, xx in [(5, 14, 14), (24, 50, 60), (6, 50, 14)]:
            cand.append([uid, *centre_of_voxel(probe, (zz, yy, xx)), 0])
    write_csv(root / "annotations.csv", ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"], ann)
    write_csv(root / "candidates_V2.csv", ["seriesuid", "coordX", "coordY", "coordZ", "class"], cand)
    return truth


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "luna"
    truth = write_tree(root)
    return root, truth


def dataset(root, **opts):
    base = {"data_dir": str(root), "masks": "sphere", "train_subsets": "0-1", "validation_subsets": "2",
            "test_subsets": "3", "positives_per_nodule": 2, "negatives_per_scan": 4}
    base.update(opts)
    return Luna16Dataset(base)


def test_world_to_voxel_honours_flip_origin_spacing(tree):
    root, truth = tree
    idx = Luna16Index.scan(root)
    for uid, (zyx, xyz) in truth.items():
        img, warn = read_scan(idx.scans[uid])
        assert warn is None
        got = world_to_voxel(img, xyz)
        np.testing.assert_allclose(got, zyx, atol=1e-6)
        np.testing.assert_allclose(voxel_to_world(img, got), xyz, atol=1e-6)
        # the flipped x axis: world x decreases with voxel x
        assert voxel_to_world(img, (0, 0, 1))[0] < voxel_to_world(img, (0, 0, 0))[0]
        # the written nodule really is at that voxel
        arr = sitk.GetArrayFromImage(img)
        assert arr[tuple(zyx)] == NODULE_HU


def test_cases_mask_centroid_and_image_agree(tree):
    root, truth = tree
    ds = dataset(root)
    ds.prepare(GEO)
    for split, uid in (("validation", "1.2.3.2"), ("test", "1.2.3.3")):
        cases = list(ds.cases(split, GEO))
        assert [c.case_id for c in cases] == [f"{uid}:0"]
        c = cases[0]
        assert c.image.shape == GEO.shape and c.mask.shape == GEO.shape and c.mask.dtype == bool
        assert c.spacing == GEO.spacing
        assert c.info["seriesuid"] == uid and c.info["diameter_mm"] == 6.0
        centroid = np.argwhere(c.mask).mean(0)
        assert np.all(np.abs(centroid - np.array(c.info["centre_vox"])) <= 1.0), (centroid, c.info)
        # the bright voxels of the image (the nodule written into the CT) coincide with the mask
        # (half-way between lung and nodule HU: the image's own 0.5-fraction level)
        bright = c.image > HALF
        dice = 2 * (bright & c.mask).sum() / (bright.sum() + c.mask.sum())
        assert dice > 0.8, dice
        vol = c.mask.sum() * 1.0
        assert 0.6 * np.pi / 6 * 6 ** 3 < vol < 1.5 * np.pi / 6 * 6 ** 3
        assert max(abs(v) for v in c.info["offset_vox"]) <= GEO.max_offset_vox


def test_offsets_are_seeded_and_vary(tmp_path):
    root = tmp_path / "t"
    write_tree(root, n_scans=8, subsets=False)
    geo = Geometry(size=16, spacing_mm=1.0, max_offset_vox=3)
    a = dataset(root, split_fractions=(0.0, 0.0, 1.0))
    a.prepare(geo)
    offs = [tuple(c.info["offset_vox"]) for c in a.cases("test", geo)]
    assert len(offs) == 8 and len(set(offs)) > 1
    b = dataset(root, split_fractions=(0.0, 0.0, 1.0))
    b.prepare(geo)
    assert offs == [tuple(c.info["offset_vox"]) for c in b.cases("test", geo)]


def test_training_view_labels_and_margins(tree):
    root, truth = tree
    ds = dataset(root)
    ds.prepare(GEO)
    ps = ds.training_patches("train", GEO)
    assert ps.images.shape[1:] == GEO.shape and ps.images.dtype == np.float32
    assert set(ps.groups) == {"1.2.3.0", "1.2.3.1"}
    pos = ps.labels == 1
    assert pos.sum() == 2 * 2 and (~pos).sum() == 2 * 4
    assert not hasattr(ps, "masks")
    # positives contain the bright nodule, negatives do not
    for img, lab in zip(ps.images, ps.labels):
        assert ((img > WALL_MAX).sum() > 5) == bool(lab)
    assert any(":cand:" in i for i in ps.ids) and any(":lung:" in i for i in ps.ids)
    val = ds.training_patches("validation", GEO)
    assert set(val.groups) == {"1.2.3.2"}
    info = ds.split_info()
    assert info["scans"] == {"train": 2, "validation": 1, "test": 1}
    assert info["cases"] == {"validation": 1, "test": 1}
    with pytest.raises(WsbenchError):
        list(ds.cases("train", GEO))


def test_second_prepare_reads_no_volume(tree, monkeypatch):
    root, _ = tree
    first = dataset(root)
    first.prepare(GEO)
    cases1 = list(first.cases("test", GEO))
    train1 = first.training_patches("train", GEO)

    def boom(*a, **k):
        raise AssertionError("volume read on a cached prepare")

    monkeypatch.setattr(sitk, "ReadImage", boom)
    second = dataset(root)
    assert second.fingerprint() == first.fingerprint()
    second.prepare(GEO)
    cases2 = list(second.cases("test", GEO))
    np.testing.assert_array_equal(cases1[0].image, cases2[0].image)
    np.testing.assert_array_equal(cases1[0].mask, cases2[0].mask)
    np.testing.assert_array_equal(train1.images, second.training_patches("train", GEO).images)
    # a damaged cache entry is rebuilt, not trusted
    monkeypatch.undo()
    (second._cache.dir / "meta.json").write_text("{not json")
    third = dataset(root)
    third.prepare(GEO)
    np.testing.assert_array_equal(list(third.cases("test", GEO))[0].image, cases1[0].image)
    monkeypatch.setattr(sitk, "ReadImage", boom)
    # a different geometry is a different cache entry: it must read volumes again
    with pytest.raises(AssertionError, match="volume read"):
        dataset(root).prepare(Geometry(size=12, spacing_mm=1.0, max_offset_vox=2))


def test_fingerprint_changes_with_csv(tree):
    root, _ = tree
    fp = dataset(root).fingerprint()
    with open(root / "annotations.csv", "a") as f:
        f.write("1.2.3.0,1,2,3,4\n")
    assert dataset(root).fingerprint() != fp
    assert dataset(root, masks="lidc").fingerprint() != dataset(root).fingerprint()
    # without a masks/ folder, "auto" means the LIDC-IDRI outlines
    assert dataset(root, masks="auto").fingerprint() == dataset(root, masks="lidc").fingerprint()


def test_mask_folder_binary_and_labels(tree, tmp_path):
    root, truth = tree
    mdir = root / "masks"  # the tree's own masks, as the synthetic set ships them
    mdir.mkdir()
    idx = Luna16Index.scan(root)
    for n, uid in enumerate(sorted(truth)):
        img, _ = read_scan(idx.scans[uid])
        zyx, xyz = truth[uid]
        lab = (((world_grid(img) - np.asarray(xyz)) ** 2).sum(-1) <= 3.0 ** 2).astype(np.uint8)
        lab *= 1 if n % 2 == 0 else 7  # binary for some scans, a label value for others
        m = sitk.GetImageFromArray(lab)
        m.CopyInformation(img)
        sitk.WriteImage(m, str(mdir / f"{uid}.nii.gz" if n % 2 else mdir / f"{uid}.mhd"))
    ds = dataset(root, masks=str(mdir))
    # "auto" and a relative folder (looked up under the tree) pick the same masks
    assert dataset(root, masks="auto").fingerprint() == ds.fingerprint()
    assert dataset(root, masks="masks").fingerprint() == ds.fingerprint()
    ds.prepare(GEO)
    for split in ("validation", "test"):
        (c,) = list(ds.cases(split, GEO))
        assert c.info["mask_source"] == "dir"
        centroid = np.argwhere(c.mask).mean(0)
        assert np.all(np.abs(centroid - np.array(c.info["centre_vox"])) <= 1.0)


def test_bad_inputs_are_skipped_with_one_line(tmp_path):
    root = tmp_path / "bad"
    write_tree(root, n_scans=5)
    # a truncated .raw (subset4)
    raw = root / "subset4" / "1.2.3.4.raw"
    raw.write_bytes(raw.read_bytes()[:1000])
    # missing .raw in subset0, corrupt header in subset1
    (root / "subset0" / "1.2.3.0.raw").unlink()
    (root / "subset1" / "1.2.3.1.mhd").write_text("this is not a header\n")
    # NaN voxels in a float scan (subset2)
    p = root / "subset2" / "1.2.3.2.mhd"
    img = sitk.ReadImage(str(p))
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    arr[0, 0, :5] = np.nan
    f = sitk.GetImageFromArray(arr)
    f.CopyInformation(img)
    sitk.WriteImage(f, str(p))
    # unknown seriesuid, coordinate outside the volume, non-numeric row
    with open(root / "annotations.csv", "a") as fh:
        fh.write("9.9.9,1,2,3,5\n1.2.3.3,5000,0,0,5\n1.2.3.3,abc,0,0,5\n")
    ds = dataset(root, train_subsets="0-1", test_subsets="3-4")
    ds.prepare(GEO)
    lines = ds.skipped()
    text = "\n".join(lines)
    assert all("\n" not in ln for ln in lines)
    assert "1.2.3.0.raw is missing" in text
    assert "1.2.3.1.mhd: corrupt MetaImage header" in text
    assert "NaN" in text and "1.2.3.2.mhd" in text
    assert "1.2.3.4.mhd: 1.2.3.4.raw holds 1000 bytes" in text and "truncated" in text
    assert "annotations.csv:7: seriesuid 9.9.9" in text
    assert "annotations.csv:8:" in text and "outside" in text
    assert "annotations.csv:9:" in text and "not numbers" in text
    # the rest loads: validation and test scans still give their cases
    assert len(list(ds.cases("validation", GEO))) == 1
    assert len(list(ds.cases("test", GEO))) == 1
    assert ds.split_info()["scans"]["train"] == 0


def test_wrong_csv_columns(tmp_path):
    root = tmp_path / "cols"
    write_tree(root, n_scans=4)
    write_csv(root / "candidates_V2.csv", ["seriesuid", "x", "y", "z", "label"], [["1.2.3.0", 1, 2, 3, 0]])
    ds = dataset(root)
    ds.prepare(GEO)
    assert any("candidates_V2.csv: missing column(s) coordX" in s for s in ds.skipped())
    assert len(ds.training_patches("train", GEO)) > 0  # negatives from lung positions only
    write_csv(root / "annotations.csv", ["uid", "coordX", "coordY", "coordZ", "diam"], [])
    with pytest.raises(DataError, match=r"annotations.csv: missing column\(s\) seriesuid, diameter_mm"):
        dataset(root).prepare(GEO)


def test_options_and_errors(tmp_path):
    with pytest.raises(WsbenchError, match="--data-dir"):
        Luna16Dataset({}).prepare(GEO)
    with pytest.raises(OptionError):
        Luna16Dataset({"train_subsets": "0-7", "validation_subsets": "7"})
    with pytest.raises(OptionError):
        Luna16Dataset({"train_subsets": "zero"})
    with pytest.raises(DataError, match="does not exist"):
        Luna16Dataset({"data_dir": str(tmp_path / "nope")}).prepare(GEO)
    with pytest.raises(WsbenchError, match="masks="):
        Luna16Dataset({"data_dir": str(tmp_path), "masks": str(tmp_path / "none")}).mask_source()
    assert subset_numbers("0,2,4-5") == [0, 2, 4, 5]


def test_flat_folder_split_is_by_scan(tmp_path):
    root = tmp_path / "flat"
    write_tree(root, n_scans=6, subsets=False)
    ds = dataset(root, split_fractions=(0.5, 0.2, 0.3))
    ds.prepare(GEO)
    splits = ds.assign_splits()
    assert sorted(splits) == [f"1.2.3.{i}" for i in range(6)]
    groups = {s: {u for u, v in splits.items() if v == s} for s in ("train", "validation", "test")}
    assert all(groups.values())
    train_groups = set(ds.training_patches("train", GEO).groups)
    assert train_groups == groups["train"]
    assert {c.info["seriesuid"] for c in ds.cases("test", GEO)} == groups["test"]
    assert "flat folder" in ds.split_info()["rule"]


def test_neighbouring_nodule_is_truth_too(tmp_path):
    from scipy import ndimage

    root = tmp_path / "pair"
    root.mkdir()
    origin = (20.0, 10.0, -40.0)
    probe = make_image(origin, [])
    a = centre_of_voxel(probe, (15, 32, 30))
    b = centre_of_voxel(probe, (15, 32, 42))  # 12 voxels * 0.7 mm = 8.4 mm away along x
    sitk.WriteImage(make_image(origin, [(a, 5.0), (b, 4.0)]), str(root / "9.8.7.mhd"))
    write_csv(root / "annotations.csv", ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"],
              [["9.8.7", *a, 5.0], ["9.8.7", *b, 4.0]])
    geo = Geometry(size=24, spacing_mm=1.0, max_offset_vox=2)  # both nodules always fit
    ds = dataset(root, split_fractions=(0.0, 0.0, 1.0))
    ds.prepare(geo)
    cases = list(ds.cases("test", geo))
    assert len(cases) == 2
    for c in cases:
        _, n = ndimage.label(c.mask)
        assert n == 2 and c.info["other_nodules_in_patch"] == 1
        bright = c.image > HALF
        assert 2 * (bright & c.mask).sum() / (bright.sum() + c.mask.sum()) > 0.8


def test_mask_folder_label_missing_the_centre(tmp_path):
    from wsbench.data.luna16 import Annotation
    from wsbench.data.masks import DirMasks

    img = make_image((0.0, 0.0, 0.0), [])
    zyx = (15, 32, 36)
    xyz = centre_of_voxel(img, zyx)
    r = np.sqrt(((world_grid(img) - np.asarray(xyz)) ** 2).sum(-1))
    lab = np.zeros(r.shape, np.uint8)
    lab[(r > 2.0) & (r <= 4.0)] = 5  # a hollow nodule: its centre voxel is background
    lab[(r > 9.0) & (r <= 10.5)] = 2  # another structure around it
    m = sitk.GetImageFromArray(lab)
    m.CopyInformation(img)
    sitk.WriteImage(m, str(tmp_path / "u.mhd"))
    masks, infos, notes = DirMasks(tmp_path).nodule_masks("u", img, [Annotation("u", xyz, 8.0, 2)])
    assert notes == [] and infos[0]["mask_source"] == "dir"
    np.testing.assert_array_equal(masks[0].paste(lab.shape), lab == 5)
