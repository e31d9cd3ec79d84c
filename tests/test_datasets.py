"""The registered datasets, on the tiny synthetic tree and on small hand-made trees."""

import logging
import os

from lastreid.datasets import LASTREID_DATASETS, DatasetLayoutError, build_dataset, synthetic

import pytest
from fastreid.data.common import CommDataset
from fastreid.data.datasets import DATASET_REGISTRY

# Registry name -> (generator dataset, its split giving train, query, gallery).
SPLITS = {
    "LaST": ("last", "train", "test/query", "test/gallery"),
    "LaSTVal": ("last", None, "val/query", "val/gallery"),
    "LaSTClothes": ("last", "train", "test/query", "test/gallery"),
    "PRCC": ("prcc", "train", "test/C", "test/A"),
    "PRCCSameClothes": ("prcc", None, "test/B", "test/A"),
    "CelebReID": ("celebreid", "train", "query", "gallery"),
}
CAMERAS = {"A": 0, "B": 1, "C": 2}  # PRCC camids, as documented
WITH_TRAIN = [name for name, splits in SPLITS.items() if splits[1]]
WITHOUT_CAMERAS = ["LaST", "LaSTVal", "LaSTClothes", "CelebReID"]


@pytest.fixture(scope="module")
def counts(synthetic_root):
    return synthetic.read_counts(str(synthetic_root))


@pytest.fixture(scope="module")
def built(synthetic_root):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build_dataset(name, root=str(synthetic_root))
        return cache[name]

    return get


# Tested in test_cc_datasets.py, on their own synthetic trees.
CC_NAMES = (
    "LTCC",
    "DeepChange",
    "DeepChangeVal",
    "VCClothes",
    "VCClothesSameClothes",
    "VCClothesClothesChanging",
)


def test_all_names_registered():
    assert set(LASTREID_DATASETS) == set(SPLITS) | set(CC_NAMES)
    for name in LASTREID_DATASETS:
        assert DATASET_REGISTRY.get(name).__name__ == name


@pytest.mark.parametrize("name", list(SPLITS))
def test_split_sizes_match_generator(name, built, counts):
    dataset, train, query, gallery = SPLITS[name]
    data, expected = built(name), counts[dataset]
    for items, split in ((data.query, query), (data.gallery, gallery)):
        assert len(items) == expected[split]["images"]
        assert len({pid for _, pid, _ in items}) == expected[split]["ids"]
    if train is None:
        assert data.train == []
    else:
        assert len(data.train) == expected[train]["images"]
        # LaSTClothes has one class per (person, outfit).
        key = "outfits" if name == "LaSTClothes" else "ids"
        assert data.get_num_pids(data.train) == expected[train][key]


@pytest.mark.parametrize("name", WITH_TRAIN)
def test_train_labels_are_prefixed_and_relabel_to_a_range(name, built):
    data = built(name)
    prefix = data.dataset_name + "_"
    assert data.dataset_name == name
    assert all(
        str(pid).startswith(prefix) and str(cam).startswith(prefix) for _, pid, cam in data.train
    )
    comm = CommDataset(data.train, relabel=True)
    assert sorted(comm.pid_dict.values()) == list(range(comm.num_classes))
    assert sorted(comm.cam_dict.values()) == list(range(comm.num_cameras))
    sample = comm[len(data.train) - 1]
    assert 0 <= sample["targets"] < comm.num_classes
    assert sample["img_paths"] == data.train[-1][0]


def test_prefixes_keep_datasets_apart_when_combined(built):
    trains = [built(name).train for name in ("LaST", "PRCC", "CelebReID")]
    combined = CommDataset([item for train in trains for item in train], relabel=True)
    assert combined.num_classes == sum(len({pid for _, pid, _ in t}) for t in trains)


@pytest.mark.parametrize("name", WITHOUT_CAMERAS)
def test_every_test_image_has_its_own_camid(name, built):
    data = built(name)
    n_query = len(data.query)
    assert [cam for _, _, cam in data.query] == list(range(n_query))
    assert [cam for _, _, cam in data.gallery] == list(range(n_query, n_query + len(data.gallery)))
    assert all(type(pid) is int for _, pid, _ in data.query + data.gallery)


