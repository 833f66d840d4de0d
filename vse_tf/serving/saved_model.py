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
it, and each version carries warm-up requests for it (`warmup`). Both
towers are written into a hidden temporary folder, then published as one
version N (`publish`): a server never sees one tower's version N without
the other's; an existing version is never overwritten.
"""

import os

import keras
import tensorflow as tf

from vse_tf import errors
from vse_tf import io_utils
from vse_tf.data import images
from vse_tf.evaluation import hubness
from vse_tf.models import towers
from vse_tf.serving import publish
from vse_tf.serving import warmup

IMAGE_TOWER = "image_tower"
TEXT_TOWER = "text_tower"
TOWERS = (IMAGE_TOWER, TEXT_TOWER)


def versions(export_dir, tower):
    """The version numbers already exported for `tower`, ascending."""
    return publish.numbered(os.path.join(export_dir, tower))


def latest_version(export_dir):
    """The newest version that both towers have, or a UserError."""
    found = set(versions(export_dir, IMAGE_TOWER)) & set(
        versions(export_dir, TEXT_TOWER)
    )
    if not found:
        raise errors.UserError(
            f"No exported towers in {export_dir!r}: expected the same "
            f"numbered version under {os.path.join(export_dir, IMAGE_TOWER)} "
            f"and {os.path.join(export_dir, TEXT_TOWER)}. Export a run with "
            "`python -m vse_tf.export --model_dir=DIR`."
        )
    return max(found)


def version_dirs(export_dir, version=None):
    """(the image tower's folder, the text tower's) of one version:
    `version`, or the newest both towers have, read once so that a version
    published meanwhile cannot pair one tower's with the other's; a
    UserError when a tower lacks it."""
    if version is None:
        version = latest_version(export_dir)
    folders = tuple(
        os.path.join(export_dir, tower, str(version)) for tower in TOWERS
    )
    for tower, folder in zip(TOWERS, folders):
        if not os.path.isdir(folder):
            raise errors.UserError(
                f"No version {version} of the {tower} in {export_dir!r}: "
                f"{folder} does not exist (versions: "
                f"{versions(export_dir, tower) or 'none'})."
            )
    return folders


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


def serving_inputs(tower, tower_name):
    """{signature name: its one input, a tf.TensorSpec} of `tower` served
    as `tower_name` (IMAGE_TOWER or TEXT_TOWER)."""
    if tower_name == TEXT_TOWER:
        return {"serving_default": tf.TensorSpec([None], tf.string, "text")}
    shape = tower.inputs[0].shape
    if len(shape) != 4:  # precomputed features, taken as they are
        return {"serving_default": tf.TensorSpec(shape, tf.float32, "features")}
    _, height, width, channels = shape
    if height != width:
        raise ValueError(f"Square image towers only, not {height}x{width}.")
    return {
        "serving_default": tf.TensorSpec([None], tf.string, "image_bytes"),
        "serving_pixels": tf.TensorSpec(
            [None, height, width, channels], tf.float32, "pixels"
        ),
    }


def tower_archive(tower, tower_name, correction=None):
    """`tower` with its serving signatures (see the module docstring)."""
    archive = _archive(tower)
    bank = _bank(archive, correction, tower_name)
    for name, spec in serving_inputs(tower, tower_name).items():
        archive.add_endpoint(
            name, _endpoint(tower, spec, bank), input_signature=[spec]
        )
    return archive


def _endpoint(tower, spec, bank):
    if spec.name != "image_bytes":

        def serve(inputs):
            return _serving_outputs(tower, inputs, bank)

        return serve
    height = tower.inputs[0].shape[1]

    def serve_bytes(image_bytes):
        pixels = images.decode_batch(image_bytes, height, name="image_bytes")
        return _serving_outputs(tower, pixels, bank)

    return serve_bytes


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
    towers_by_name = {
        IMAGE_TOWER: model.image_tower,
        TEXT_TOWER: model.text_tower,
    }
    archives = {
        name: tower_archive(tower, name, correction)
        for name, tower in towers_by_name.items()
    }
    io_utils.ensure_writable_dir(export_dir, "export dir")
    # Both towers are written in full, then published as one.
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
            warmup.write_warmup_requests(
                os.path.join(staging, tower),
                tower,
                serving_inputs(towers_by_name[tower], tower),
            )
        publish.publish(
            export_dir,
            {tower: os.path.join(staging, tower) for tower in TOWERS},
            version,
            TOWERS,
        )
    return version
