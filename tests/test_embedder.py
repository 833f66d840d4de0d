"""`vse_tf.load` on a run trained from a caption file: its embeddings give
the run's own metrics.json, from the run folder and from its export."""

import csv
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import vse_tf
from tests.conftest import REPO
from tests.conftest import bindings
from tests.conftest import run_tool
from vse_tf import errors
from vse_tf import evaluation

pytestmark = pytest.mark.slow


def _own_photos(tfds_dir, folder):
    """shapes/tiny's photos as PNG files and a caption file naming them,
    1 to 5 captions a photo (seeded); returns {split: [(path, captions)]}."""
    import vse_tf.data.shapes  # noqa: F401  (registers the builder)

    rng = np.random.default_rng(0)
    photos, rows = {}, []
    for split in ("train", "val", "test"):
        examples = tfds.load("shapes/tiny", split=split, data_dir=tfds_dir)
        photos[split] = []
        for index, example in enumerate(tfds.as_numpy(examples)):
            path = folder / f"{split}_{index}.png"
            path.write_bytes(tf.io.encode_png(example["image"]).numpy())
            captions = [c.decode() for c in example["captions"]]
            captions = captions[: rng.integers(1, 6)]
            photos[split].append((str(path), captions))
            rows += [
                {"image": path.name, "caption": c, "split": split}
                for c in captions
            ]
    with open(folder / "captions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "caption", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return photos


@pytest.fixture(scope="module")
def csv_run(tfds_dir, tmp_path_factory):
    """(model_dir, photos) of a tiny run on a caption file, hubness
    correction on."""
    folder = tmp_path_factory.mktemp("own")
    photos = _own_photos(tfds_dir, folder)
    model_dir = str(tmp_path_factory.mktemp("csv_run"))
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(
            [
                f"train.dataset = 'csv:{folder / 'captions.csv'}'",
                "load_examples.image_size = 32",
                "train.hubness_correction = @HubnessCorrection()",
                "HubnessCorrection.neighbours = 3",
                "train.projector_images = 0",
            ]
        ),
        f"--model_dir={model_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir, photos


def _metrics(model, test, scoring):
    images = model.encode_images([p for p, _ in test], scoring=scoring)
    texts = model.encode_texts(
        [c for _, cs in test for c in cs], scoring=scoring
    )
    return evaluation.retrieval_metrics(
        images, texts, [len(cs) for _, cs in test]
    )


@pytest.mark.parametrize("where", ["run", "export"])
def test_embeddings_give_the_runs_own_metrics(csv_run, where):
    model_dir, photos = csv_run
    with open(os.path.join(model_dir, "run.json")) as f:
        sizes = json.load(f)["data"]["sizes"]
    assert sizes["test"]["images"] == len(photos["test"])
    assert sizes["test"]["captions"] == sum(len(c) for _, c in photos["test"])
    assert len({len(c) for _, c in photos["test"]}) > 1  # uneven counts
    model = vse_tf.load(
        model_dir if where == "run" else os.path.join(model_dir, "export")
    )
    assert model.corrected
    with open(os.path.join(model_dir, "metrics.json")) as f:
        expected = json.load(f)
    corrected = _metrics(model, photos["test"], scoring=True)
    cosine = _metrics(model, photos["test"], scoring=False)
    for name in evaluation.METRIC_NAMES:
        assert corrected[name] == pytest.approx(expected[name], abs=1e-9), name
        assert cosine[name] == pytest.approx(
            expected["cosine"][name], abs=1e-9
        ), name


def test_paths_bytes_and_arrays_embed_alike_in_any_batch(csv_run):
    model_dir, photos = csv_run
    model = vse_tf.load(model_dir)
    paths = [p for p, _ in photos["val"]]
    encoded = [open(p, "rb").read() for p in paths]
    arrays = [tf.io.decode_png(b).numpy() for b in encoded]
    by_path = model.encode_images(paths)
    np.testing.assert_allclose(np.linalg.norm(by_path, axis=1), 1, atol=1e-5)
    for other in (
        model.encode_images(encoded, batch_size=3),
        model.encode_images(arrays, batch_size=1),
    ):
        np.testing.assert_allclose(other, by_path, atol=1e-6)
    one = model.encode_texts("a red ball")
    assert one.shape == (1, by_path.shape[1])


def test_the_readme_snippet_runs(csv_run, tmp_path, monkeypatch):
    model_dir, _ = csv_run
    with open(os.path.join(REPO, "README.md")) as f:
        [snippet] = [
            block
            for block in re.findall(r"```python\n(.*?)```", f.read(), re.S)
            if "vse_tf.load" in block
        ]
    monkeypatch.chdir(tmp_path)
    os.makedirs("runs")
    os.symlink(model_dir, "runs/f8k")
    rng = np.random.default_rng(0)
    for name in re.findall(r'"(\w+\.(?:jpg|png))"', snippet):
        pixels = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
        encode = tf.io.encode_png if name.endswith("png") else tf.io.encode_jpeg
        with open(name, "wb") as f:
            f.write(encode(pixels).numpy())
    scope = {}
    exec(snippet, scope)
    assert scope["images"].shape[0] == 2 and scope["texts"].shape[0] == 2


def test_what_is_not_a_model_is_named(csv_run, tmp_path):
    model_dir, _ = csv_run
    with pytest.raises(errors.UserError, match="no such folder"):
        vse_tf.load(tmp_path / "nothing")
    with pytest.raises(errors.UserError, match="No version 7 of the"):
        vse_tf.load(os.path.join(model_dir, "export"), version=7)
    with pytest.raises(errors.UserError, match="No exported"):
        vse_tf.load(tmp_path)
