"""GPO against a NumPy reference, and its defining properties."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from vse_tf.models import image_towers
from vse_tf.models import pooling


def test_positional_encoding_by_hand():
    encoding = pooling.positional_encoding(5, 4)
    # Position 3, feature pair 1: sin and cos of 3 / 10000^(2/4).
    assert encoding[3, 2] == pytest.approx(math.sin(3 / 100.0))
    assert encoding[3, 3] == pytest.approx(math.cos(3 / 100.0))
    assert encoding[2, 0] == pytest.approx(math.sin(2.0))
    np.testing.assert_allclose(encoding[0], [0, 1, 0, 1])


def test_pooled_is_the_rank_weighted_sum_of_sorted_features():
    layer = pooling.GeneralizedPooling()
    features = (
        np.random.default_rng(0).normal(size=(3, 7, 5)).astype(np.float32)
    )
    pooled = layer(features).numpy()
    theta = layer.pool_weights(7).numpy()
    assert theta.sum() == pytest.approx(1.0, abs=1e-6)
    ranked = -np.sort(-features, axis=1)  # largest first, per dimension
    np.testing.assert_allclose(
        pooled, np.einsum("bkd,k->bd", ranked, theta), rtol=1e-5, atol=1e-6
    )


def test_pooling_ignores_the_order_of_the_regions():
    layer = pooling.GeneralizedPooling()
    features = (
        np.random.default_rng(1).normal(size=(2, 9, 4)).astype(np.float32)
    )
    shuffled = features[:, np.random.default_rng(2).permutation(9)]
    np.testing.assert_allclose(layer(features), layer(shuffled), rtol=1e-6)


def test_a_zero_score_is_mean_pooling():
    layer = pooling.GeneralizedPooling()
    features = (
        np.random.default_rng(3).normal(size=(2, 6, 3)).astype(np.float32)
    )
    layer(features)
    # Every rank scores the same, so every rank has the same weight.
    layer.score.set_weights([np.zeros((32, 1), np.float32)])
    np.testing.assert_allclose(
        layer(features), features.mean(axis=1), rtol=1e-5, atol=1e-6
    )


def test_gradients_reach_the_rank_weights():
    layer = pooling.GeneralizedPooling()
    features = tf.random.normal((2, 5, 3), seed=0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(features) ** 2)
    gradients = tape.gradient(loss, layer.trainable_weights)
    assert len(gradients) == len(layer.trainable_weights) > 0
    assert all(float(tf.reduce_sum(tf.abs(g))) > 0 for g in gradients)


def test_gpo_tower_saves_and_loads(tmp_path):
    tower = image_towers.build_precomputed_tower(
        feature_dim=6, regions=4, embedding_dim=8, pooling="gpo", head_units=16
    )
    features = (
        np.random.default_rng(4).normal(size=(3, 4, 6)).astype(np.float32)
    )
    path = str(tmp_path / "tower.keras")
    tower.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(restored(features), tower(features), rtol=1e-6)
    np.testing.assert_allclose(
        np.linalg.norm(tower(features), axis=1), 1.0, rtol=1e-5
    )
