"""Image towers on ImageNet backbones: crops, normalization, weights from
local files and keras-hub preset folders, and their errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from vse_tf.models import backbone_towers
from vse_tf.pretrained.torch_weights import WeightsError


def _pixels(size, batch=3, seed=0):
    return (
        np.random.default_rng(seed)
        .uniform(0, 255, (batch, size, size, 3))
        .astype(np.float32)
    )


def test_evaluation_crop_is_the_centre():
    crop = backbone_towers.RandomResizedCrop(4)
    images = _pixels(8)
    np.testing.assert_array_equal(crop(images), images[:, 2:6, 2:6])


def test_a_whole_image_box_is_the_image_or_its_mirror():
    crop = backbone_towers.RandomResizedCrop(
        8, scale=(1.0, 1.0), ratio=(1.0, 1.0), seed=1
    )
    images = _pixels(8, batch=16)
    crops = crop(images, training=True).numpy()
    flipped = 0
    for image, out in zip(images, crops):
        if np.allclose(out, image, atol=1e-3):
            continue
        np.testing.assert_allclose(out, image[:, ::-1], atol=1e-3)
        flipped += 1
    assert 0 < flipped < 16  # both happen


@pytest.mark.parametrize("size", [1, 5, 12])
def test_crop_and_resize_is_tensorflows_and_compiles_with_xla(size):
    rng = np.random.default_rng(3)
    images = _pixels(9, batch=4)
    top, left = rng.uniform(0, 0.5, 4), rng.uniform(0, 0.5, 4)
    boxes = np.stack(
        [
            top,
            left,
            top + rng.uniform(0.1, 0.5, 4),
            left + rng.uniform(0.1, 0.5, 4),
        ],
        axis=1,
    ).astype(np.float32)
    boxes[0] = [0, 0, 1, 1]  # the whole image: exact pixels on the grid
    expected = tf.image.crop_and_resize(
        images, boxes, tf.range(4), [size, size]
    )
    found = backbone_towers.crop_and_resize(images, boxes, size)
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-3)
    compiled = tf.function(backbone_towers.crop_and_resize, jit_compile=True)
    np.testing.assert_allclose(
        compiled(images, boxes, size), expected, rtol=1e-5, atol=1e-3
    )


def test_the_training_crop_compiles_with_xla():
    # So that a train step on raw photos compiles (train.jit_compile).
    crop = backbone_towers.RandomResizedCrop(8, seed=4)
    crops = tf.function(lambda x: crop(x, training=True), jit_compile=True)(
        _pixels(16)
    )
    assert crops.shape == (3, 8, 8, 3)
    assert np.all(np.isfinite(crops))


def test_training_crops_zoom_in_at_random():
    crop = backbone_towers.RandomResizedCrop(8, scale=(0.1, 0.3), seed=2)
    # A horizontal ramp: a crop of a tenth to a third of the area spans a
    # narrower range of values than the whole image.
    ramp = np.tile(
        np.linspace(0, 255, 32, dtype=np.float32)[None, :, None], (32, 1, 3)
    )[None].repeat(6, axis=0)
    crops = crop(ramp, training=True).numpy()
    spans = crops.max(axis=(1, 2, 3)) - crops.min(axis=(1, 2, 3))
    assert np.all(spans < 0.8 * 255)
    assert len(set(np.round(crops[:, 0, 0, 0], 3))) > 1  # different places


def test_caffe_normalization_is_keras_preprocess_input():
    pixels = _pixels(5)
    np.testing.assert_allclose(
        backbone_towers.CaffeNormalization()(pixels),
        keras.applications.resnet.preprocess_input(pixels.copy()),
        rtol=1e-6,
        atol=1e-4,
    )


def test_resnet_weights_load_from_a_local_file(tmp_path):
    kwargs = dict(
        backbone="resnet50", input_size=40, crop_size=32, embedding_dim=8
    )
    source = backbone_towers.build_backbone_tower(weights="random", **kwargs)
    path = str(tmp_path / "resnet50_notop.weights.h5")
    source.backbone.get_layer("resnet50").save_weights(path)
    loaded = backbone_towers.build_backbone_tower(weights=path, **kwargs)
    pixels = _pixels(40)
    np.testing.assert_allclose(
        loaded.backbone(pixels), source.backbone(pixels), rtol=1e-5, atol=1e-5
    )
    # Frozen by default: only the head trains.
    head = loaded.head
    assert loaded.trainable_weights == head.trainable_weights
    assert len(head.trainable_weights) == 2  # a linear head: kernel, bias


@pytest.mark.parametrize(
    "weights,message",
    [
        (None, "not set"),
        ("/nowhere/resnet152.h5", "not at '/nowhere/resnet152.h5'"),
    ],
)
def test_missing_resnet_weights_say_where_to_get_them(weights, message):
    with pytest.raises(WeightsError) as error:
        backbone_towers.build_backbone_tower(weights=weights)
    text = str(error.value)
    assert message in text
    assert "resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5" in text
    assert "'random'" in text


def test_a_keras_hub_preset_folder_is_a_backbone(tmp_path):
    import keras_hub

    vit = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
    )
    folder = str(tmp_path / "vit")
    vit.save_to_preset(folder)
    keras_hub.layers.ViTImageConverter(
        image_size=(32, 32), scale=1 / 127.5, offset=-1.0
    ).save_to_preset(folder)
    tower = backbone_towers.build_backbone_tower(
        backbone=folder,
        weights="pretrained",
        input_size=40,
        crop_size=32,
        embedding_dim=8,
    )
    pixels = _pixels(40)
    # The class token of the preset's own ViT on the centre crop, scaled
    # to [-1, 1] as its converter says.
    expected = vit(pixels[:, 4:36, 4:36] / 127.5 - 1.0)[:, 0]
    np.testing.assert_allclose(
        tower.backbone(pixels), expected, rtol=1e-4, atol=1e-5
    )
    with pytest.raises(WeightsError, match="not a keras-hub preset folder"):
        backbone_towers.build_backbone_tower(
            backbone=str(tmp_path), weights="pretrained"
        )