@pytest.mark.parametrize("name", ["LaST", "LaSTVal", "LaSTClothes"])
def test_last_items_follow_their_file_names(name, built):
    data = built(name)
    for items, clothes in (
        (data.train, data.train_clothes),
        (data.query, data.query_clothes),
        (data.gallery, data.gallery_clothes),
    ):
        assert len(clothes) == len(items)
        for (path, pid, _), key in zip(items, clothes):
            fields = os.path.basename(path)[:-4].split("_")
            assert key == f"{fields[0]}_{fields[5]}"
            if items is data.train:
                expected = key if name == "LaSTClothes" else int(fields[0])
                assert pid == f"{name}_{expected}"
            else:
                assert pid == int(fields[0])


def test_last_query_and_gallery_folders(built, synthetic_root):
    for name, split in (("LaST", "test"), ("LaSTVal", "val")):
        data = built(name)
        base = os.path.join(str(synthetic_root), "last", split)
        assert all(os.path.dirname(p) == os.path.join(base, "query") for p, _, _ in data.query)
        # Gallery images sit one folder below gallery/.
        assert all(
            os.path.dirname(os.path.dirname(p)) == os.path.join(base, "gallery")
            for p, _, _ in data.gallery
        )


def test_prcc_train_camids_come_from_the_name_prefix(built):
    data = built("PRCC")
    for (path, pid, cam), clothes in zip(data.train, data.train_clothes):
        letter = os.path.basename(path)[0]
        assert cam == f"PRCC_{CAMERAS[letter]}"
        assert pid == "PRCC_" + str(int(os.path.basename(os.path.dirname(path))))
        assert clothes.endswith("_1" if letter == "C" else "_0")


@pytest.mark.parametrize(
    "name, query_cam, gallery_cam", [("PRCC", "C", "A"), ("PRCCSameClothes", "B", "A")]
)
def test_prcc_test_splits_come_from_camera_folders(
    name, query_cam, gallery_cam, built, synthetic_root
):
    data = built(name)
    test_dir = os.path.join(str(synthetic_root), "prcc", "rgb", "test")
    for items, cam in ((data.query, query_cam), (data.gallery, gallery_cam)):
        for path, pid, camid in items:
            assert camid == CAMERAS[cam]
            assert os.path.dirname(os.path.dirname(path)) == os.path.join(test_dir, cam)
            assert pid == int(os.path.basename(os.path.dirname(path)))
    outfit = "_1" if query_cam == "C" else "_0"
    assert all(key.endswith(outfit) for key in data.query_clothes)
    assert all(key.endswith("_0") for key in data.gallery_clothes)


def test_celebreid_pids_come_from_the_name(built):
    data = built("CelebReID")
    for path, pid, _ in data.query + data.gallery:
        assert pid == int(os.path.basename(path).split("_")[0])
    for path, pid, cam in data.train:
        assert pid == "CelebReID_" + os.path.basename(path).split("_")[0]
    assert data.query_clothes is None


def test_test_only_dataset_can_be_summarised(built, caplog):
    data = built("LaSTVal")
    with caplog.at_level(logging.INFO, logger="fastreid.data.datasets.bases"):
        data.show_train()
        data.show_test()
    assert "LaSTVal" in caplog.text and "gallery" in caplog.text
    assert data.get_num_pids(data.train) == 0


def test_build_dataset_reads_the_environment_at_call_time(synthetic_root, monkeypatch, counts):
    monkeypatch.setenv("FASTREID_DATASETS", str(synthetic_root))
    assert len(build_dataset("CelebReID").query) == counts["celebreid"]["query"]["images"]


def test_build_dataset_rejects_an_unknown_name():
    with pytest.raises(KeyError) as error:
        build_dataset("NoSuchSet", root="unused")
    message = str(error.value)
    assert message.startswith("unknown dataset 'NoSuchSet'") and "\n" not in message
    assert all(name in message for name in LASTREID_DATASETS)


# Hand-made trees --------------------------------------------------------------------------

LAST_NAME = "{:06d}_001_00010_0001_01_{:03d}.jpg"


