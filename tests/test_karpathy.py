"""The Karpathy split-file reader, on fixtures in the real layouts."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import bindings
from tests.conftest import run_tool
from vse_tf import errors
from vse_tf.data import images
from vse_tf.data import karpathy
from vse_tf.data import pipeline

FLICKR8K = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "..",
    "shared",
    "data",
)


def _jpeg(seed, shape=(40, 60)):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    return tf.io.encode_jpeg(pixels).numpy()


def _entry(index, split, captions=5, filepath=None):
    entry = {
        "filename": f"{1000 + index}.jpg",
        "imgid": index,
        "split": split,
        "sentids": list(range(captions)),
        "sentences": [
            {
                "raw": f"Image {index} caption {c} .",
                "tokens": ["image", str(index)],
                "imgid": index,
                "sentid": c,
            }
            for c in range(captions)
        ],
    }
    if filepath:
        entry.update(filepath=filepath, cocoid=500 + index)
    return entry


def write_dataset(
    root, name, splits, folder="images", filepath=None, captions=5
):
    """A split file and its JPEGs; splits: one split name per image."""
    base = root / name
    entries = [
        _entry(i, split, captions, filepath) for i, split in enumerate(splits)
    ]
    image_dir = base / folder / (filepath or "")
    image_dir.mkdir(parents=True)
    for i, entry in enumerate(entries):
        (image_dir / entry["filename"]).write_bytes(_jpeg(i))
    (base / karpathy.DATASETS[name]).write_text(
        json.dumps({"dataset": name, "images": entries})
    )
    return base


def _all(examples):
    return list(examples.as_numpy_iterator())


def test_flickr30k_layout_gives_examples_in_file_order(tmp_path):
    base = write_dataset(
        tmp_path,
        "flickr30k",
        ["train", "test", "train", "val", "train"],
        folder="flickr30k-images",
    )
    train = _all(
        karpathy.load_examples(
            "flickr30k", "train", str(tmp_path), image_size=32
        )
    )
    assert [e["image_id"] for e in train] == [0, 2, 4]
    assert [c.decode() for c in train[1]["captions"]] == [
        f"Image 2 caption {c} ." for c in range(5)
    ]
    # The pixels are the serving preprocessing of the file, rounded.
    expected = images.decode_and_resize(
        tf.io.read_file(str(base / "flickr30k-images" / "1002.jpg")), 32
    ).numpy()
    assert train[1]["image"].dtype == np.uint8
    np.testing.assert_array_equal(train[1]["image"], np.round(expected))


def test_coco_layout_trains_on_restval_and_keeps_five_captions(tmp_path):
    write_dataset(
        tmp_path,
        "coco",
        ["train", "restval", "val", "test"],
        filepath="val2014",
        captions=7,
    )
    train = _all(pipeline.load_examples("coco", "train", str(tmp_path)))
    assert [e["image_id"] for e in train] == [500, 501]  # cocoid
    assert all(e["captions"].shape == (5,) for e in train)


def test_bad_image_is_skipped_and_counted_or_an_error(tmp_path, capsys):
    base = write_dataset(tmp_path, "flickr8k", ["train"] * 4)
    truncated = base / "images" / "1001.jpg"
    truncated.write_bytes(truncated.read_bytes()[:200])
    (base / "images" / "1002.jpg").write_text("<html>Not found</html>")

    kept = _all(karpathy.load_examples("flickr8k", "train", str(tmp_path)))
    assert [e["image_id"] for e in kept] == [0, 3]
    assert "skipped 2 of 4 images" in capsys.readouterr().out
    with pytest.raises(errors.DatasetError, match="2 image.*1001.jpg"):
        karpathy.load_examples(
            "flickr8k", "train", str(tmp_path), on_bad_image="error"
        )


@pytest.mark.parametrize("split", ["val", "test"])
def test_a_bad_image_in_a_protocol_split_is_an_error(tmp_path, capsys, split):
    base = write_dataset(tmp_path, "flickr8k", [split] * 3)
    (base / "images" / "1001.jpg").write_text("<html>Not found</html>")
    # The protocols fix the split's size: no silent shrinking.
    with pytest.raises(
        errors.DatasetError, match=f"1 image.*{split} split.*1001.jpg"
    ):
        karpathy.load_examples("flickr8k", split, str(tmp_path))
    # Asked for, skipping still works, and says so.
    kept = _all(
        karpathy.load_examples(
            "flickr8k", split, str(tmp_path), on_bad_image="skip"
        )
    )
    assert [e["image_id"] for e in kept] == [0, 2]
    assert "skipped 1 of 3 images" in capsys.readouterr().out


@pytest.mark.parametrize(
    "breakage, message",
    [
        (
            "no_json",
            r"flickr8k is not under --data_dir: .*dataset_flickr8k.json",
        ),
        ("no_image", r"Missing image .*1001.jpg"),
        ("few_captions", r"1000.jpg has 3 captions .* needs 5"),
        ("not_json", r"is not a Karpathy split file"),
    ],
)
def test_broken_layouts_name_the_file_and_the_fix(tmp_path, breakage, message):
    base = write_dataset(tmp_path, "flickr8k", ["train", "train"])
    split_file = base / "dataset_flickr8k.json"
    if breakage == "no_json":
        split_file.unlink()
    elif breakage == "no_image":
        (base / "images" / "1001.jpg").unlink()
    elif breakage == "not_json":
        split_file.write_text("{")
    else:
        content = json.loads(split_file.read_text())
        del content["images"][0]["sentences"][3:]
        split_file.write_text(json.dumps(content))
    with pytest.raises(errors.DatasetError, match=message):
        karpathy.load_examples("flickr8k", "train", str(tmp_path))


@pytest.mark.slow
def test_training_on_raw_images_survives_a_bad_file(tmp_path):
    base = write_dataset(
        tmp_path, "flickr8k", ["train"] * 8 + ["val"] * 3 + ["test"] * 3
    )
    (base / "images" / "1003.jpg").write_bytes(b"")
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(
            [
                "train.dataset = 'flickr8k'",
                "load_examples.image_size = 32",
                "train.projector_images = 0",
                "train.export = False",
            ]
        ),
        f"--model_dir={tmp_path / 'run'}",
        f"--data_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the flickr8k train split: skipped 1 of 8 images" in result.stdout
    assert "Test metrics" in result.stdout


@pytest.mark.slow
def test_missing_dataset_is_one_paragraph_not_a_traceback(tmp_path):
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(["train.dataset = 'flickr30k'"]),
        f"--model_dir={tmp_path / 'run'}",
        f"--data_dir={tmp_path}",
    )
    assert result.returncode == 2
    assert "flickr30k is not under --data_dir" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(
    not os.path.exists(
        os.path.join(FLICKR8K, "flickr8k", "dataset_flickr8k.json")
    ),
    reason="the shared Flickr8k copy (../shared/data/flickr8k) is absent",
)
def test_shared_flickr8k_has_the_official_splits():
    # What the loader serves, split by split, against the split file as
    # this test reads it: the same images, whole, and no image in two
    # splits.
    with open(os.path.join(FLICKR8K, "flickr8k", "dataset_flickr8k.json")) as f:
        listed = {}
        for entry in json.load(f)["images"]:
            listed.setdefault(entry["split"], {})[entry["imgid"]] = entry[
                "filename"
            ]
    served = {}
    for split in ("train", "val", "test"):
        paths, captions, ids = karpathy.checked_split(
            "flickr8k", split, FLICKR8K, on_bad_image="error"
        )
        assert len(ids) == len(set(ids)) == len(captions)
        assert all(len(c) == 5 for c in captions)
        assert {i: os.path.basename(p) for i, p in zip(ids, paths)} == (
            listed[split]
        )
        served[split] = set(ids)
        examples = karpathy.load_examples("flickr8k", split, FLICKR8K)
        assert int(examples.cardinality()) == len(ids)
    assert {k: len(v) for k, v in served.items()} == {
        "train": 6000,
        "val": 1000,
        "test": 1000,
    }
    assert not (
        served["train"] & served["val"]
        or served["train"] & served["test"]
        or served["val"] & served["test"]
    )
