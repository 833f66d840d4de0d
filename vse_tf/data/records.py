"""A caption file prepared as sharded TFRecords: `train.dataset =
'records:DIR'`, written by `python -m vse_tf.prepare`.

A caption file names photos by path, and reading millions of loose files
is slow on network disks and object stores. `write` packs each split into
shards of `shard_size` photos, each record one photo's encoded bytes as
they are (no decoding, no quality lost), its captions, its id and its file
name (the path below the folder the split's photos share):

    DIR/records.json                 what was written, and from what
    DIR/train-00000-of-00012.tfrecord  ...
    DIR/val-00000-of-00001.tfrecord
    DIR/test-00000-of-00001.tfrecord

A shard is written whole into a temporary file and renamed into place, so
a stopped `prepare` leaves whole shards only, and running it again writes
just the shards that are missing. Memory holds one shard's photos at most.
records.json is written last: a folder without it is not ready to train.
Training reads the shards of a split with a parallel interleave, in the
caption file's order.
"""

import json
import os

import tensorflow as tf

from vse_tf import errors
from vse_tf import io_utils
from vse_tf.data import caption_files
from vse_tf.data import images

PREFIX = "records"
MANIFEST = "records.json"
FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "captions": tf.io.VarLenFeature(tf.string),
    "image_id": tf.io.FixedLenFeature([], tf.int64),
    # Records written before names were kept have none.
    "name": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def handles(dataset):
    """Whether `dataset` names prepared records ('records:DIR')."""
    return caption_files.handles(dataset, kinds=(PREFIX,))


def shard_name(split, index, count):
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def _bytes_feature(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _example(image_bytes, captions, image_id, name):
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image": _bytes_feature([image_bytes]),
                "captions": _bytes_feature(
                    [c.encode("utf-8") for c in captions]
                ),
                "image_id": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[image_id])
                ),
                "name": _bytes_feature([name.encode("utf-8")]),
            }
        )
    ).SerializeToString()


def write_split(out_dir, split, listing, shard_size, progress=None):
    """The shards of one split from its (paths, captions, ids); shards
    already there are kept. Returns their file names."""
    paths, captions, ids = listing
    file_names = images.file_names(paths)
    count = max(1, -(-len(paths) // shard_size))
    names = []
    for index in range(count):
        name = shard_name(split, index, count)
        names.append(name)
        rows = range(
            index * shard_size, min((index + 1) * shard_size, len(paths))
        )
        if not os.path.exists(os.path.join(out_dir, name)):
            with io_utils.atomic_path(os.path.join(out_dir, name)) as tmp:
                with tf.io.TFRecordWriter(tmp) as writer:
                    for row in rows:
                        with open(paths[row], "rb") as f:
                            writer.write(
                                _example(
                                    f.read(),
                                    captions[row],
                                    ids[row],
                                    file_names[row],
                                )
                            )
        if progress:
            progress.add(len(rows))
    return names


def read_manifest(dataset, data_dir=None):
    """records.json of the folder `dataset` names, or a DatasetError."""
    folder, tried = caption_files.locate(dataset, data_dir, os.path.isdir)
    folder = folder or tried[-1]
    path = os.path.join(folder, MANIFEST)
    if not os.path.exists(path):
        raise errors.DatasetError(
            f"train.dataset = {dataset!r}: {path} does not exist, so the "
            "folder holds no finished records. Write them with `python -m "
            "vse_tf.prepare --dataset=csv:CAPTIONS.csv --output="
            f"{folder}` (run it again to finish a stopped one)."
        )
    with open(path, encoding="utf-8") as f:
        return folder, json.load(f)


def _split_records(dataset, split, data_dir):
    """(the serialized records of a split in the caption file's order,
    the manifest's sizes of the split)."""
    folder, manifest = read_manifest(dataset, data_dir)
    files = [os.path.join(folder, name) for name in manifest["shards"][split]]
    # Up to 8 shards read at once; a block of a whole shard from each in
    # turn keeps the caption file's order (val and test folds follow it).
    records = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 8),
        block_length=manifest["shard_size"],
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return records, manifest["sizes"][split]


def encoded_photos(dataset, split, data_dir=None):
    """(file names, index -> encoded bytes) of a split's photos, held in
    memory; records without names name a photo DATASET:SPLIT/ID."""
    records, _ = _split_records(dataset, split, data_dir)
    wanted = {key: FEATURES[key] for key in ("image", "image_id", "name")}
    parsed = records.map(
        lambda record: tf.io.parse_single_example(record, wanted),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    names, photos = [], []
    for example in parsed.as_numpy_iterator():
        name = example["name"].decode("utf-8")
        names.append(name or f"{dataset}:{split}/{example['image_id']}")
        photos.append(example["image"])
    return names, photos.__getitem__


def load_examples(dataset, split, data_dir, image_size, captions_only=False):
    """Per-image examples of one split, read from its shards (the layout
    of every source, see `pipeline`); or its captions alone."""
    records, size = _split_records(dataset, split, data_dir)

    # One count for every photo: a dense [C] each, as the caption file
    # gives (batches of them need no ragged tensors).
    uniform = size.get("captions_per_image")

    def parse(record):
        example = tf.io.parse_single_example(record, FEATURES)
        captions = tf.sparse.to_dense(example["captions"])
        if uniform:
            captions = tf.ensure_shape(captions, [uniform])
        return example, captions

    if captions_only:
        captions = records.map(
            lambda record: parse(record)[1],
            num_parallel_calls=tf.data.AUTOTUNE,
        ).unbatch()
        return captions.apply(
            tf.data.experimental.assert_cardinality(size["captions"])
        )

    def decode(record):
        # Parsed and decoded in one function: one parallel map, not two.
        example, captions = parse(record)
        pixels = images.decode_and_resize(
            example["image"], image_size, name="image"
        )
        return {
            "image": tf.cast(tf.round(pixels), tf.uint8),
            "captions": captions,
            "image_id": example["image_id"],
        }

    return records.map(decode, num_parallel_calls=tf.data.AUTOTUNE).apply(
        tf.data.experimental.assert_cardinality(size["images"])
    )


def prepare(dataset, out_dir, data_dir=None, shard_size=1000, progress=None):
    """Writes the records of caption file `dataset` into `out_dir` (what is
    there already is kept); returns the manifest. Every photo of every
    split is checked before a shard is written."""
    listings = {
        split: caption_files.checked_split(dataset, split, data_dir)
        for split in caption_files.SPLITS
    }
    os.makedirs(out_dir, exist_ok=True)
    manifest = {
        "source": caption_files.read_photos(dataset, data_dir).record(),
        "shard_size": shard_size,
        "shards": {},
        "sizes": {},
    }
    for split, listing in listings.items():
        manifest["shards"][split] = write_split(
            out_dir, split, listing, shard_size, progress
        )
        counts = {len(c) for c in listing[1]}
        manifest["sizes"][split] = {
            "images": len(listing[0]),
            "captions": sum(len(c) for c in listing[1]),
            "captions_per_image": counts.pop() if len(counts) == 1 else None,
        }
    io_utils.write_json_atomic(os.path.join(out_dir, MANIFEST), manifest)
    return manifest
