"""The synthetic LUNA16-format set: format, geometry, truth, realism, size mix, determinism."""

import csv
import filecmp
import json

import numpy as np
import pytest
import SimpleITK as sitk

from wsbench.data.synth import builder
from wsbench.data.synth.builder import DEFAULT_SCANS, build, deal_subsets, plan
from wsbench.data.synth.grid import ScanGrid
from wsbench.data.synth.scan import PARAMS, sample_grid
from wsbench.errors import WsbenchError


@pytest.fixture(scope="module")
def pool():
    """A small pool of real LIDC-IDRI outlines (rasterised in ~1 s, cached for the session)."""
    from wsbench.data.lidc import lidc_nodule_shapes

    return lidc_nodule_shapes(3, 30, limit=80, seed=0)


@pytest.fixture(scope="module")
def tree(tmp_path_factory, pool):
    root = tmp_path_factory.mktemp("synth") / "tree"
    return build(root, scans=4, seed=3, workers=1, shapes=pool)


def _read_csv(path):
    with open(path, newline="") as f:
        r = csv.reader(f)
        header = next(r)
        return header, list(r)


def _world(img, kji):
    return np.array(img.TransformContinuousIndexToPhysicalPoint([float(v) for v in kji[::-1]]))


def test_tree_has_luna16_layout(tree):
    man = json.loads((tree / "synth.json").read_text())
    assert man["version"] == builder.GENERATOR_VERSION and man["scans"] == 4 and man["seed"] == 3
    for i in range(10):
        assert (tree / f"subset{i}").is_dir()
    mhds = sorted(tree.glob("subset*/*.mhd"))
    assert len(mhds) == 4
    # seed 3 gives one scan stored head-first (direction z = -1): the mapping tests cover it
    assert sorted(sitk.ReadImage(str(m)).GetDirection()[8] for m in mhds) == [-1.0, 1.0, 1.0, 1.0]
    for mhd in mhds:
        uid = mhd.stem
        assert uid.startswith("1.3.6.1.4.1.14519.5.2.1.6279.6001.") and len(uid.split(".")[-1]) == 30
        header = mhd.read_text()
        assert f"ElementDataFile = {uid}.raw" in header and "ElementType = MET_SHORT" in header
        assert (mhd.parent / f"{uid}.raw").is_file()
        img = sitk.ReadImage(str(mhd))
        assert img.GetPixelID() == sitk.sitkInt16
        sx, sy, sz = img.GetSpacing()
        assert 0.6 <= sx == sy <= 1.0 and 0.6 <= sz <= 2.5
        lungs = sitk.ReadImage(str(tree / "seg-lungs-LUNA16" / f"{uid}.mhd"))
        assert set(np.unique(sitk.GetArrayViewFromImage(lungs))) == {0, 3, 4}
        for other in (lungs, sitk.ReadImage(str(tree / "masks" / f"{uid}.mhd"))):
            assert other.GetSize() == img.GetSize()
            assert np.allclose(other.GetOrigin(), img.GetOrigin()) and other.GetDirection() == img.GetDirection()
    header, rows = _read_csv(tree / "annotations.csv")
    assert header[:5] == ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
    assert header[5:] == ["texture", "nodule_type"]
    assert len(rows) == len(man["nodules"]) > 0
    header, rows = _read_csv(tree / "candidates_V2.csv")
    assert header == ["seriesuid", "coordX", "coordY", "coordZ", "class"]
    assert {r[4] for r in rows} == {"0", "1"}


def test_reader_reads_it_without_complaint(tree):
    from wsbench.data.luna16 import Luna16Index, inside_volume, read_scan

    idx = Luna16Index.scan(tree)
    assert idx.skipped == []
    assert not idx.flat and sorted(idx.scans) == sorted(p.stem for p in tree.glob("subset*/*.mhd"))
    for uid, anns in idx.annotations.items():
        image, warning = read_scan(idx.scans[uid])
        for a in anns:
            assert inside_volume(image, a.xyz, margin_vox=1.0)
            assert dict(a.extra)["nodule_type"] in ("solid", "part-solid", "ground-glass")


