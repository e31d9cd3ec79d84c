"""The synthetic data generator and its command-line wrapper."""

import collections
import os
import re
import subprocess
import sys

from lastreid.datasets import synthetic
from lastreid.datasets.common import is_image_file

import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME_PATTERNS = {
    "last": re.compile(r"^\d{6}_\d{3}_\d{5}_\d{4}_\d{2}_\d{3}\.jpg$"),
    "prcc": re.compile(r"^[ABC]_cropped_rgb\d{3}\.jpg$"),
    "celebreid": re.compile(r"^\d+_\d+_[01]\.jpg$"),
}
FOLDERS = {"last": "last", "prcc": "prcc", "celebreid": "Celeb-reID"}


def image_files(folder):
    """{path relative to folder: bytes} of every image below folder."""
    found = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            if is_image_file(name):
                path = os.path.join(parent, name)
                with open(path, "rb") as f:
                    found[os.path.relpath(path, folder)] = f.read()
    return found


def split_of(dataset, relpath):
    """The generator's split key of an image path relative to the dataset folder."""
    parts = relpath.split(os.sep)
    if dataset == "last":
        return parts[0] if parts[0] == "train" else "/".join(parts[:2])
    if dataset == "prcc":  # rgb/train/<pid>/..., rgb/test/<cam>/<pid>/...
        return parts[1] if parts[1] != "test" else "test/" + parts[2]
    return parts[0]


@pytest.mark.parametrize("dataset", synthetic.DATASETS)
def test_reported_counts_match_the_files(synthetic_root, dataset):
    reported = synthetic.read_counts(str(synthetic_root))[dataset]
    files = image_files(os.path.join(str(synthetic_root), FOLDERS[dataset]))
    per_split = collections.Counter(split_of(dataset, path) for path in files)
    assert per_split == {split: c["images"] for split, c in reported.items()}
    for relpath in files:
        assert NAME_PATTERNS[dataset].match(os.path.basename(relpath)), relpath


def test_images_are_128_by_64_rgb(synthetic_root):
    path = next(iter(image_files(os.path.join(str(synthetic_root), "prcc"))))
    with Image.open(os.path.join(str(synthetic_root), "prcc", path)) as image:
        assert image.mode == "RGB" and image.size == (64, 128)  # PIL size is (W, H)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    synthetic.write_last(str(tmp_path / "a"), seed=3, **synthetic.PRESETS["tiny"]["last"])
    synthetic.write_last(str(tmp_path / "b"), seed=3, **synthetic.PRESETS["tiny"]["last"])
    synthetic.write_last(str(tmp_path / "c"), seed=4, **synthetic.PRESETS["tiny"]["last"])
    a, b, c = (image_files(str(tmp_path / x / "last")) for x in "abc")
    assert a == b  # every file name and its bytes
    assert sorted(a) != sorted(c)
    assert set(a.values()).isdisjoint(c.values())


def test_rerun_replaces_its_own_folder(tmp_path):
    sizes = synthetic.PRESETS["tiny"]["celebreid"]
    synthetic.write_celebreid(str(tmp_path), seed=0, **sizes)
    counts = synthetic.write_celebreid(str(tmp_path), seed=1, **sizes)
    files = image_files(str(tmp_path / "Celeb-reID"))
    assert len(files) == sum(split["images"] for split in counts.values())


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    foreign = tmp_path / "prcc" / "rgb" / "train" / "001" / "A_cropped_rgb001.jpg"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"real data")
    with pytest.raises(FileExistsError, match="prcc"):
        synthetic.write_prcc(str(tmp_path), **synthetic.PRESETS["tiny"]["prcc"])
    assert foreign.read_bytes() == b"real data"


def pids_by_split(folder):
    pids = collections.defaultdict(set)
    for relpath in image_files(folder):
        pids[relpath.split(os.sep)[0]].add(int(os.path.basename(relpath).split("_")[0]))
    return pids


def test_last_persons_and_outfits(tmp_path):
    counts = synthetic.write_last(
        str(tmp_path),
        seed=0,
        train_ids=4,
        train_images=6,
        max_outfits=3,
        val_ids=2,
        test_ids=6,
        query_images=2,
        gallery_images=3,
        distractor_ids=1,
    )
    pids = pids_by_split(str(tmp_path / "last"))
    assert pids["train"].isdisjoint(pids["val"] | pids["test"]) and pids["val"].isdisjoint(
        pids["test"]
    )
    outfits = collections.defaultdict(set)  # (split, pid) -> outfit indices
    for relpath in image_files(str(tmp_path / "last")):
        fields = os.path.basename(relpath)[:-4].split("_")
        outfits[split_of("last", relpath), int(fields[0])].add(int(fields[5]))
    assert max(max(ks) for ks in outfits.values()) < 3
    assert counts["train"]["outfits"] == sum(
        len(ks) for (split, _), ks in outfits.items() if split == "train"
    )
    # Each query person's gallery covers all of its outfits, so clothes-changing matches exist.
    query_people = [pid for split, pid in outfits if split == "test/query"]
    for pid in query_people:
        assert outfits["test/query", pid] <= outfits["test/gallery", pid]
    assert any(len(outfits["test/gallery", pid]) > 1 for pid in query_people)
    assert counts["test/gallery"]["ids"] == len(query_people) + 1  # one distractor


def test_prcc_persons_are_disjoint_across_splits(synthetic_root):
    folder = os.path.join(str(synthetic_root), "prcc", "rgb")
    pids = collections.defaultdict(set)
    for relpath in image_files(folder):
        pids[relpath.split(os.sep)[0]].add(relpath.split(os.sep)[-2])
    assert set(pids) == {"train", "val", "test"}
    assert not (pids["train"] & pids["val"]) and not (pids["train"] & pids["test"])


def test_bad_sizes_and_presets(tmp_path):
    with pytest.raises(TypeError, match="images_per_camera"):
        synthetic.write_last(str(tmp_path), images_per_camera=3)
    with pytest.raises(ValueError, match="train_ids"):
        synthetic.write_prcc(str(tmp_path), train_ids=0)
    with pytest.raises(ValueError, match="huge"):
        synthetic.write_all(str(tmp_path), preset="huge")


def test_tiny_preset_writes_every_dataset(tmp_path):
    counts = synthetic.write_all(str(tmp_path), preset="tiny", seed=5)
    assert set(counts) == set(synthetic.DATASETS) and synthetic.read_counts(str(tmp_path)) == counts


def test_command_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "make_synthetic_data.py"),
            "--root",
            str(tmp_path),
            "--preset",
            "tiny",
            "--datasets",
            "celebreid",
            "--train-ids",
            "2",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    counts = synthetic.read_counts(str(tmp_path))
    assert list(counts) == ["celebreid"] and counts["celebreid"]["train"]["ids"] == 2
    assert result.stdout.startswith("celebreid: ") and str(tmp_path) in result.stdout
