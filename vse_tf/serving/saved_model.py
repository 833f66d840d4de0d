"""Both towers as SavedModels for TF Serving.

`export_towers(model, EXPORT)` writes, in TF Serving's layout (one base path
per model, one numbered folder per version):

  EXPORT/image_tower/N/   serving_default: image_bytes, tf.string [None]
                            (JPEG or PNG), decoded and resized in the graph
                          serving_pixels: pixels, float32 [None, H, W, 3]
  EXPORT/text_tower/N/    serving_default: text, tf.string [None], raw
                            captions, tokenized in the graph

An image tower on precomputed features (gin/*_precomp.gin) has one
signature instead, serving_default: features, float32 [None, regions, dim]
(or [None, dim]).

Every signature returns {"embedding": float32 [None, D]}, L2-normalized; a
run fitted with a hubness correction (`vse_tf.evaluation.hubness`) also serves
"hubness": float32 [None], to subtract from the dot product with any
candidate (s(i, t) = e_i . e_t - h_i - h_t), each tower holding the bank of
the other modality's train embeddings it is computed from. Signatures use
core TensorFlow ops only, so the stock `tensorflow_model_server` loads
it. A version is written into a hidden temporary folder and renamed into
place, so TF Serving (which polls the base path for numbered folders) never
sees half a model; an existing version is never overwritten.
"""

import os
import re

import keras
import tensorflow as tf

from vse_tf import errors
from vse_tf import io_utils
from vse_tf.data import images
from vse_tf.evaluation import hubness
from vse_tf.models import towers

IMAGE_TOWER = "image_tower"
TEXT_TOWER = "text_tower"
TOWERS = (IMAGE_TOWER, TEXT_TOWER)


def versions(export_dir, tower):
    """The version numbers already exported for `tower`, ascending."""
    base = os.path.join(export_dir, tower)
    if not os.path.isdir(base):
        return []
    return sorted(
        int(name) for name in os.listdir(base) if re.fullmatch(r"\d+", name)
    )


def latest_version_dir(export_dir, tower):
    """EXPORT/<tower>/<newest version>, or a UserError if there is none."""
    found = versions(export_dir, tower)
    if not found:
        raise errors.UserError(
            f"No exported {tower} in {export_dir!r}: expected numbered "
            f"version folders under {os.path.join(export_dir, tower)}. "
            "Export a run with `python -m vse_tf.export --model_dir=DIR`."
        )
    return os.path.join(export_dir, tower, str(found[-1]))


class _HubnessBank(tf.Module):
    """Embeddings -> their hubness against a bank the SavedModel holds."""

    def __init__(self, bank, neighbours, weight):
        super().__init__(name="hubness_bank")
        self.bank = tf.Variable(bank, trainable=False, name="bank")
        self.neighbours = neighbours
        self.weight = weight

    def __call__(self, embeddings):
        return hubness.hubness(
            embeddings, self.bank, self.neighbours, self.weight
        )


def _serving_outputs(tower, inputs, bank):
    embedding = tower(inputs, training=False)
    if bank is None:
        return {"embedding": embedding}
    return {"embedding": embedding, "hubness": bank(embedding)}


def _archive(tower):
    """An archive holding `tower`'s lookup tables and, once, its weights.

    add_endpoint tracks the variables a traced call captures; tracking the
    whole tower too would store every weight a second time under other keys
    (keras-team/keras#23553: twice the SavedModel on disk and twice the
    variable memory in TF Serving). So only the layers without weights are
    tracked, for the tables of their tokenizers and vocabularies.
    """
    archive = keras.export.ExportArchive()
    for layer in towers.walk_layers(tower):
        if layer.built and not layer.weights:
            archive.track(layer)
    return archive