def test_mask_labels_follow_annotation_rows_and_centroids(tree):
    """Label k of masks/<uid>.mhd is the k-th annotations.csv row of the scan; its centroid,
    mapped to world mm by SimpleITK (not by the generator's own grid code), is the row's
    coordinate; every truth voxel lies in the lung mask."""
    _, rows = _read_csv(tree / "annotations.csv")
    by_uid = {}
    for r in rows:
        by_uid.setdefault(r[0], []).append(np.array([float(v) for v in r[1:4]]))
    assert by_uid
    for uid, coords in by_uid.items():
        m = sitk.ReadImage(str(tree / "masks" / f"{uid}.mhd"))
        arr = sitk.GetArrayFromImage(m)
        lungs = sitk.GetArrayFromImage(sitk.ReadImage(str(tree / "seg-lungs-LUNA16" / f"{uid}.mhd")))
        assert arr.max() == len(coords)
        assert np.all(lungs[arr > 0] > 0)
        for k, xyz in enumerate(coords, start=1):
            c = np.argwhere(arr == k).mean(axis=0)
            assert np.allclose(_world(m, c), xyz, atol=1e-3)


def test_flipped_direction_maps_like_itk():
    """The generator's world mapping agrees with SimpleITK's for a flipped z axis."""
    g = ScanGrid((7, 5, 6), (2.5, 0.8, 0.8), (-10.0, 20.0, -100.0), (1, 1, -1))
    img = sitk.Image(6, 5, 7, sitk.sitkInt16)
    img.SetSpacing((0.8, 0.8, 2.5))
    img.SetOrigin(g.origin)
    img.SetDirection(g.direction)
    for kji in [(0, 0, 0), (6, 4, 5), (3.5, 1.25, 2.0)]:
        assert np.allclose(g.to_world(np.array(kji)), _world(img, np.array(kji)))
        assert np.allclose(g.to_index(g.to_world(np.array(kji))), kji)
    z, y, x = g.axes()
    assert z[0] == -100.0 and z[-1] == pytest.approx(-115.0)


