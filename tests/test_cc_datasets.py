"""LTCC, DeepChange and VC-Clothes: their name parsers, hand-made trees, the synthetic trees
and the checker; and the clothes keys every clothes-labelled dataset keeps beside its splits."""

import os
import re
import shutil

from lastreid.datasets import DatasetLayoutError, build_dataset, synthetic
from lastreid.datasets.check import check_dataset
from lastreid.datasets.deepchange import parse_deepchange_name
from lastreid.datasets.ltcc import parse_ltcc_name
from lastreid.datasets.vcclothes import parse_vcclothes_name

import pytest
from fastreid.data.datasets import DATASET_REGISTRY

from conftest import load_tool

# Registry name -> (generator dataset, its splits giving train, query, gallery).
SPLITS = {
    "LTCC": ("ltcc", "train", "query", "test"),
    "DeepChange": ("deepchange", "train-set", "test-set-query", "test-set-gallery"),
    "DeepChangeVal": ("deepchange", None, "val-set-query", "val-set-gallery"),
    "VCClothes": ("vcclothes", "train", "query", "gallery"),
    "VCClothesSameClothes": ("vcclothes", None, "query", "gallery"),
    "VCClothesClothesChanging": ("vcclothes", None, "query", "gallery"),
}
FOLDERS = {"ltcc": "LTCC_ReID", "deepchange": "DeepChangeDataset", "vcclothes": "VC-Clothes"}
VC_CAMERAS = {  # the cameras (1..4) each VC-Clothes test set keeps, as documented
    "VCClothes": {1, 2, 3, 4},
    "VCClothesSameClothes": {2, 3},
    "VCClothesClothesChanging": {3, 4},
}


