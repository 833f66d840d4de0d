"""A trained model from Python: `vse_tf.load(path)`, then embeddings.

    import vse_tf
    model = vse_tf.load("runs/f8k")        # a run folder, or its export
    images = model.encode_images(["beach.jpg", "dog.png"])
    texts = model.encode_texts(["a dog on a beach", "a red bus"])
    scores = images @ texts.T              # cosines: unit vectors

A run folder gives its best checkpoint, built from its own
operative_config.gin (the caller needs no gin); an export folder
(`DIR/export`, or a folder holding image_tower/ and text_tower/) gives its
newest version of both towers, or `version`. Either way photos are prepared
as the run's evaluation prepares them (decoded, the shorter side resized to
the tower's input, the centre cropped, rounded to whole pixel values), so
the embeddings of a run's test split give its metrics.json.

A run fitted with a hubness correction ranks by e_i . t_j - h_i - h_t, not
by the cosine. `encode_images(..., scoring=True)` and `encode_texts(...,
scoring=True)` return [e, -h_i, 1] and [t, 1, -h_t] (the embedding and two
columns more), whose dot products are the run's scores; without a
correction they are the embeddings themselves.
"""

import os

import gin
import keras
import numpy as np
import tensorflow as tf

from vse_tf import errors
from vse_tf import gin_config
from vse_tf.data import images as image_decoding
from vse_tf.evaluation import hubness
from vse_tf.serving import saved_model
from vse_tf.training import callbacks
from vse_tf.training import run_dir
from vse_tf.training import runs

IMAGE_BATCH = 32
TEXT_BATCH = 256


