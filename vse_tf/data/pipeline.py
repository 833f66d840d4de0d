"""Any dataset source to the batches the dual encoder trains on.

A source gives one example per image: {"image": uint8 [H, W, 3], "captions":
string [C], "image_id": int64}. Training flattens it into one pair per
caption, ({"image": float32 pixels, "caption": string}, image_id), shuffled
across images; evaluation keeps the image order with captions in order, an
image's captions after the one before it. C may differ from image to image
(one's own data), at least 1.
"""

import numpy as np
import tensorflow as tf

from vse_tf.data import sources

# A train split is cached in memory (decoded images, read features) when it
# fits in this; otherwise it is read again each epoch.
CACHE_BUDGET_BYTES = 8 << 30
# What an uncached split's image shuffle buffer may hold.
SHUFFLE_BUDGET_BYTES = 1 << 30
# Images shuffled, then their image-caption pairs shuffled again.
IMAGE_SHUFFLE_BUFFER = 20_000
PAIR_SHUFFLE_BUFFER = 8192
_STRING_BYTES = 64  # a caption, roughly
_UNKNOWN_DIM = 7  # a guess for a dimension of unknown size (COCO captions)


def load_examples(dataset, split, data_dir=None):
    """Per-image examples of `split`, generating a built-in source first.

    Args:
      dataset: "flickr8k", "flickr30k" or "coco" (raw images read with
        Karpathy's split files, see `karpathy`), "coco_precomp" or
        "f30k_precomp" (precomputed features, see `precomp`),
        "coco_captions" (MS-COCO through TFDS, see `coco`),
        "karpathy_captions/flickr30k" (TFDS records built from Karpathy's
        files, see `karpathy_tfds`), "csv:PATH" or "jsonl:PATH" (one's own
        photos and captions, see `caption_files`), or a TFDS name such as
        "shapes" or "shapes/tiny".
      split: "train", "val" or "test".
      data_dir: the datasets' root, also the TFDS data directory (default:
        TFDS's own, ~/tensorflow_datasets).
    """
    return _load(dataset, split, data_dir, captions_only=False)


def load_captions(dataset, split, data_dir=None):
    """The captions of `split` alone, a dataset of strings, read without
    decoding an image (for the vocabulary and caption statistics)."""
    return _load(dataset, split, data_dir, captions_only=True)


def _load(dataset, split, data_dir, captions_only):
    return sources.find(dataset).load(dataset, split, data_dir, captions_only)


def stored_photos(dataset, split, data_dir=None):
    """(file names, index -> encoded bytes) of the photos of `split` as
    they are stored, where the source keeps files; else None."""
    photos = sources.find(dataset).photos
    return photos(dataset, split, data_dir) if photos else None


def describe(dataset, data_dir=None):
    """What run.json keeps of the data beyond its name (a caption file's
    seeded split), or None."""
    return sources.find(dataset).describe(dataset, data_dir)


def _pixels(image):
    return tf.cast(image, tf.float32)


def example_bytes(examples):
    """Memory one example takes, estimated from its spec."""
    total = 0
    for spec in tf.nest.flatten(examples.element_spec):
        size = _STRING_BYTES if spec.dtype == tf.string else spec.dtype.size
        total += (
            int(np.prod([_UNKNOWN_DIM if d is None else d for d in spec.shape]))
            * size
        )
    return total


def fits_in_memory(examples, budget=CACHE_BUDGET_BYTES):
    """Whether the whole dataset can be cached (an unknown count: yes)."""
    count = int(examples.cardinality())
    return count < 0 or example_bytes(examples) * count <= budget


def training_pairs(
    examples,
    batch_size,
    seed=None,
    steps_per_epoch=None,
    epochs=None,
    cache=None,
):
    """Shuffled batches of (inputs, image_id), one pair per caption, for
    each epoch of `epochs` (a range of epoch numbers, e.g. range(3, 10)
    to resume at the fourth of ten).

    Images are shuffled first and their pairs again, so the captions of one
    image spread over different batches without a buffer of every pair.
    Each epoch is `steps_per_epoch` batches (None: one endless epoch, the
    first of `epochs`) drawn in an order that is a function of (seed,
    epoch) alone, so a run resumed at epoch e sees the batches a run never
    stopped saw from epoch e on. Decoded images are cached in memory when
    `cache` (None: when they fit in CACHE_BUDGET_BYTES); a split that is
    not cached is read again each epoch, and its shuffle buffer is bounded
    in bytes (sources too large to cache, such as precomputed COCO, draw a
    fresh order themselves). Batches are drop_remainder so every step sees
    `batch_size` pairs.
    """
    if steps_per_epoch and epochs is None:
        raise ValueError("training_pairs: steps_per_epoch needs epochs.")
    if cache is None:
        cache = fits_in_memory(examples)
    image_shuffle_buffer = IMAGE_SHUFFLE_BUFFER
    if cache:
        examples = examples.cache()
    else:
        budget = SHUFFLE_BUDGET_BYTES // example_bytes(examples)
        image_shuffle_buffer = max(1, min(image_shuffle_buffer, budget))

    def to_pairs(example):
        captions = example["captions"]
        count = tf.shape(captions)[0]
        return tf.data.Dataset.from_tensor_slices(
            (
                tf.repeat(example["image"][None], count, axis=0),
                captions,
                tf.repeat(example["image_id"], count),
            )
        )

    def epoch_batches(epoch):
        # Python integers: deterministic ops refuse a seed that is a tensor.
        epoch_seed = None if seed is None else seed * 1_000_003 + epoch
        pairs = examples.shuffle(image_shuffle_buffer, seed=epoch_seed)
        pairs = pairs.repeat().flat_map(to_pairs)
        pairs = pairs.shuffle(PAIR_SHUFFLE_BUFFER, seed=epoch_seed)
        batches = pairs.batch(batch_size, drop_remainder=True)
        return batches.take(steps_per_epoch) if steps_per_epoch else batches

    first_epoch = 0 if epochs is None else epochs.start
    batches = epoch_batches(first_epoch)
    for epoch in epochs[1:] if steps_per_epoch else ():
        batches = batches.concatenate(epoch_batches(epoch))
    batches = batches.map(
        lambda image, caption, image_id: (
            {"image": _pixels(image), "caption": caption},
            image_id,
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).prefetch(tf.data.AUTOTUNE)
    # Across workers, split each global batch rather than the source files:
    # worker k takes the k-th slice of every batch one process would make,
    # so a multi-worker run trains on the very batches of a single one.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return batches.with_options(options)


def evaluation_batches(examples, batch_size=250):
    """Batches of (pixels [b, H, W, 3], captions [b, (C)]) in dataset
    order; the captions ragged where images have different counts."""
    return (
        examples.map(
            lambda example: (_pixels(example["image"]), example["captions"]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .ragged_batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
