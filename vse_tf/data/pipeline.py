"""Any dataset source to the batches the dual encoder trains on.

A source gives one example per image: {"image": uint8 [H, W, 3], "captions":
string [C], "image_id": int64}. Training flattens it into one pair per
caption, ({"image": float32 pixels, "caption": string}, image_id), shuffled
across images; evaluation keeps the image order with captions in order, so
caption j belongs to image j // C.
"""

import os

import tensorflow as tf
import tensorflow_datasets as tfds

from vse_tf.data import karpathy
from vse_tf.data import shapes
from vse_tf.data.errors import DatasetError

BUILT_IN = {"shapes": shapes.Shapes}


def load_examples(dataset, split, data_dir=None):
    """Per-image examples of `split`, generating a built-in source first.

    Args:
      dataset: "flickr8k", "flickr30k" or "coco" (raw images read with
        Karpathy's split files, see `karpathy`), or a TFDS name such as
        "shapes" or "shapes/tiny".
      split: "train", "val" or "test".
      data_dir: the datasets' root, also the TFDS data directory (default:
        TFDS's own, ~/tensorflow_datasets).
    """
    if dataset in karpathy.DATASETS:
        return karpathy.load_examples(dataset, split, data_dir)
    builder = _builder(dataset, data_dir)
    if type(builder) in BUILT_IN.values():
        # Drawn locally in seconds: nothing is ever downloaded.
        builder.download_and_prepare()
    elif not builder.is_prepared():
        raise DatasetError(
            f"Dataset {dataset!r} is not prepared under "
            f"{builder.data_dir_root}. Prepare it with "
            f"`tfds build {dataset} --data_dir={builder.data_dir_root}` "
            "(see README.md, 'Data') and pass the same --data_dir.")
    if split not in builder.info.splits:
        raise DatasetError(
            f"Dataset {dataset!r} has no split {split!r}; it has "
            f"{sorted(builder.info.splits)}.")
    return builder.as_dataset(split=split, shuffle_files=False)


def _builder(dataset, data_dir):
    data_dir = os.path.expanduser(data_dir) if data_dir else None
    return tfds.builder(dataset, data_dir=data_dir)


def _pixels(image):
    return tf.cast(image, tf.float32)


def training_pairs(examples, batch_size, image_shuffle_buffer=20_000,
                   pair_shuffle_buffer=8192, seed=None, cache=True):
    """Endless shuffled batches of (inputs, image_id), one pair per caption.

    Images are shuffled first and their pairs again, so the captions of one
    image spread over different batches without a buffer of every pair.
    Decoded images are cached in memory when `cache`; batches are
    drop_remainder so every step sees `batch_size` pairs.
    """
    if cache:
        examples = examples.cache()
    examples = examples.shuffle(image_shuffle_buffer, seed=seed)

    def to_pairs(example):
        captions = example["captions"]
        count = tf.shape(captions)[0]
        return tf.data.Dataset.from_tensor_slices((
            tf.repeat(example["image"][None], count, axis=0), captions,
            tf.repeat(example["image_id"], count)))

    pairs = examples.repeat().flat_map(to_pairs)
    pairs = pairs.shuffle(pair_shuffle_buffer, seed=seed)
    pairs = pairs.batch(batch_size, drop_remainder=True)
    pairs = pairs.map(
        lambda image, caption, image_id: (
            {"image": _pixels(image), "caption": caption}, image_id),
        num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    # Across workers, split each global batch rather than the source files:
    # worker k takes the k-th slice of every batch one process would make,
    # so a multi-worker run trains on the very batches of a single one.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return pairs.with_options(options)


def evaluation_batches(examples, batch_size=250):
    """Batches of (pixels [b, H, W, 3], captions [b, C]) in dataset order."""
    return examples.map(
        lambda example: (_pixels(example["image"]), example["captions"]),
        num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(
            tf.data.AUTOTUNE)


def training_captions(examples):
    """Every caption of the split, for adapting the vocabulary."""
    return examples.map(lambda example: example["captions"]).unbatch()