def expected_item(name, path):
    """(pid, camera, clothes key) read from a file name with the documented patterns,
    written out here apart from the dataset modules."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if name.startswith("LTCC"):
        pid, clothes, cam = re.match(r"(\d+)_(\d+)_c(\d+)_", stem).groups()
        return int(pid), int(cam), f"{pid}_{clothes}"
    if name.startswith("DeepChange"):
        fields = stem.split("_")
        return int(fields[0][1:]), int(fields[1][1:]), fields[0] + "_" + fields[2]
    pid, cam, clothes, _ = stem.split("-")
    return int(pid), int(cam), f"{pid}-{clothes}"


@pytest.fixture(scope="module")
def cc_root(module_tmp):
    root = module_tmp.mktemp("cc")
    synthetic.write_all(str(root), preset="tiny", seed=0, datasets=synthetic.CC_DATASETS)
    return root


@pytest.fixture(scope="module")
def built(cc_root):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build_dataset(name, root=str(cc_root))
        return cache[name]

    return get


def tracklets_of(root, split):
    """{file name: tracklet id} of a DeepChange list, read here line by line."""
    path = os.path.join(str(root), "DeepChangeDataset", f"{split}-bbox.txt")
    with open(path) as f:
        return {line.split(",")[0]: int(line.split(",")[1]) for line in f if line.strip()}


# Name parsers ------------------------------------------------------------------------------


def test_parsers_on_hand_written_names():
    assert parse_ltcc_name("/d/001_1_c11_015861.png") == (1, 10, "001_1")
    assert parse_ltcc_name("152_3_c1_000002.png") == (152, 0, "152_3")
    assert parse_vcclothes_name("/d/0001-02-01-03.jpg") == (1, 2, "0001-01")
    assert parse_vcclothes_name("0512-04-03-120.jpg") == (512, 4, "0512-03")
    assert parse_deepchange_name("/d/P0012_C05_D017_F000123.jpg") == (12, 5, "P0012_D017")
    assert parse_deepchange_name("P1121_C17_x_y_z_w.jpg") == (1121, 17, "P1121_x")


@pytest.mark.parametrize(
    "parse, bad_name",
    [
        (parse_ltcc_name, "001_1_c13_015861.png"),  # camera 13 of 12
        (parse_ltcc_name, "001_1_11_015861.png"),
        (parse_ltcc_name, "x01_1_c11_015861.png"),
        (parse_vcclothes_name, "0001-05-01-03.jpg"),  # camera 5 of 4
        (parse_vcclothes_name, "0001_02_01_03.jpg"),
        (parse_deepchange_name, "0012_C05_D017_F1.jpg"),
        (parse_deepchange_name, "P0012_C18_D017_F1.jpg"),  # camera 18 of 17
        (parse_deepchange_name, "P0012_C05.jpg"),
        (parse_deepchange_name, "P00x2_C05_D017.jpg"),
    ],
)
def test_parsers_reject_bad_names_in_one_line(parse, bad_name):
    with pytest.raises(DatasetLayoutError) as error:
        parse(f"/data/{bad_name}")
    message = str(error.value)
    assert f"/data/{bad_name}" in message and "expected" in message and "\n" not in message


# Hand-made trees ---------------------------------------------------------------------------


def touch(root, *relpaths):
    for relpath in relpaths:
        path = os.path.join(str(root), relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()


def write_lists(root, lists):
    for split, lines in lists.items():
        touch(root, *[f"DeepChangeDataset/{split}/{line.split(',')[0]}" for line in lines])
        with open(os.path.join(str(root), "DeepChangeDataset", f"{split}-bbox.txt"), "w") as f:
            f.write("".join(line + "\n" for line in lines))


def deepchange_tree(root, **replace):
    lists = {
        "train-set": ["P0003_C02_D010_F1.jpg,7", "P0003_C04_D011_F2.jpg,8"],
        "val-set-query": ["P0005_C01_D001_F1.jpg,20"],
        "val-set-gallery": ["P0005_C01_D002_F2.jpg,21"],
        "test-set-query": ["P0009_C06_D100_F1.jpg,30"],
        "test-set-gallery": ["P0009_C06_D100_F5.jpg,31", "P0009_C07_D200_F6.jpg,32"],
    }
    lists.update(replace)
    write_lists(root, lists)


def test_hand_made_trees(tmp_path):
    touch(
        tmp_path,
        "LTCC_ReID/train/001_1_c11_015861.png",
        "LTCC_ReID/train/001_2_c3_015900.png",
        "LTCC_ReID/query/002_1_c1_000010.png",
        "LTCC_ReID/test/002_2_c12_000020.png",
        "VC-Clothes/train/0001-02-01-01.jpg",
        "VC-Clothes/query/0002-02-01-01.jpg",
        "VC-Clothes/query/0002-04-02-02.jpg",
        "VC-Clothes/gallery/0002-03-01-03.jpg",
        "VC-Clothes/gallery/0002-01-03-04.jpg",
    )
    deepchange_tree(tmp_path)
    root = str(tmp_path)
    ltcc = build_dataset("LTCC", root=root)
    assert [item[1:] for item in ltcc.train] == [("LTCC_1", "LTCC_10"), ("LTCC_1", "LTCC_2")]
    assert ltcc.train_clothes == ["001_1", "001_2"]
    assert [item[1:] for item in ltcc.query + ltcc.gallery] == [(2, 0), (2, 11)]
    assert ltcc.query_clothes == ["002_1"] and ltcc.gallery_clothes == ["002_2"]

    deep = build_dataset("DeepChange", root=root)
    assert [item[1:] for item in deep.train] == [
        ("DeepChange_3", "DeepChange_2"),
        ("DeepChange_3", "DeepChange_4"),
    ]
    assert deep.train_clothes == ["P0003_D010", "P0003_D011"]
    # The tracklet id is the camid: the gallery image from camera 6 stays a true match.
    assert [item[1:] for item in deep.query] == [(9, 30)]
    assert [item[1:] for item in deep.gallery] == [(9, 31), (9, 32)]
    assert deep.gallery_clothes == ["P0009_D100", "P0009_D200"]
    val = build_dataset("DeepChangeVal", root=root)
    assert val.train == [] and val.train_clothes == []
    assert [item[1:] for item in val.query + val.gallery] == [(5, 20), (5, 21)]

    vc = build_dataset("VCClothes", root=root)
    assert [item[1:] for item in vc.train] == [("VCClothes_1", "VCClothes_1")]
    assert [item[1:] for item in vc.query] == [(2, 1), (2, 3)]
    assert vc.query_clothes == ["0002-01", "0002-02"]
    same = build_dataset("VCClothesSameClothes", root=root)
    assert [item[1:] for item in same.query + same.gallery] == [(2, 1), (2, 2)]
    assert same.query_clothes == same.gallery_clothes == ["0002-01"]
    changing = build_dataset("VCClothesClothesChanging", root=root)
    assert [item[1:] for item in changing.query + changing.gallery] == [(2, 3), (2, 2)]
    assert changing.query_clothes == ["0002-02"] and changing.gallery_clothes == ["0002-01"]


def expect_layout_error(where, build):
    with pytest.raises(DatasetLayoutError) as error:
        build()
    message = str(error.value)
    assert str(where) in message and "expected" in message and "\n" not in message


def test_bad_names_and_lists_are_one_line_errors(tmp_path):
    touch(
        tmp_path,
        "LTCC_ReID/train/001_1_c11_015861.png",
        "LTCC_ReID/query/002_1_c1_000010.png",
        "LTCC_ReID/test/002-2-c12-000020.png",
        "VC-Clothes/train/0001-02-01-01.jpg",
        "VC-Clothes/query/0002-01-01-01.jpg",
        "VC-Clothes/gallery/0002-01-01-02.jpg",
    )
    root = str(tmp_path)
    expect_layout_error(
        tmp_path / "LTCC_ReID" / "test" / "002-2-c12-000020.png",
        lambda: build_dataset("LTCC", root=root),
    )
    # No camera 2 or 3 image in query/: a one-line error naming the folder.
    expect_layout_error(
        tmp_path / "VC-Clothes" / "query", lambda: build_dataset("VCClothesSameClothes", root=root)
    )

    deepchange_tree(tmp_path, **{"test-set-query": ["P0009_C06_D100_F1.jpg 30"]})
    listed = tmp_path / "DeepChangeDataset" / "test-set-query-bbox.txt"
    expect_layout_error(f"{listed}:1", lambda: build_dataset("DeepChange", root=root))
    deepchange_tree(tmp_path, **{"test-set-query": ["9_C06_D100_F1.jpg,30"]})
    expect_layout_error(
        tmp_path / "DeepChangeDataset" / "test-set-query" / "9_C06_D100_F1.jpg",
        lambda: build_dataset("DeepChange", root=root),
    )
    deepchange_tree(tmp_path)
    with open(listed, "a") as f:
        f.write("P0009_C06_D100_F9.jpg,33\n")  # listed, never written
    expect_layout_error(
        tmp_path / "DeepChangeDataset" / "test-set-query" / "P0009_C06_D100_F9.jpg",
        lambda: build_dataset("DeepChange", root=root),
    )
    os.remove(listed)
    expect_layout_error(listed, lambda: build_dataset("DeepChange", root=root))


# Synthetic trees ---------------------------------------------------------------------------


def test_tiny_trees_are_small(cc_root):
    counts = synthetic.read_counts(str(cc_root))
    assert set(counts) == set(synthetic.CC_DATASETS)
    total = sum(c["images"] for splits in counts.values() for c in splits.values())
    assert total <= 300


@pytest.mark.parametrize("name", list(SPLITS))
def test_synthetic_items_follow_their_file_names(name, built, cc_root):
    dataset, train_split, query_split, gallery_split = SPLITS[name]
    data = built(name)
    counts = synthetic.read_counts(str(cc_root))[dataset]
    assert data.HAS_CLOTHES is True
    cameras = VC_CAMERAS.get(name)
    for items, clothes, split in (
        (data.train, data.train_clothes, train_split),
        (data.query, data.query_clothes, query_split),
        (data.gallery, data.gallery_clothes, gallery_split),
    ):
        assert len(clothes) == len(items)
        if split is None:
            assert items == []
            continue
        folder = os.path.join(str(cc_root), FOLDERS[dataset], split)
        names = sorted(os.listdir(folder))
        if cameras is not None and split != "train":  # the camera-pair test sets filter
            names = [n for n in names if expected_item(name, n)[1] in cameras]
        else:
            assert len(items) == counts[split]["images"]
        assert sorted(os.path.basename(path) for path, _, _ in items) == names
        tracklets = tracklets_of(cc_root, split) if dataset == "deepchange" else None
        for (path, pid, camid), key in zip(items, clothes):
            true_pid, camera, true_key = expected_item(name, path)
            assert key == true_key
            if split == train_split:  # DeepChange keeps the camera number itself
                camera -= 0 if dataset == "deepchange" else 1
                assert (pid, camid) == (f"{name}_{true_pid}", f"{name}_{camera}")
            elif dataset == "deepchange":
                assert (pid, camid) == (true_pid, tracklets[os.path.basename(path)])
            else:
                assert (pid, camid) == (true_pid, camera - 1)


def test_combineall_keeps_train_clothes_parallel(cc_root):
    for name in ("LTCC", "DeepChange", "VCClothes"):
        data = build_dataset(name, root=str(cc_root), combineall=True)
        assert len(data.train_clothes) == len(data.train)
        assert data.train_clothes[-len(data.gallery) :] == data.gallery_clothes


def positives(query_item, query_key, data, camera_of):
    """Gallery items of the query's person on another camera, split by same / other clothes."""
    path, pid, _ = query_item
    same, other = [], []
    for (g_path, g_pid, _), g_key in zip(data.gallery, data.gallery_clothes):
        if g_pid == pid and camera_of(g_path) != camera_of(path):
            (same if g_key == query_key else other).append(g_path)
    return same, other