def touch(root, *relpaths):
    """Creates empty files: the datasets list names, they never open images."""
    for relpath in relpaths:
        path = os.path.join(str(root), relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()


def last_tree(root):
    touch(
        root,
        *[
            f"last/train/000007/{LAST_NAME.format(7, 0)}",
            f"last/train/000007/{LAST_NAME.format(7, 1)}",
            f"last/test/query/{LAST_NAME.format(9, 0)}",
            f"last/test/gallery/000009/{LAST_NAME.format(9, 1)}",
        ],
    )


def expect_layout_error(path, build):
    with pytest.raises(DatasetLayoutError) as error:
        build()
    message = str(error.value)
    assert str(path) in message and "expected" in message and "\n" not in message
    assert isinstance(error.value, ValueError)


def test_missing_root(tmp_path):
    expect_layout_error(tmp_path / "last", lambda: build_dataset("LaST", root=str(tmp_path)))
    expect_layout_error(
        tmp_path / "prcc" / "rgb", lambda: build_dataset("PRCC", root=str(tmp_path))
    )
    expect_layout_error(
        tmp_path / "Celeb-reID", lambda: build_dataset("CelebReID", root=str(tmp_path))
    )


def test_missing_split(tmp_path):
    last_tree(tmp_path)
    assert len(build_dataset("LaST", root=str(tmp_path)).train) == 2
    expect_layout_error(
        tmp_path / "last" / "val" / "query", lambda: build_dataset("LaSTVal", root=str(tmp_path))
    )


def test_empty_split_and_non_image_files(tmp_path):
    last_tree(tmp_path)
    touch(
        tmp_path,
        "last/train/000007/notes.txt",
        "last/train/Thumbs.db",
        "last/test/query/._x.jpg",
        f"last/train/000008/{LAST_NAME.format(8, 0)[:-4]}.PNG",
    )
    data = build_dataset("LaST", root=str(tmp_path))
    assert [os.path.basename(p) for p, _, _ in data.train] == [
        LAST_NAME.format(7, 0),
        LAST_NAME.format(7, 1),
        LAST_NAME.format(8, 0)[:-4] + ".PNG",
    ]
    assert len(data.query) == 1
    os.remove(tmp_path / "last" / "test" / "query" / LAST_NAME.format(9, 0))
    expect_layout_error(
        tmp_path / "last" / "test" / "query", lambda: build_dataset("LaST", root=str(tmp_path))
    )


@pytest.mark.parametrize(
    "bad_name", ["000007_001_00010_0001_000.jpg", "00x007_001_00010_0001_01_000.jpg"]
)
def test_unparseable_last_name(tmp_path, bad_name):
    last_tree(tmp_path)
    touch(tmp_path, f"last/train/000007/{bad_name}")
    expect_layout_error(
        tmp_path / "last" / "train" / "000007" / bad_name,
        lambda: build_dataset("LaST", root=str(tmp_path)),
    )


def prcc_tree(root, train_name="A_cropped_rgb001.jpg", pid_folder="003"):
    touch(
        root,
        f"prcc/rgb/train/{pid_folder}/{train_name}",
        *[f"prcc/rgb/test/{cam}/005/{cam}_cropped_rgb001.jpg" for cam in "ABC"],
    )


@pytest.mark.parametrize(
    "train_name, pid_folder",
    [
        ("D_cropped_rgb001.jpg", "003"),
        ("cropped_rgb001.jpg", "003"),
        ("A_cropped_rgb001.jpg", "p3"),
    ],
)
def test_unparseable_prcc_train_path(tmp_path, train_name, pid_folder):
    prcc_tree(tmp_path, train_name, pid_folder)
    expect_layout_error(
        tmp_path / "prcc" / "rgb" / "train" / pid_folder / train_name,
        lambda: build_dataset("PRCC", root=str(tmp_path)),
    )
    # The test-only protocol never reads train/.
    assert len(build_dataset("PRCCSameClothes", root=str(tmp_path)).query) == 1


def test_prcc_test_images_outside_a_person_folder(tmp_path):
    prcc_tree(tmp_path)
    touch(tmp_path, "prcc/rgb/test/C/C_cropped_rgb002.jpg")
    expect_layout_error(
        tmp_path / "prcc" / "rgb" / "test" / "C" / "C_cropped_rgb002.jpg",
        lambda: build_dataset("PRCC", root=str(tmp_path)),
    )


def test_unparseable_celebreid_name(tmp_path):
    touch(
        tmp_path,
        "Celeb-reID/train/1_1_0.jpg",
        "Celeb-reID/query/2_1_0.jpg",
        "Celeb-reID/gallery/2_1.jpg",
    )
    expect_layout_error(
        tmp_path / "Celeb-reID" / "gallery" / "2_1.jpg",
        lambda: build_dataset("CelebReID", root=str(tmp_path)),
    )
