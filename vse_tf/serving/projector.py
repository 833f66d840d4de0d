"""The joint space as a TensorBoard projector log dir.

`write_projector(model, examples, LOG_DIR)` writes a folder holding one point
per image and one per caption, in one space:

  embeddings.tsv          one row of the joint space per point
  metadata.tsv            modality, image_id, text (the caption; for an
                          image, its first caption)
  sprite.png              a thumbnail per point: the picture for an image,
                          a blank tile for a caption
  projector_config.pbtxt  ties them together

Images come first, then their captions in image order. The folder is
written beside its final place and renamed onto it, so TensorBoard never
reads half of one.
"""

import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from google.protobuf import text_format
from tensorboard.plugins.projector import projector_config_pb2

from vse_tf import errors
from vse_tf import io_utils
from vse_tf.evaluation import embedding

TENSOR_NAME = "joint_space"
EMBEDDINGS = "embeddings.tsv"
METADATA = "metadata.tsv"
SPRITE = "sprite.png"
CONFIG = "projector_config.pbtxt"
THUMBNAIL = 32
# TensorBoard's projector refuses sprites larger than 8192 pixels a side.
_MAX_SPRITE_SIDE = 8192


def _clean(text):
    """A TSV cell: tabs and line breaks would split rows and columns."""
    return " ".join(text.split())


def _sprite(images, num_points, size=THUMBNAIL):
    """A square grid of `num_points` tiles: thumbnails, then blank tiles."""
    per_side = int(np.ceil(np.sqrt(num_points)))
    if per_side * size > _MAX_SPRITE_SIDE:
        raise errors.UserError(
            f"{num_points} points do not fit a projector sprite of "
            f"{size}-pixel tiles; lower --max_images."
        )
    thumbnails = tf.image.resize(images, (size, size), antialias=True)
    thumbnails = np.clip(np.round(thumbnails.numpy()), 0, 255).astype(np.uint8)
    tiles = np.full((per_side * per_side, size, size, 3), 240, np.uint8)
    tiles[: len(thumbnails)] = thumbnails
    grid = tiles.reshape(per_side, per_side, size, size, 3)
    return grid.transpose(0, 2, 1, 3, 4).reshape(
        per_side * size, per_side * size, 3
    )


def write_projector(model, examples, log_dir, max_images=500, embedded=None):
    """Embeds the first `max_images` examples and writes `log_dir`.

    `embedded`: the split's (image embeddings, caption embeddings,
    captions per image) as `embedding.embed_examples` gives them, when the
    caller has them (a run's test scoring): their first `max_images`
    images and those images' captions are the points, and nothing is
    embedded again (with cached features, embedding the photos again
    would run the backbones over them a second time).

    Returns:
      The number of points (images + captions).
    """
    # Cached: read once for the metadata and sprite, again for embedding.
    examples = examples.take(max_images).cache()
    pictures, captions, image_ids = [], [], []
    for example in tfds.as_numpy(examples):
        pictures.append(example["image"])
        captions.append([c.decode("utf-8") for c in example["captions"]])
        image_ids.append(int(example["image_id"]))
    if not pictures:
        raise errors.UserError("The split has no images to project.")
    rows = ["modality\timage_id\ttext"]
    rows += [f"image\t{i}\t{_clean(c[0])}" for i, c in zip(image_ids, captions)]
    rows += [
        f"caption\t{i}\t{_clean(caption)}"
        for i, c in zip(image_ids, captions)
        for caption in c
    ]
    sprite = _sprite(np.stack(pictures), len(rows) - 1)
    if embedded is None:
        embedded = embedding.embed_examples(model, examples)
    image_embeddings, text_embeddings, captions_per_image = embedded
    image_embeddings = image_embeddings[: len(pictures)]
    text_embeddings = text_embeddings[
        : int(np.sum(captions_per_image[: len(pictures)]))
    ]
    points = np.concatenate([image_embeddings, text_embeddings])

    config = projector_config_pb2.ProjectorConfig()
    view = config.embeddings.add()
    view.tensor_name = TENSOR_NAME
    view.tensor_path = EMBEDDINGS
    view.metadata_path = METADATA
    view.sprite.image_path = SPRITE
    view.sprite.single_image_dim.extend([THUMBNAIL, THUMBNAIL])

    log_dir = os.path.abspath(log_dir)
    parent = os.path.dirname(log_dir)
    io_utils.ensure_writable_dir(parent, "projector dir")
    with io_utils.staging_dir(parent, "projector") as staging:
        np.savetxt(
            os.path.join(staging, EMBEDDINGS),
            points,
            fmt="%.6g",
            delimiter="\t",
        )
        with open(os.path.join(staging, METADATA), "w", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
        tf.io.write_file(
            os.path.join(staging, SPRITE), tf.io.encode_png(sprite)
        )
        with open(os.path.join(staging, CONFIG), "w") as f:
            f.write(text_format.MessageToString(config))
        io_utils.replace_dir(staging, log_dir)
    return len(points)