@pytest.mark.parametrize("name", ["LTCC", "VCClothes", "DeepChange"])
def test_every_query_has_a_clothes_changing_true_match(name, built):
    data = built(name)
    for item, key in zip(data.query, data.query_clothes):
        _, other = positives(item, key, data, lambda p: expected_item(name, p)[1])
        assert other, item


def test_vcclothes_camera_pair_sets_have_true_matches(built):
    def camera(path):
        return expected_item("VCClothes", path)[1]

    same_set, changing_set = built("VCClothesSameClothes"), built("VCClothesClothesChanging")
    for item, key in zip(same_set.query, same_set.query_clothes):
        assert positives(item, key, same_set, camera)[0], item  # cameras 2, 3: same clothes
    for item, key in zip(changing_set.query, changing_set.query_clothes):
        assert positives(item, key, changing_set, camera)[1], item  # cameras 3, 4: other clothes


def test_deepchange_tracklets_keep_same_camera_matches(built):
    data = built("DeepChange")
    kept = 0
    for path, pid, tracklet in data.query:
        camera = expected_item("DeepChange", path)[1]
        for g_path, g_pid, g_tracklet in data.gallery:
            if g_pid == pid and expected_item("DeepChange", g_path)[1] == camera:
                assert g_tracklet != tracklet  # not dropped by the same-pid-same-camid filter
                kept += 1
    assert kept >= len({pid for _, pid, _ in data.query})