def _bank(archive, correction, tower_name):
    """The module serving the hubness of `tower_name` (IMAGE_TOWER or
    TEXT_TOWER) against the other modality's bank, tracked by `archive`;
    None without a correction."""
    if correction is None:
        return None
    bank = (
        correction.text_bank
        if tower_name == IMAGE_TOWER
        else correction.image_bank
    )
    module = _HubnessBank(bank, correction.neighbours, correction.weight)
    archive.track(module)
    return module


def image_tower_archive(image_tower, correction=None):
    """The image tower with its two serving signatures."""
    if len(image_tower.inputs[0].shape) != 4:
        return features_tower_archive(image_tower, correction)
    _, height, width, channels = image_tower.inputs[0].shape
    if height != width:
        raise ValueError(f"Square image towers only, not {height}x{width}.")
    archive = _archive(image_tower)
    bank = _bank(archive, correction, IMAGE_TOWER)

    def serve_bytes(image_bytes):
        pixels = images.decode_batch(image_bytes, height, name="image_bytes")
        return _serving_outputs(image_tower, pixels, bank)

    def serve_pixels(pixels):
        return _serving_outputs(image_tower, pixels, bank)

    archive.add_endpoint(
        "serving_default",
        serve_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, "image_bytes")],
    )
    archive.add_endpoint(
        "serving_pixels",
        serve_pixels,
        input_signature=[
            tf.TensorSpec([None, height, width, channels], tf.float32, "pixels")
        ],
    )
    return archive


def features_tower_archive(image_tower, correction=None):
    """An image tower on precomputed features, which it takes as they are."""
    return _one_signature_archive(
        image_tower,
        tf.TensorSpec(image_tower.inputs[0].shape, tf.float32, "features"),
        correction,
        IMAGE_TOWER,
    )


def text_tower_archive(text_tower, correction=None):
    """The text tower taking raw caption strings."""
    return _one_signature_archive(
        text_tower,
        tf.TensorSpec([None], tf.string, "text"),
        correction,
        TEXT_TOWER,
    )


def _one_signature_archive(tower, input_spec, correction, tower_name):
    archive = _archive(tower)
    bank = _bank(archive, correction, tower_name)

    def serve(inputs):
        return _serving_outputs(tower, inputs, bank)

    archive.add_endpoint("serving_default", serve, input_signature=[input_spec])
    return archive


def export_towers(model, export_dir, version=None, correction=None):
    """Writes both towers of `model` as `version`; returns the version.

    `correction`: a fitted `hubness.HubnessCorrection` the towers serve.

    Raises:
      errors.UserError: `version` already exists for either tower.
    """
    if version is None:
        version = 1 + max(
            [
                0,
                *versions(export_dir, IMAGE_TOWER),
                *versions(export_dir, TEXT_TOWER),
            ]
        )
    if version < 1:
        raise errors.UserError(
            f"--version must be a positive integer, not {version}."
        )
    for tower in TOWERS:
        if version in versions(export_dir, tower):
            raise errors.UserError(
                f"{os.path.join(export_dir, tower, str(version))} already "
                "exists and is never overwritten: TF Serving may be serving "
                "it. Pass another --version, or leave it out for the next."
            )
    archives = {
        IMAGE_TOWER: image_tower_archive(model.image_tower, correction),
        TEXT_TOWER: text_tower_archive(model.text_tower, correction),
    }
    io_utils.ensure_writable_dir(export_dir, "export dir")
    # Both towers are written in full before either is renamed into place.
    with io_utils.staging_dir(export_dir, "export") as staging:
        for tower, archive in archives.items():
            # Serving needs no gradients; the packed GRU's hand-written one
            # holds loop state a SavedModel cannot store.
            archive.write_out(
                os.path.join(staging, tower),
                verbose=False,
                options=tf.saved_model.SaveOptions(
                    experimental_custom_gradients=False
                ),
            )
        for tower in TOWERS:
            os.makedirs(os.path.join(export_dir, tower), exist_ok=True)
            os.rename(
                os.path.join(staging, tower),
                os.path.join(export_dir, tower, str(version)),
            )
    return version
