"""Exported towers, loaded the way TF Serving loads them.

The stock `tensorflow_model_server` only knows core TensorFlow ops, so the
SavedModels are loaded by a separate Python process in which importing
keras, keras_hub, tensorflow_text or vse_tf fails.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.conftest import run_tf_only
from tests.conftest import run_tool
from vse_tf import gin_config
from vse_tf.data import pipeline
from vse_tf.training import runs

TF_ONLY_CLIENT = r"""
import json

export_dir, request_path, response_path = sys.argv[1:]
with open(request_path) as f:
    request = json.load(f)
image_tower = tf.saved_model.load(f"{export_dir}/image_tower/1")
text_tower = tf.saved_model.load(f"{export_dir}/text_tower/1")
serve_bytes = image_tower.signatures["serving_default"]
serve_pixels = image_tower.signatures["serving_pixels"]
serve_text = text_tower.signatures["serving_default"]

images = [open(path, "rb").read() for path in request["image_files"]]
outputs = {
    "from_bytes": serve_bytes(image_bytes=tf.constant(images))["embedding"],
    "from_pixels": serve_pixels(
        pixels=tf.constant(np.load(request["pixels_file"])))["embedding"],
    "captions": serve_text(text=tf.constant(request["captions"]))["embedding"],
    "first_alone": serve_text(
        text=tf.constant(request["captions"][:1]))["embedding"],
    "empty": serve_text(text=tf.constant([""]))["embedding"],
}
errors = {}
for name, data in request["bad_images"].items():
    try:
        serve_bytes(image_bytes=tf.constant([data.encode("latin-1")]))
        errors[name] = None
    except tf.errors.OpError as error:
        errors[name] = [type(error).__name__, error.message]
# TF Serving's warm-up: each record a PredictionLog, replayed.
from tensorflow_serving.apis import prediction_log_pb2

warmup = {}
for tower, loaded in (("image_tower", image_tower), ("text_tower", text_tower)):
    warmup[tower] = []
    path = f"{export_dir}/{tower}/1/assets.extra/tf_serving_warmup_requests"
    for record in tf.data.TFRecordDataset(path):
        request = prediction_log_pb2.PredictionLog.FromString(
            record.numpy()).predict_log.request
        signature = loaded.signatures[request.model_spec.signature_name]
        replied = signature(**{name: tf.constant(tf.make_ndarray(tensor))
                               for name, tensor in request.inputs.items()})
        warmup[tower].append([request.model_spec.name,
                              request.model_spec.signature_name,
                              *request.inputs,
                              replied["embedding"].shape[0]])
np.savez(response_path, **{k: v.numpy() for k, v in outputs.items()})
with open(response_path + ".json", "w") as f:
    json.dump({"errors": errors,
               "warmup": warmup,
               "unregistered_ops": {
                   tower: unregistered_ops(f"{export_dir}/{tower}/1")
                   for tower in ("image_tower", "text_tower")},
               "forbidden_loaded": sorted(
                   name for name in ("keras", "keras_hub", "vse_tf",
                                     "tensorflow_text")
                   if sys.modules.get(name) is not None)}, f)
"""


@pytest.fixture(scope="module")
def served(trained_run, tfds_dir, tmp_path_factory):
    """The TF-only process's answers, and what the package computes."""
    model_dir, _ = trained_run
    work = tmp_path_factory.mktemp("served")
    examples = list(
        tfds.as_numpy(
            pipeline.load_examples("shapes/tiny", "test", tfds_dir).take(4)
        )
    )
    pixels = np.stack([e["image"] for e in examples]).astype(np.float32)
    image_files = []
    for index, example in enumerate(examples):
        path = str(work / f"{index}.png")
        tf.io.write_file(path, tf.io.encode_png(example["image"]))
        image_files.append(path)
    captions = [c.decode() for e in examples for c in e["captions"][:2]]
    captions.append("A RED circle, left of... a blue square!")
    np.save(work / "pixels.npy", pixels)
    request = {
        "image_files": image_files,
        "pixels_file": str(work / "pixels.npy"),
        "captions": captions,
        "bad_images": {
            "text": "this is not an image",
            "empty": "",
            "truncated_png": "\x89PNG\r\n\x1a\n" + "\x00" * 30,
        },
    }
    with open(work / "request.json", "w") as f:
        json.dump(request, f)
    response = str(work / "response.npz")
    run_tf_only(
        work,
        TF_ONLY_CLIENT,
        os.path.join(model_dir, "export"),
        work / "request.json",
        response,
    )
    with open(response + ".json") as f:
        report = json.load(f)

    gin_config.load_gin_for_run(model_dir)
    model = runs.load_trained_model(model_dir)
    expected = {
        "images": model.image_tower(pixels, training=False).numpy(),
        "captions": model.text_tower(
            tf.constant(captions), training=False
        ).numpy(),
    }
    return dict(np.load(response)), report, expected


