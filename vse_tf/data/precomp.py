"""Precomputed image features, the layout of VSE++, SCAN and VSE-infinity.

    DATA_DIR/coco_precomp/{train,dev,test,testall}_ims.npy
    DATA_DIR/coco_precomp/{train,dev,test,testall}_caps.txt
    DATA_DIR/f30k_precomp/{train,dev,test}_ims.npy, ..._caps.txt

`{split}_ims.npy` holds N x 36 x 2048 bottom-up-attention regions (SCAN,
VSE-infinity) or N x 2048 global ResNet-152 features (VSE++);
`{split}_caps.txt` holds the captions, one a line, the captions of image 0
first. Releases that repeat each image once per caption (5N rows) are read
as N images, as SCAN's loader does.

Features are read through a NumPy memory map, a batch of rows at a time:
the train split of coco_precomp (113,287 x 36 x 2048 float32, 33 GB) never
has to fit in memory. Its images come in a new random order on every pass,
so a pipeline need not buffer them to shuffle.

Examples have the layout of every source (see `pipeline`), with features in
place of pixels: {"image": float32 [36, 2048] or [2048], "captions": [5],
"image_id": int64}.
"""

import os

import numpy as np
import tensorflow as tf

from vse_tf import errors

DATASETS = {"coco_precomp": "coco_precomp", "f30k_precomp": "f30k_precomp"}
# Our split names -> the files' (COCO's "testall" is the 5K test, whose
# first 1,000 images are its "test").
FILE_SPLITS = {
    "coco_precomp": {"train": "train", "val": "dev", "test": "testall"},
    "f30k_precomp": {"train": "train", "val": "dev", "test": "test"},
}
HOW_TO_GET = (
    "the precomputed features of SCAN (Lee et al., 2018; "
    "https://github.com/kuanghuei/SCAN, data/{name}) or VSE++ "
    "(https://github.com/fartashf/vsepp, 'data.tar')"
)
# Image ids stay unique across splits and below 2**24, where float32 (the
# dtype Keras gives a loss target) is exact.
_ID_OFFSET = {"train": 0, "val": 1_000_000, "test": 2_000_000}
_READ_BATCH = 64


def split_files(name, split, data_dir, features=True):
    """(features path, captions path) of a split, or a DatasetError naming
    those missing (the features only if `features`)."""
    folder = os.path.join(
        os.path.expanduser(data_dir or "~/tensorflow_datasets"), name
    )
    stem = FILE_SPLITS[name][split]
    paths = (
        os.path.join(folder, f"{stem}_ims.npy"),
        os.path.join(folder, f"{stem}_caps.txt"),
    )
    missing = [
        p for p in paths[0 if features else 1 :] if not os.path.exists(p)
    ]
    if missing:
        raise errors.DatasetError(
            f"{name} is not under --data_dir: {', '.join(missing)} "
            f"{'does' if len(missing) == 1 else 'do'} not exist. Put "
            f"{HOW_TO_GET.format(name=name)} in {folder}/ ({stem}_ims.npy "
            f"and {stem}_caps.txt for the {split!r} split; see "
            "docs/data.md) and pass the parent folder as --data_dir."
        )
    return paths


def open_features(path):
    """The features as a read-only memory map, [rows, regions?, dim]."""
    try:
        features = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as error:
        raise errors.DatasetError(
            f"{path} is not a NumPy .npy array ({error}); expected N x 36 x "
            "2048 region or N x 2048 global features."
        ) from error
    if features.ndim not in (2, 3) or not np.issubdtype(
        features.dtype, np.floating
    ):
        raise errors.DatasetError(
            f"{path} holds a {features.dtype} array of shape "
            f"{features.shape}; expected floats, N x regions x dim or N x "
            "dim."
        )
    return features


def read_captions(path):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def load_examples(
    name, split, data_dir=None, captions_per_image=5, captions_only=False
):
    """Per-image examples of one split of a precomputed-feature dataset.

    Args:
      name: "coco_precomp" or "f30k_precomp".
      split: "train", "val" ("dev") or "test" (COCO: "testall", all 5,000
        images; the COCO 1K protocol cuts them into five folds).
      data_dir: the folder holding `name/` (default ~/tensorflow_datasets).
      captions_per_image: the captions of one image in `{split}_caps.txt`.
      captions_only: return the split's captions alone, a dataset of
        strings: a vocabulary needs no features read.
    """
    features_path, captions_path = split_files(
        name, split, data_dir, features=not captions_only
    )
    captions = read_captions(captions_path)
    if captions_only:
        return tf.data.Dataset.from_tensor_slices(captions)
    features = open_features(features_path)
    num_images, stride = _rows_per_image(
        name,
        (features_path, features.shape[0]),
        captions_path,
        captions,
        captions_per_image,
    )
    feature_shape = features.shape[1:]

    def read_rows(indices):
        # Sorted reads walk the file forward; the rows go back in the order
        # they were asked for. Only the rows asked for leave the map.
        order = np.argsort(indices)
        rows = np.empty((len(indices), *feature_shape), np.float32)
        rows[order] = features[indices[order] * stride]
        return rows

    table = tf.constant(
        np.array(captions, dtype=object)
        .astype(str)
        .reshape(num_images, captions_per_image)
    )

    def read(indices):
        rows = tf.numpy_function(
            read_rows, [indices], tf.float32, stateful=False
        )
        rows.set_shape([None, *feature_shape])
        return {
            "image": rows,
            "captions": tf.gather(table, indices),
            "image_id": indices + _ID_OFFSET[split],
        }

    indices = tf.data.Dataset.range(num_images)
    if split == "train":
        # A fresh order on each pass, drawn from indices: the rows never
        # need a shuffle buffer.
        indices = indices.shuffle(num_images, reshuffle_each_iteration=True)
    examples = (
        indices.batch(_READ_BATCH)
        .map(read, num_parallel_calls=tf.data.AUTOTUNE)
        .unbatch()
    )
    return examples.apply(tf.data.experimental.assert_cardinality(num_images))


def _rows_per_image(name, features, captions_path, captions, per_image):
    """(images, feature rows an image) of a split whose `features` file,
    (path, rows), holds a row an image or a row a caption; a DatasetError
    when the files do not agree."""
    features_path, rows = features
    if not captions or len(captions) % per_image:
        raise errors.DatasetError(
            f"{captions_path} has {len(captions)} captions, not a multiple "
            f"of {per_image} (captions per image): the file is "
            "incomplete. Get it again with its features "
            f"({HOW_TO_GET.format(name=name)})."
        )
    num_images = len(captions) // per_image
    if rows == num_images:
        return num_images, 1
    if rows == len(captions):
        return num_images, per_image  # one row per caption: every image 5x
    raise errors.DatasetError(
        f"{features_path} has {rows} rows but {captions_path} has "
        f"{len(captions)} captions; expected {num_images} rows (one per "
        f"image, {per_image} captions each) or {len(captions)} "
        "(one per caption). The two files are not from one release."
    )
