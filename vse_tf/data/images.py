"""Encoded image bytes to the pixels an image tower takes, in the graph.

The same function prepares photos for evaluation and inside the exported
image tower, so a served embedding equals the one scored offline. Core
TensorFlow ops only: stock TF Serving runs them.
"""

import tensorflow as tf

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"


def decode_and_resize(image_bytes, size, name="image_bytes"):
    """One JPEG or PNG to float32 [size, size, 3] pixels in [0, 255].

    The shorter side is resized to `size` (area-preserving antialiasing),
    then the centre is cropped: the evaluation crop of VSE++. An image
    already `size` x `size` passes through unchanged. Bytes that are neither
    JPEG nor PNG raise InvalidArgumentError naming `name`.
    """
    is_png = tf.equal(tf.strings.substr(image_bytes, 0, 8), _PNG_SIGNATURE)
    is_jpeg = tf.equal(tf.strings.substr(image_bytes, 0, 3), _JPEG_SIGNATURE)
    check = tf.debugging.Assert(
        tf.logical_or(is_png, is_jpeg),
        [
            f"{name}: an element is not a JPEG or PNG image; first bytes:",
            tf.strings.substr(image_bytes, 0, 8),
        ],
    )
    with tf.control_dependencies([check]):
        image = tf.io.decode_image(
            image_bytes, channels=3, expand_animations=False
        )
    image.set_shape([None, None, 3])
    return resize_and_crop(image, size)


def resize_and_crop(image, size):
    """Decoded pixels [H, W, 3] to float32 [size, size, 3]: the shorter side
    resized to `size` (area-preserving antialiasing), then the centre
    cropped. An image already `size` x `size` passes through unchanged."""
    pixels = tf.cast(image, tf.float32)
    shape = tf.shape(image)[:2]

    def resize_and_crop():
        scale = size / tf.cast(tf.reduce_min(shape), tf.float32)
        resized = tf.cast(
            tf.round(tf.cast(shape, tf.float32) * scale), tf.int32
        )
        resized = tf.maximum(resized, size)
        image = tf.image.resize(pixels, resized, antialias=True)
        return tf.image.resize_with_crop_or_pad(image, size, size)

    pixels = tf.cond(
        tf.reduce_all(tf.equal(shape, size)), lambda: pixels, resize_and_crop
    )
    return tf.ensure_shape(pixels, [size, size, 3])


def decode_batch(image_bytes, size, name="image_bytes"):
    """A batch of encoded images, [B] strings, to float32 [B, size, size, 3]."""
    return tf.map_fn(
        lambda one: decode_and_resize(one, size, name),
        image_bytes,
        fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
    )