def load(path, version=None):
    """The `Embedder` of a run folder (its best checkpoint) or of an
    export folder (its newest version, or `version`)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise errors.UserError(
            f"vse_tf.load({path!r}): no such folder. Give a run's "
            "--model_dir or its export folder."
        )
    if version is None and run_dir.RunDir(path).is_run():
        return _from_run(path)
    export = run_dir.RunDir(path).export
    if not os.path.isdir(
        os.path.join(path, saved_model.IMAGE_TOWER)
    ) and os.path.isdir(export):
        path = export
    return _from_export(path, version)


class Embedder:
    """Unit embeddings of photos and captions from a trained model.

    Attributes:
      image_size: the square photos are resized and cropped to (None for
        an image tower on precomputed features).
      corrected: whether the run ranks with a hubness correction.
      source: what was loaded, for messages.
    """

    def __init__(
        self, embed_images, embed_texts, image_size, corrected, source
    ):
        # embed_*: a batch -> (embeddings, hubness or None), NumPy.
        self._embed_images = embed_images
        self._embed_texts = embed_texts
        self.image_size = image_size
        self.corrected = corrected
        self.source = source

    def __repr__(self):
        correction = ", hubness-corrected" if self.corrected else ""
        return f"Embedder({self.source}{correction})"

    def encode_images(self, images, batch_size=IMAGE_BATCH, scoring=False):
        """[N, D] float32 unit embeddings (with `scoring`, the run's scoring
        vectors, see the module) of photos: file paths, encoded JPEG or
        PNG bytes, or uint8 arrays [H, W, 3]; precomputed features for a
        features tower."""
        images = list(images)
        return self._encode(
            images,
            batch_size,
            lambda batch: self._embed_images(self._pixels(batch)),
            hubness.image_scoring if scoring else None,
            "image",
        )

    def encode_texts(self, texts, batch_size=TEXT_BATCH, scoring=False):
        """[M, D] float32 unit embeddings (with `scoring`, the run's scoring
        vectors) of captions, given as strings."""
        texts = [texts] if isinstance(texts, (str, bytes)) else list(texts)
        return self._encode(
            texts,
            batch_size,
            lambda batch: self._embed_texts(tf.constant(batch, tf.string)),
            hubness.text_scoring if scoring else None,
            "caption",
        )

    def _encode(self, items, batch_size, embed, scoring, unit):
        errors.check_number("batch_size", batch_size, minimum=1, integer=True)
        progress = (
            keras.utils.Progbar(
                len(items),
                unit_name=unit,
                verbose=callbacks.progress_verbosity(),
            )
            if len(items) > 10 * batch_size
            else None
        )
        embeddings, hubs = [], []
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            found, hub = embed(batch)
            embeddings.append(found)
            hubs.append(
                np.zeros(len(batch), np.float32) if hub is None else hub
            )
            if progress:
                progress.add(len(batch))
        if not embeddings:
            raise errors.UserError(f"No {unit}s to encode.")
        embeddings = np.concatenate(embeddings).astype(np.float32)
        if scoring is None or not self.corrected:
            return embeddings
        return scoring(embeddings, np.concatenate(hubs))

    def _pixels(self, batch):
        """A batch of photos as the tower takes them, float32."""
        if self.image_size is None:  # a tower on precomputed features
            return tf.constant(np.asarray(batch, np.float32))
        return tf.stack([self._one_photo(photo) for photo in batch])

    def _one_photo(self, photo):
        size = self.image_size
        if isinstance(photo, (str, os.PathLike)):
            with open(photo, "rb") as f:
                photo = f.read()
        if isinstance(photo, bytes):
            pixels = image_decoding.decode_and_resize(
                tf.constant(photo), size, name="photo"
            )
        else:
            array = np.asarray(photo)
            if array.ndim != 3 or array.shape[-1] != 3:
                raise errors.UserError(
                    "encode_images takes photos as file paths, encoded "
                    "bytes or uint8 arrays [H, W, 3]; got an array of shape "
                    f"{array.shape}."
                )
            pixels = image_decoding.resize_and_crop(tf.constant(array), size)
        # Whole pixel values, as the data pipeline stores decoded photos.
        return tf.round(pixels)


def _from_run(model_dir):
    """The run's best checkpoint, built from its own configuration; gin's
    configuration is cleared again once the model is built."""
    gin.clear_config()
    try:
        gin_config.load_gin_for_run(model_dir)
        model = runs.load_trained_model(model_dir)
    finally:
        gin.clear_config()
    correction = runs.load_hubness_correction(model_dir)
    image_tower, text_tower = model.image_tower, model.text_tower
    embed_images = tf.function(
        lambda x: image_tower(x, training=False), reduce_retracing=True
    )
    embed_texts = tf.function(
        lambda x: text_tower(x, training=False), reduce_retracing=True
    )

    def with_hubness(embed, hubness_of):
        def run(batch):
            found = embed(batch).numpy()
            return found, None if correction is None else hubness_of(found)

        return run

    shape = image_tower.inputs[0].shape
    return Embedder(
        with_hubness(embed_images, getattr(correction, "image_hubness", None)),
        with_hubness(embed_texts, getattr(correction, "text_hubness", None)),
        shape[1] if len(shape) == 4 else None,
        correction is not None,
        f"run {model_dir}, best checkpoint",
    )


def _from_export(export_dir, version):
    """Both towers of one exported version, as TF Serving would load them."""
    image_signatures, text_signatures = (
        tf.saved_model.load(folder).signatures
        for folder in saved_model.version_dirs(export_dir, version)
    )
    text_signature = text_signatures["serving_default"]
    if "serving_pixels" in image_signatures:
        image_signature = image_signatures["serving_pixels"]
        image_size = image_signature.structured_input_signature[1][
            "pixels"
        ].shape[1]
    else:
        image_signature, image_size = image_signatures["serving_default"], None
    corrected = "hubness" in text_signature.structured_outputs

    def served(signature):
        [name] = signature.structured_input_signature[1]

        def run(batch):
            outputs = signature(**{name: batch})
            hub = outputs.get("hubness")
            return outputs["embedding"].numpy(), (
                None if hub is None else hub.numpy()
            )

        return run

    return Embedder(
        served(image_signature),
        served(text_signature),
        image_size,
        corrected,
        f"export {export_dir}, version {version}",
    )
