"""Image bytes to tower pixels: crop geometry, pass-through, bad bytes."""

import numpy as np
import pytest
import tensorflow as tf

from vse_tf.data import images


def _blocks(height, width, block, seed=0):
    """An image of solid `block` x `block` squares of random colours."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (height // block, width // block, 3))
    return np.repeat(np.repeat(colours, block, 0), block, 1).astype(np.uint8)


def _png(image):
    return tf.io.encode_png(image).numpy()


def _both_ways(fn, value):
    """fn(value) eagerly and inside tf.data: the two must agree."""
    eager = fn(tf.constant(value)).numpy()
    in_data = next(iter(tf.data.Dataset.from_tensors(value).map(fn))).numpy()
    np.testing.assert_array_equal(eager, in_data)
    return eager


def test_a_tower_sized_image_passes_through_unchanged():
    image = _blocks(32, 32, 1)
    pixels = _both_ways(lambda b: images.decode_and_resize(b, 32), _png(image))
    assert pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels, image.astype(np.float32))


def test_a_wide_image_keeps_its_centre():
    image = _blocks(32, 64, 1)
    pixels = _both_ways(lambda b: images.decode_and_resize(b, 32), _png(image))
    np.testing.assert_allclose(pixels, image[:, 16:48], atol=1e-3)


def test_downscaling_keeps_solid_regions():
    # 8x8 blocks become 4x4 blocks; their 2x2 interiors keep the colour.
    image = _blocks(64, 64, 8)
    pixels = _both_ways(lambda b: images.decode_and_resize(b, 32), _png(image))
    expected = image[::2, ::2].astype(np.float32)
    interior = np.zeros((32, 32), bool)
    for offset in (1, 2):
        interior[offset::4, 1::4] = interior[offset::4, 2::4] = True
    np.testing.assert_allclose(pixels[interior], expected[interior], atol=0.5)


def test_jpeg_decodes_to_the_tower_size():
    jpeg = tf.io.encode_jpeg(_blocks(48, 40, 8)).numpy()
    pixels = images.decode_batch(tf.constant([jpeg, jpeg]), 32).numpy()
    assert pixels.shape == (2, 32, 32, 3)
    assert np.all((pixels >= 0) & (pixels <= 255))


@pytest.mark.parametrize("data", [b"", b"GIF89a....", b"plain text"])
def test_bytes_that_are_not_jpeg_or_png_name_the_input(data):
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_bytes"):
        images.decode_batch(tf.constant([_png(_blocks(8, 8, 1)), data]), 8)
