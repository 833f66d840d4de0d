"""Search names a dataset's photos by their files: Karpathy layouts, caption
files and records prepared from them give the file names and the bytes as
stored; only a TFDS split, which keeps pixels, names an image by its id."""

import os

import tensorflow as tf

from tests.test_caption_files import _jpeg
from tests.test_karpathy import write_dataset
from vse_tf.data import records
from vse_tf.serving import image_index


def _photos(collection):
    return [collection.read(i) for i in range(len(collection))]


def test_a_karpathy_split_is_named_by_its_files(tmp_path):
    splits = ["train", "test", "val", "test", "test"]
    base = write_dataset(tmp_path, "flickr8k", splits)
    collection = image_index.open_collection("flickr8k:test", str(tmp_path))
    assert collection.names == ["1001.jpg", "1003.jpg", "1004.jpg"]
    assert _photos(collection) == [
        (base / "images" / name).read_bytes() for name in collection.names
    ]


def _nested_caption_file(folder):
    """Photos in two folders, the same file name in both."""
    rows = ["image,caption,split"]
    for index, (name, split) in enumerate(
        [
            ("beach/0.jpg", "test"),
            ("city/0.jpg", "test"),
            ("city/1.jpg", "train"),
            ("x/0.jpg", "val"),
        ]
    ):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(_jpeg(index))
        rows.append(f"{name},photo {index},{split}")
    path = folder / "captions.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_caption_files_and_their_records_name_photos_by_path(
    tmp_path, monkeypatch
):
    path = _nested_caption_file(tmp_path / "own")
    from_file = image_index.open_collection(f"csv:{path}:test")
    assert from_file.names == ["beach/0.jpg", "city/0.jpg"]
    expected = [(path.parent / n).read_bytes() for n in from_file.names]
    assert _photos(from_file) == expected
    out = tmp_path / "records"
    records.prepare(f"csv:{path}", str(out), shard_size=1)
    from_records = image_index.open_collection(f"records:{out}:test")
    assert from_records.names == from_file.names
    assert _photos(from_records) == expected
    # Records written before names were kept: named by split and id.
    plain = records._example

    def without_name(*args):
        example = tf.train.Example.FromString(plain(*args))
        del example.features.feature["name"]
        return example.SerializeToString()

    monkeypatch.setattr(records, "_example", without_name)
    old = tmp_path / "old_records"
    records.prepare(f"csv:{path}", str(old), shard_size=1)
    spec = f"records:{old}:test"
    assert image_index.open_collection(spec).names == [
        f"records:{old}:test/0",
        f"records:{old}:test/1",
    ]


def test_file_names_are_relative_to_the_deepest_shared_folder():
    from vse_tf.data import images

    root = os.path.join(os.sep, "data", "coco")
    paths = [
        os.path.join(root, "val2014", "a.jpg"),
        os.path.join(root, "val2014", "b.jpg"),
    ]
    assert images.file_names(paths) == ["a.jpg", "b.jpg"]
    assert images.file_names(
        [*paths, os.path.join(root, "train2014", "a.jpg")]
    ) == ["val2014/a.jpg", "val2014/b.jpg", "train2014/a.jpg"]
    assert images.file_names([]) == []
