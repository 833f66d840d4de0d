"""The projector log dir, read back through a real TensorBoard server."""

import io
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.conftest import run_tool
from vse_tf import gin_config
from vse_tf.data import pipeline
from vse_tf.training import runs

PROJECTED_IMAGES = 12  # train.projector_images in the tiny config
CAPTIONS_PER_IMAGE = 5


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


@pytest.fixture(scope="module")
def projector_server(trained_run, tmp_path_factory):
    """A TensorBoard on 127.0.0.1 over the run's projector dir."""
    model_dir, _ = trained_run
    port = _free_port()
    log = open(tmp_path_factory.mktemp("tensorboard") / "log.txt", "w+")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            os.path.join(model_dir, "projector"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast=false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/data/plugin/projector"
    try:
        deadline = time.time() + 120
        while True:
            try:
                _get(f"{base}/runs", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    pytest.fail(f"TensorBoard did not start:\n{log.read()}")
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def test_split(tfds_dir):
    return list(
        tfds.as_numpy(
            pipeline.load_examples("shapes/tiny", "test", tfds_dir).take(
                PROJECTED_IMAGES
            )
        )
    )


def test_projector_serves_one_run_with_every_point(projector_server):
    assert json.loads(_get(f"{projector_server}/runs")) == ["."]
    info = json.loads(_get(f"{projector_server}/info?run=."))
    (embedding,) = info["embeddings"]
    assert embedding["tensorName"] == "joint_space"
    assert embedding["tensorShape"] == [
        PROJECTED_IMAGES * (1 + CAPTIONS_PER_IMAGE),
        8,
    ]


@pytest.mark.slow
def test_points_are_the_image_then_caption_embeddings(
    projector_server, trained_run, test_split
):
    model_dir, _ = trained_run
    data = _get(f"{projector_server}/tensor?run=.&name=joint_space")
    points = np.frombuffer(data, np.float32).reshape(-1, 8)
    gin_config.load_gin_for_run(model_dir)
    model = runs.load_trained_model(model_dir)
    pixels = np.stack([e["image"] for e in test_split]).astype(np.float32)
    captions = [c for e in test_split for c in e["captions"]]
    expected = np.concatenate(
        [
            model.image_tower(pixels, training=False).numpy(),
            model.text_tower(tf.constant(captions), training=False).numpy(),
        ]
    )
    np.testing.assert_allclose(points, expected, atol=1e-5)


def test_metadata_round_trips_captions_and_image_ids(
    projector_server, test_split
):
    text = _get(f"{projector_server}/metadata?run=.&name=joint_space")
    rows = [line.split("\t") for line in text.decode().splitlines()]
    assert rows[0] == ["modality", "image_id", "text"]
    images, captions = (
        rows[1 : 1 + PROJECTED_IMAGES],
        rows[1 + PROJECTED_IMAGES :],
    )
    assert [r[1] for r in images] == [str(e["image_id"]) for e in test_split]
    assert {r[0] for r in images} == {"image"}
    assert captions == [
        ["caption", str(e["image_id"]), c.decode()]
        for e in test_split
        for c in e["captions"]
    ]


def test_sprite_shows_each_image_as_its_picture(projector_server, test_split):
    png = _get(f"{projector_server}/sprite_image?run=.&name=joint_space")
    sprite = tf.io.decode_png(png).numpy()
    per_side = math.ceil(math.sqrt(PROJECTED_IMAGES * 6))
    assert sprite.shape == (per_side * 32, per_side * 32, 3)
    for index in (0, PROJECTED_IMAGES - 1):
        row, column = divmod(index, per_side)
        tile = sprite[
            row * 32 : (row + 1) * 32, column * 32 : (column + 1) * 32
        ]
        # The tiny images are 32 px, the thumbnail size: no resampling.
        np.testing.assert_allclose(tile, test_split[index]["image"], atol=1)


@pytest.mark.slow
def test_projector_cli_rewrites_the_dir_whole(trained_run, tfds_dir, tmp_path):
    model_dir, _ = trained_run
    out = tmp_path / "projector"
    for max_images in (5, 3):
        result = run_tool(
            "projector",
            f"--model_dir={model_dir}",
            f"--data_dir={tfds_dir}",
            f"--max_images={max_images}",
            f"--projector_dir={out}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        metadata = (out / "metadata.tsv").read_text().splitlines()
        assert len(metadata) == 1 + max_images * 6
    assert sorted(os.listdir(tmp_path)) == ["projector"]
    with io.open(out / "embeddings.tsv") as f:
        assert len(f.read().splitlines()) == 3 * 6


@pytest.mark.slow
def test_projector_without_a_run_is_a_clear_error(tmp_path):
    result = run_tool("projector", f"--model_dir={tmp_path}")
    assert result.returncode == 2
    assert "not a training run" in " ".join(result.stderr.split())
    assert not os.listdir(tmp_path)
