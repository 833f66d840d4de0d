"""Backbone features computed once, so that heads train on frozen towers.

A frozen backbone gives the same features every epoch; computing them once
turns an epoch over Flickr8k from minutes of EfficientNet and MiniLM into a
second of two small heads. The features of each split are stored beside the
run (`model_dir/features/<split>.npz`) and reused by a resumed run, as long
as the backbones and the images are the same.
"""

import hashlib
import os

import keras
import numpy as np
import tensorflow as tf

from vse_tf import errors
from vse_tf import io_utils
from vse_tf.training import callbacks

# Bumped whenever the backbones' computation changes in a way their weights
# do not show (1 -> 2: MiniLM with the exact GELU), or the file's layout
# (2 -> 3: the captions' features flat, with a count per image; 3 -> 4:
# MiniLM's GELU in float32 under mixed precision).
VERSION = 4


def _backbones(model):
    towers = (model.image_tower, model.text_tower)
    missing = [
        tower.name
        for tower in towers
        if getattr(tower, "backbone", None) is None
    ]
    if missing:
        raise errors.UserError(
            "train.cache_features = True trains the heads on the features "
            f"of both towers' frozen backbones, but {' and '.join(missing)} "
            "has none: use pretrained towers (e.g. build_efficientnet_"
            "tower, build_minilm_tower) or set train.cache_features = "
            "False."
        )
    return [tower.backbone for tower in towers]


def backbone_signature(model):
    """Changes whenever a backbone's input or output size, architecture,
    weights (each weight by its shape and first 4 KB) or arithmetic
    change: bfloat16 features are not float32 ones."""
    digest = hashlib.sha256(f"v{VERSION}".encode())
    for backbone in _backbones(model):
        digest.update(backbone.name.encode())
        compute_dtype = backbone.dtype_policy.compute_dtype
        if compute_dtype != "float32":  # float32 caches keep their name
            digest.update(compute_dtype.encode())
        digest.update(str(getattr(backbone, "sequence_length", "")).encode())
        if getattr(backbone, "inputs", None):
            # Inputs and outputs: pooled stages add features, not weights.
            digest.update(str(backbone.inputs[0].shape).encode())
            digest.update(str(backbone.outputs[0].shape).encode())
        for weight in backbone.weights:
            digest.update(np.ascontiguousarray(weight.numpy()).tobytes()[:4096])
            digest.update(str(weight.shape).encode())
    return digest.hexdigest()[:16]


def compute_features(
    model, examples, batch_size=64, caption_batch_size=256, label=""
):
    """{"image": [N, F], "captions": [M, G], "captions_per_image": [N],
    "image_id": [N]} arrays, image i's captions after image i - 1's.

    The images go through their backbone in dataset order; the captions,
    all of them, shortest first, so that a batch pads to a length close to
    its own (a text backbone pads to its batch's longest caption).
    """
    image_backbone, text_backbone = _backbones(model)
    # Stored as float32 whatever the backbones compute in: NumPy has no
    # bfloat16 of its own, and np.load reads one back as raw bytes.
    embed_images = tf.function(
        lambda pixels: tf.cast(
            image_backbone(pixels, training=False), tf.float32
        ),
        reduce_retracing=True,
    )
    embed_texts = tf.function(
        lambda texts: tf.cast(text_backbone(texts, training=False), tf.float32),
        reduce_retracing=True,
    )
    batches = (
        examples.map(
            lambda e: (
                tf.cast(e["image"], tf.float32),
                e["captions"],
                e["image_id"],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .ragged_batch(batch_size)
        .prefetch(2)
    )
    total = int(examples.cardinality())
    print(f"Backbone features for {label} ({total} images):")
    images, captions, counts, ids = [], [], [], []
    progress = _progress(total if total > 0 else None, "image")
    for pixels, texts, image_ids in batches:
        images.append(embed_images(pixels).numpy())
        if not isinstance(texts, tf.RaggedTensor):
            texts = tf.RaggedTensor.from_tensor(texts)
        captions.append(texts.flat_values.numpy())
        counts.append(texts.row_lengths().numpy())
        ids.append(image_ids.numpy())
        progress.add(len(ids[-1]))
    flat = np.concatenate(captions)
    return {
        "image": np.concatenate(images),
        "captions": _caption_features(embed_texts, flat, caption_batch_size),
        "captions_per_image": np.concatenate(counts).astype(np.int64),
        "image_id": np.concatenate(ids),
    }


def _caption_features(embed_texts, captions, batch_size):
    """[M, G]: the captions through the text backbone, shortest first."""
    order = np.argsort([len(text) for text in captions], kind="stable")
    caption_features = None
    progress = _progress(len(captions), "caption")
    for start in range(0, len(captions), batch_size):
        rows = order[start : start + batch_size]
        batch = embed_texts(tf.constant(captions[rows])).numpy()
        if caption_features is None:
            caption_features = np.empty(
                (len(captions), batch.shape[-1]), batch.dtype
            )
        caption_features[rows] = batch
        progress.add(len(rows))
    return caption_features


_ARRAYS = ("image", "captions", "captions_per_image", "image_id")


def _progress(total, unit):
    # verbose=2: one line at the end, as fit's, for logs and tools.
    return keras.utils.Progbar(
        total, unit_name=unit, verbose=callbacks.progress_verbosity()
    )


def cached_examples(model, examples, split, cache_dir):
    """`examples` with images and captions replaced by backbone features.

    Same layout as any source ("image", "captions", "image_id"), so the
    training pipeline and evaluation take them unchanged.
    """
    path = os.path.join(cache_dir, f"{split}.npz")
    signature = backbone_signature(model)
    arrays = None
    if os.path.exists(path):
        with np.load(path) as stored:
            if str(stored["signature"]) == signature and len(
                stored["image_id"]
            ) == int(examples.cardinality()):
                arrays = {k: stored[k] for k in _ARRAYS}
                print(f"Backbone features for {split}: reusing {path}.")
    if arrays is None:
        arrays = compute_features(model, examples, label=split)
        os.makedirs(cache_dir, exist_ok=True)
        with io_utils.atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, signature=signature, **arrays)
    return tf.data.Dataset.from_tensor_slices(
        {
            "image": arrays["image"],
            "captions": tf.RaggedTensor.from_row_lengths(
                arrays["captions"], arrays["captions_per_image"]
            ),
            "image_id": arrays["image_id"],
        }
    )