@pytest.mark.parametrize("name", list(SPLITS))
def test_check_dataset_counts_the_clothes(name, cc_root):
    report = check_dataset(name, str(cc_root), decode=True, progress=False)
    assert report.problems(strict=True) == 0, report.format()
    dataset = SPLITS[name][0]
    for split in report.splits:
        folder = os.path.join(str(cc_root), FOLDERS[dataset], split.split)
        keys = {expected_item(name, n)[2] for n in os.listdir(folder)}
        assert split.clothes == len(keys) and split.images == len(os.listdir(folder))
        assert f"    {len(keys)} clothes (person x outfit), expected {len(keys)}  ok" in (
            report.format()
        )


def test_check_dataset_reports_each_bad_list_line(cc_root, tmp_path):
    shutil.copytree(cc_root / "DeepChangeDataset", tmp_path / "DeepChangeDataset")
    listed = tmp_path / "DeepChangeDataset" / "test-set-query-bbox.txt"
    with open(listed, "a") as f:
        f.write("no tracklet here.jpg\nP0001_C01_D001_F9.jpg,5\n")
    report = check_dataset("DeepChange", str(tmp_path), decode=False, progress=False)
    n_lines = sum(1 for line in open(listed) if line.strip())
    bad = [where for where, _ in report.bad_names]
    missing = listed.parent / "test-set-query" / "P0001_C01_D001_F9.jpg"
    assert bad == [f"{listed}:{n_lines - 1}", str(missing)]
    assert report.problems() == 2


def test_clothes_labels_are_declared():
    for name in ("LaST", "LaSTVal", "LaSTClothes", "PRCC", "PRCCSameClothes", *SPLITS):
        assert DATASET_REGISTRY.get(name).HAS_CLOTHES is True, name
    for name in ("CelebReID", "Market1501", "DukeMTMC", "MSMT17"):
        assert not getattr(DATASET_REGISTRY.get(name), "HAS_CLOTHES", False), name


def test_make_synthetic_data_writes_them(tmp_path, capsys):
    argv = ["--root", str(tmp_path), "--preset", "tiny", "--datasets", "deepchange"]
    load_tool("make_synthetic_data").main(argv + ["--val-ids", "2"])
    counts = synthetic.read_counts(str(tmp_path))
    assert list(counts) == ["deepchange"] and counts["deepchange"]["val-set-query"]["ids"] == 2
    assert capsys.readouterr().out.startswith("deepchange: ")
    with pytest.raises(ValueError, match="max_outfits"):
        synthetic.write_ltcc(str(tmp_path), max_outfits=1)


def test_same_seed_same_files(tmp_path):
    def files(root):
        found = {}
        for parent, _, names in os.walk(root):
            for name in names:
                with open(os.path.join(parent, name), "rb") as f:
                    found[os.path.relpath(os.path.join(parent, name), root)] = f.read()
        return found

    sizes = dict(train_ids=2, val_ids=1, test_ids=2)
    for seed, folder in ((3, "a"), (3, "b"), (4, "c")):
        synthetic.write_deepchange(str(tmp_path / folder), seed=seed, **sizes)
    first = files(tmp_path / "a")
    assert "DeepChangeDataset/test-set-gallery-bbox.txt" in first
    assert first == files(tmp_path / "b") and first != files(tmp_path / "c")