def test_intensities_look_like_ct(tree):
    man = json.loads((tree / "synth.json").read_text())
    for s in man["series"]:
        uid = s["seriesuid"]
        img = sitk.GetArrayFromImage(sitk.ReadImage(str(next(tree.glob(f"subset*/{uid}.mhd")))))
        lungs = sitk.GetArrayFromImage(sitk.ReadImage(str(tree / "seg-lungs-LUNA16" / f"{uid}.mhd")))
        masks = sitk.GetArrayFromImage(sitk.ReadImage(str(tree / "masks" / f"{uid}.mhd")))
        assert -900 <= np.median(img[(lungs > 0) & (masks == 0)]) <= -780
        corner = img[:, :3, :3]  # air (noisy) or the scanner's padding value
        assert np.median(corner) < -960 and np.all((corner < -750) | (corner == s["padding_value"]))
        body = img[:, img.shape[1] // 2, img.shape[2] // 2 - 5: img.shape[2] // 2 + 5]  # mediastinum
        assert np.median(body) > -150
        assert img.max() > 200  # bone
        for n in man["nodules"]:
            if n["seriesuid"] != uid or n["voxels"] < 30:
                continue
            mean = img[masks == n["label"]].mean()
            if n["nodule_type"] == "solid":
                assert mean > -350, n
            elif n["nodule_type"] == "ground-glass":
                assert -800 < mean < -250, n


def test_candidates_sit_where_they_should(tree):
    man = json.loads((tree / "synth.json").read_text())
    _, rows = _read_csv(tree / "candidates_V2.csv")
    nods = {}
    for n in man["nodules"]:
        nods.setdefault(n["seriesuid"], []).append(n)
    n0 = 0
    for uid, x, y, z, cls in rows:
        p = np.array([float(x), float(y), float(z)])
        d = [np.linalg.norm(p - np.array(n["coord_mm"])) - n["diameter_mm"] / 2 for n in nods.get(uid, [])]
        if cls == "1":
            assert d and min(d) < 0.0  # inside the nodule's radius
        else:
            n0 += 1
            assert not d or min(d) > 5.0
    assert n0 >= 4 * 20


def test_geometry_varies_between_scans():
    grids = [sample_grid(np.random.default_rng(i))[0] for i in range(200)]
    sz = np.array([g.spacing[0] for g in grids])
    sxy = np.array([g.spacing[2] for g in grids])
    assert sz.min() < 0.8 and sz.max() == 2.5 and len(set(sz)) >= 5
    assert 0.7 <= sxy.min() and sxy.max() <= 0.98 and sxy.std() > 0.03
    flips = [g.flip[2] for g in grids]
    assert 20 < flips.count(-1) < 80
    assert all(g.shape[0] <= PARAMS["max_slices"] and g.shape[2] == PARAMS["matrix"] for g in grids)
    assert np.ptp([g.origin[2] for g in grids]) > 100


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_size_has_enough_cases_and_a_luna16_size_mix(seed):
    from wsbench.data.lidc import lidc_nodule_shapes

    shapes = lidc_nodule_shapes(3, 30, limit=400, seed=0)
    jobs = plan(DEFAULT_SCANS, seed, shapes)
    per_subset = np.zeros(10, int)
    for j in jobs:
        per_subset[j["subset"]] += len(j["shapes"])
    assert per_subset[8] + per_subset[9] >= 25 and per_subset[7] >= 12
    assert np.bincount([j["subset"] for j in jobs], minlength=10).tolist() == [DEFAULT_SCANS // 10] * 10
    d = np.array([s.diameter_mm for j in jobs for s in j["shapes"]])
    assert d.min() >= 3 and d.max() <= 30 and d.max() > 15
    assert 0.5 <= np.mean(d < 10) <= 0.85  # LUNA16: most nodules under 10 mm
    types = [s.texture for j in jobs for s in j["shapes"]]
    assert sum(t <= 2 for t in types) >= 5 and sum(t == 3 for t in types) >= 3


def test_deal_subsets_balances_scans_and_nodules():
    counts = np.random.default_rng(0).integers(0, 7, 60)
    sub = deal_subsets(counts, np.random.default_rng(1))
    assert np.bincount(sub, minlength=10).tolist() == [6] * 10
    per = np.bincount(sub, weights=counts, minlength=10)
    assert per.max() - per.min() <= 6


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, pool):
    a = build(tmp_path / "a", scans=2, seed=11, workers=1, shapes=pool)
    b = build(tmp_path / "b", scans=2, seed=11, workers=2, shapes=pool)
    c = build(tmp_path / "c", scans=1, seed=12, workers=1, shapes=pool)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []
    assert (a / "annotations.csv").read_bytes() != (c / "annotations.csv").read_bytes()


def test_build_refuses_a_non_empty_folder(tmp_path, pool):
    (tmp_path / "x.txt").write_text("keep me")
    with pytest.raises(WsbenchError, match="not empty"):
        build(tmp_path, scans=1, shapes=pool)
    with pytest.raises(WsbenchError, match="at least 1"):
        build(tmp_path / "new", scans=0, shapes=pool)


def test_synth_dataset_builds_once_and_reads_through_the_reader(tmp_path, monkeypatch, pool):
    from wsbench import plugins
    from wsbench.data.synth import dataset as ds_mod
    from wsbench.data.types import Geometry

    monkeypatch.setattr(builder, "default_shapes", lambda progress=None: pool)
    monkeypatch.setenv("WSBENCH_CACHE", str(tmp_path / "cache"))
    cls = plugins.get("dataset", "luna16-synth").cls
    root = cls({"scans": 3, "seed": 5}).root()
    assert root.parent == tmp_path / "cache" / "synth" and root.name == ds_mod.tree_key(3, 5)
    assert not list(root.parent.glob(".tmp-*"))
    man = json.loads((root / "synth.json").read_text())
    used = sorted({s["subset"] for s in man["series"]})
    assert len(used) == 3
    # one scan per split, so that validation and test both have cases
    ds = cls({"scans": 3, "seed": 5, "train_subsets": str(used[0]), "validation_subsets": str(used[1]),
              "test_subsets": str(used[2])})
    geo = Geometry(size=24, spacing_mm=1.0, max_offset_vox=4)
    ds.prepare(geo)
    assert ds.root() == root
    n_eval = sum(1 for n in man["nodules"] if n["subset"] in used[1:])
    cases = list(ds.cases("validation", geo)) + list(ds.cases("test", geo))
    assert len(cases) == n_eval > 0
    for c in cases:
        assert c.image.shape == (24, 24, 24) and c.mask.any()
        assert c.info["nodule_type"] in ("solid", "part-solid", "ground-glass")
    assert ds.skipped() == []
    mtime = (root / "synth.json").stat().st_mtime_ns
    again = cls({"scans": 3, "seed": 5})
    assert again.root() == root and (root / "synth.json").stat().st_mtime_ns == mtime
    with pytest.raises(WsbenchError, match="scans 3"):
        cls({"scans": 4, "seed": 5, "data_dir": str(root)}).root()
    with pytest.raises(WsbenchError):
        cls({"masks": "lidc"})


@pytest.mark.parametrize("radius, spacing", [(0.4, (2.5, 0.8, 0.8)), (2.0, (1.0, 0.7, 0.7)), (3.0, (2.5, 0.9, 0.9))])
def test_tube_partial_volume_matches_the_capsule_volume(radius, spacing):
    """Rendered occupancy × voxel volume ≈ the analytic capsule volume π r² L + 4/3 π r³
    (thin tubes are splatted, thick ones drawn as capsules: both must conserve volume)."""
    from wsbench.data.synth.trees import Tubes, render_tubes

    g = ScanGrid((40, 80, 80), spacing, (-30.0, -30.0, -40.0))
    p0, p1 = np.array([[-12.0, -10.0, -20.0]]), np.array([[14.0, 9.0, -15.0]])
    t = Tubes(p0, p1, np.array([radius]), np.array([radius]), np.array([-1]))
    occ = render_tubes(g, t, np.zeros(g.shape, np.float32))
    L = np.linalg.norm(p1 - p0)
    expected = np.pi * radius ** 2 * L + (4 / 3 * np.pi * radius ** 3 if radius > 0.8 else 0.0)
    assert occ.max() <= 1.0
    assert occ.sum() * np.prod(spacing) == pytest.approx(expected, rel=0.08)


def test_nodule_occupancy_conserves_the_outline_volume(pool):
    """A rotated LIDC outline pasted with partial volume keeps its volume (±5 %) on an
    anisotropic grid, and its truth (fraction ≥ 0.5) keeps it within ±20 %."""
    from wsbench.data.synth.nodules import PlacedNodule, occupancy, prepare_shape, random_rotation

    rng = np.random.default_rng(0)
    big = [s for s in pool if s.diameter_mm > 8][:3]
    g = ScanGrid((40, 90, 90), (1.25, 0.75, 0.75), (-33.0, -33.0, -25.0), (1, 1, -1))
    for s in big:
        ps = prepare_shape(s, rng)
        nod = PlacedNodule(ps, np.array([0.5, -1.0, -50.0]), random_rotation(rng), "isolated", 40.0, -600.0)
        sl, f = occupancy(g, nod)
        vox = np.prod(g.spacing)
        assert f.sum() * vox == pytest.approx(s.volume_mm3, rel=0.05)
        assert (f >= 0.5).sum() * vox == pytest.approx(s.volume_mm3, rel=0.2)


def test_pick_spread_covers_the_size_range():
    from wsbench.data.preview import pick_spread

    d = [5.0, 30.0, 3.0, 12.0, 8.0, 4.0]
    assert [d[i] for i in pick_spread(d, 3)] == [3.0, 5.0, 30.0]  # sorted positions 0, 2, 5
    assert sorted(pick_spread(d, 10)) == list(range(6))