def test_serving_process_never_imports_the_training_stack(served):
    _, report, _ = served
    assert report["unregistered_ops"] == {"image_tower": [], "text_tower": []}
    assert report["forbidden_loaded"] == []


def test_each_version_carries_warm_up_requests_that_replay(served):
    _, report, _ = served
    assert report["warmup"] == {
        "image_tower": [
            ["image_tower", "serving_default", "image_bytes", 1],
            ["image_tower", "serving_default", "image_bytes", 8],
            ["image_tower", "serving_pixels", "pixels", 1],
            ["image_tower", "serving_pixels", "pixels", 8],
        ],
        "text_tower": [
            ["text_tower", "serving_default", "text", 1],
            ["text_tower", "serving_default", "text", 8],
        ],
    }


def test_image_signatures_match_the_package_tower(served):
    outputs, _, expected = served
    np.testing.assert_allclose(
        outputs["from_pixels"], expected["images"], atol=1e-5
    )
    # PNG is lossless and the test images are already tower-sized.
    np.testing.assert_allclose(
        outputs["from_bytes"], expected["images"], atol=1e-5
    )


def test_text_signature_matches_the_package_tower(served):
    outputs, _, expected = served
    np.testing.assert_allclose(
        outputs["captions"], expected["captions"], atol=1e-5
    )
    np.testing.assert_allclose(
        outputs["first_alone"][0], outputs["captions"][0], atol=1e-6
    )


def test_every_embedding_is_a_finite_unit_vector(served):
    outputs, _, _ = served
    for name, embeddings in outputs.items():
        assert np.all(np.isfinite(embeddings)), name
        np.testing.assert_allclose(
            np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5, err_msg=name
        )


def test_undecodable_bytes_are_an_invalid_argument(served):
    _, report, _ = served
    for name, error in report["errors"].items():
        assert error is not None, f"{name} was accepted"
        kind, message = error
        assert kind == "InvalidArgumentError", (name, error)
    # Bytes that are no image at all are named as the input they came in.
    assert "image_bytes" in report["errors"]["text"][1]
    assert "image_bytes" in report["errors"]["empty"][1]


@pytest.mark.slow
def test_saved_model_cli_lists_the_signatures(trained_run):
    model_dir, _ = trained_run
    shown = {}
    for tower in ("image_tower", "text_tower"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tensorflow.python.tools.saved_model_cli",
                "show",
                "--dir",
                os.path.join(model_dir, "export", tower, "1"),
                "--all",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        shown[tower] = result.stdout
    image, text = shown["image_tower"], shown["text_tower"]
    assert "signature_def['serving_default']" in image
    assert "signature_def['serving_pixels']" in image
    assert "inputs['image_bytes'] tensor_info:" in image
    assert "dtype: DT_STRING" in image
    assert "inputs['pixels'] tensor_info:" in image
    assert "shape: (-1, 32, 32, 3)" in image
    assert "inputs['text'] tensor_info:" in text
    for listing in (image, text):
        assert "outputs['embedding'] tensor_info:" in listing
        assert "shape: (-1, 8)" in listing


def _tree(path):
    return sorted(
        os.path.relpath(os.path.join(root, name), path)
        for root, dirs, files in os.walk(path)
        for name in dirs + files
    )


@pytest.mark.slow
def test_export_cli_adds_versions_and_never_overwrites(trained_run, tmp_path):
    model_dir, _ = trained_run
    export_dir = str(tmp_path / "export")
    for version in (1, 2):
        result = run_tool(
            "export", f"--model_dir={model_dir}", f"--export_dir={export_dir}"
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"image_tower/{version}" in result.stdout
    assert sorted(os.listdir(os.path.join(export_dir, "text_tower"))) == [
        "1",
        "2",
    ]
    before = _tree(export_dir)
    result = run_tool(
        "export",
        f"--model_dir={model_dir}",
        f"--export_dir={export_dir}",
        "--version=2",
    )
    assert result.returncode == 2
    assert "already exists" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert _tree(export_dir) == before


@pytest.mark.slow
def test_export_without_a_checkpoint_is_a_clear_error(tmp_path):
    result = run_tool("export", f"--model_dir={tmp_path}")
    assert result.returncode == 2
    assert "not a training run" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_each_weight_is_stored_once(trained_run):
    model_dir, _ = trained_run
    gin_config.load_gin_for_run(model_dir)
    model = runs.load_trained_model(model_dir)
    for name, tower in (
        ("image_tower", model.image_tower),
        ("text_tower", model.text_tower),
    ):
        stored = tf.train.list_variables(
            os.path.join(
                model_dir, "export", name, "1", "variables", "variables"
            )
        )
        values = sum(int(np.prod(shape)) for _, shape in stored)
        # Every weight, and nothing twice: keras-team/keras#23553 would
        # store each one a second time.
        assert tower.count_params() <= values < tower.count_params() + 16, name
