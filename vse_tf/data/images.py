"""Encoded image bytes to the pixels an image tower takes, in the graph.

The same function prepares photos for evaluation and inside the exported
image tower, so a served embedding equals the one scored offline. Core
TensorFlow ops only: stock TF Serving runs them. And before any decoding,
whether a file is a whole photo at all (`looks_complete`, `whole_photos`).
"""

import os

import tensorflow as tf

from vse_tf import errors

_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
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


def looks_complete(path):
    """Whether the file is a whole JPEG or PNG: right start and end markers.

    Catches what breaks real datasets (a truncated download, an HTML error
    page saved as .jpg, an empty file) in microseconds a file, before
    training starts rather than as a crash in the middle of an epoch.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(os.path.getsize(path) - 12, 0))
            tail = f.read()
    except OSError:
        return False
    if head.startswith(_JPEG_START):
        # Some encoders pad after the end marker.
        return _JPEG_END in tail
    return head.startswith(_PNG_START) and tail.endswith(_PNG_END)


def file_names(paths):
    """Each path relative to the deepest folder they all share: the names
    a photo has in its dataset ("1000268201_693b08cb0e.jpg",
    "val2014/COCO_val2014_000000391895.jpg")."""
    if not paths:
        return []
    root = os.path.commonpath([os.path.dirname(path) for path in paths])
    return [os.path.relpath(path, root) for path in paths]


def bad_photo_policy(split, chosen=None):
    """`chosen` ("skip" or "error"), or by default "skip" in train and
    "error" in val and test, whose size the protocols fix."""
    if chosen is not None:
        return chosen
    return "skip" if split == "train" else "error"


def whole_photos(paths, captions, ids, what, on_bad_image, originals):
    """(paths, captions, ids) without the photos that are not whole JPEG
    or PNG files: those are skipped and counted ("skip") or an error
    ("error")."""
    whole = [looks_complete(path) for path in paths]
    bad = [path for path, ok in zip(paths, whole) if not ok]
    if bad:
        listed = ", ".join(bad[:3]) + (" ..." if len(bad) > 3 else "")
        if on_bad_image == "error":
            raise errors.DatasetError(
                f"{len(bad)} image(s) of {what} are not whole JPEG or PNG "
                f"files: {listed}. The protocols score whole val and test "
                f"splits; replace the file(s) with {originals}, or set "
                "load_examples.on_bad_image = 'skip' to score without them."
            )
        print(
            f"{what}: skipped {len(bad)} of {len(paths)} images that are "
            f"not whole JPEG or PNG files ({listed})."
        )
    keep = [i for i, ok in enumerate(whole) if ok]
    return (
        [paths[i] for i in keep],
        [captions[i] for i in keep],
        [ids[i] for i in keep],
    )
