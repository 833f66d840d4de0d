"""Backbone features computed once: each feature lands on its own example."""

from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from vse_tf.training import features


def _tower(backbone):
    return SimpleNamespace(backbone=backbone)


@pytest.mark.parametrize("uneven", [False, True])
def test_captions_sorted_by_length_come_back_in_place(monkeypatch, uneven):
    monkeypatch.setenv("VSE_TF_QUIET_PROGRESS", "1")
    rng = np.random.default_rng(0)
    # Five captions an image, or 1 to 6 (one's own data).
    counts = rng.integers(1, 7, size=7) if uneven else np.full(7, 5)
    captions = [
        [
            " ".join(["w" * rng.integers(1, 6)] * rng.integers(1, 9))
            for _ in range(count)
        ]
        for count in counts
    ]
    pixels = rng.integers(0, 256, (7, 4, 4, 3), dtype=np.uint8)
    examples = tf.data.Dataset.from_tensor_slices(
        {
            "image": pixels,
            "captions": tf.ragged.constant(captions)
            if uneven
            else np.array(captions, dtype=bytes),
            "image_id": np.arange(7) + 100,
        }
    )

    def text_backbone(texts, training):
        # Two features a NumPy reference can tell apart: length and spaces.
        spaces = tf.strings.length(texts) - tf.strings.length(
            tf.strings.regex_replace(texts, " ", "")
        )
        return tf.cast(
            tf.stack([tf.strings.length(texts), spaces], 1), tf.float32
        )

    model = SimpleNamespace(
        image_tower=_tower(lambda x, training: tf.reduce_mean(x, [1, 2])),
        text_tower=_tower(text_backbone),
    )
    # Batches smaller than the data, so that sorting crosses batches.
    arrays = features.compute_features(
        model, examples, batch_size=3, caption_batch_size=4
    )
    np.testing.assert_array_equal(arrays["image_id"], np.arange(7) + 100)
    np.testing.assert_allclose(
        arrays["image"], pixels.mean(axis=(1, 2)), rtol=1e-6
    )
    expected = np.array(
        [[len(c), c.count(" ")] for row in captions for c in row], np.float32
    )
    np.testing.assert_array_equal(arrays["captions"], expected)
    np.testing.assert_array_equal(arrays["captions_per_image"], counts)


def test_bfloat16_features_are_stored_as_float32_and_reused(
    monkeypatch, tmp_path
):
    # Backbones under mixed_bfloat16 give bfloat16 features; the cache
    # must read back as numbers (np.load has no bfloat16).
    monkeypatch.setenv("VSE_TF_QUIET_PROGRESS", "1")
    monkeypatch.setattr(features, "backbone_signature", lambda model: "s")
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (4, 4, 4, 3), dtype=np.uint8)
    examples = tf.data.Dataset.from_tensor_slices(
        {
            "image": pixels,
            "captions": np.array([[b"a b"] * 5] * 4),
            "image_id": np.arange(4),
        }
    )
    model = SimpleNamespace(
        image_tower=_tower(
            lambda x, training: tf.cast(tf.reduce_mean(x, [1, 2]), tf.bfloat16)
        ),
        text_tower=_tower(
            lambda t, training: tf.cast(
                tf.stack([tf.strings.length(t)] * 2, 1), tf.bfloat16
            )
        ),
    )
    first = features.cached_examples(model, examples, "val", str(tmp_path))
    again = features.cached_examples(model, examples, "val", str(tmp_path))
    for dataset in (first, again):
        [row] = list(dataset.batch(4).as_numpy_iterator())
        assert row["image"].dtype == np.float32
        expected = tf.cast(
            tf.cast(pixels.mean(axis=(1, 2)), tf.bfloat16), tf.float32
        ).numpy()
        np.testing.assert_array_equal(row["image"], expected)
        np.testing.assert_array_equal(row["captions"], np.full((4, 5, 2), 3))


def test_cached_examples_give_each_image_its_own_captions(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("VSE_TF_QUIET_PROGRESS", "1")
    monkeypatch.setattr(features, "backbone_signature", lambda model: "s")
    captions = [["a"], ["bb", "ccc", "dddd"], ["eeeee", "ffffff"]]
    examples = tf.data.Dataset.from_tensor_slices(
        {
            "image": np.zeros((3, 2, 2, 3), np.uint8),
            "captions": tf.ragged.constant(captions),
            "image_id": np.arange(3),
        }
    )
    model = SimpleNamespace(
        image_tower=_tower(lambda x, training: tf.reduce_mean(x, [1, 2])),
        text_tower=_tower(
            lambda t, training: tf.cast(
                tf.strings.length(t)[:, None], tf.float32
            )
        ),
    )
    for _ in range(2):  # computed, then read back
        cached = features.cached_examples(model, examples, "val", str(tmp_path))
        lengths = [
            e["captions"][:, 0].tolist() for e in cached.as_numpy_iterator()
        ]
        assert lengths == [[1], [2, 3, 4], [5, 6]]
