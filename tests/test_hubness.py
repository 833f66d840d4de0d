"""The hubness correction against a NumPy reference, and served as scored."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.conftest import bindings
from tests.conftest import evaluate_again
from tests.conftest import run_tf_only
from tests.conftest import run_tool
from vse_tf import evaluation
from vse_tf import gin_config
from vse_tf.data import pipeline
from vse_tf.evaluation import embedding
from vse_tf.evaluation import hubness
from vse_tf.training import runs


def _unit(rows, dim, seed):
    x = np.random.default_rng(seed).normal(size=(rows, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _reference_hubness(embeddings, bank, k, weight):
    scores = embeddings.astype(np.float64) @ bank.T.astype(np.float64)
    return weight * np.sort(scores, axis=1)[:, -k:].mean(axis=1)


def _reference_ranks(images, texts, h_i, h_t, per_image=5):
    """0-based CSLS ranks by brute force: scores = cos - h_i - h_t."""
    scores = (
        images.astype(np.float64) @ texts.T.astype(np.float64)
        - h_i[:, None]
        - h_t[None, :]
    )
    n = len(images)
    i2t = [
        min(
            int(np.sum(scores[i] > scores[i, j]))
            for j in range(i * per_image, (i + 1) * per_image)
        )
        for i in range(n)
    ]
    t2i = [
        int(np.sum(scores[:, j] > scores[j // per_image, j]))
        for j in range(n * per_image)
    ]
    return np.array(i2t), np.array(t2i)


def test_hubness_is_the_weighted_mean_of_the_top_k_cosines():
    embeddings, bank = _unit(7, 6, 0), _unit(40, 6, 1)
    np.testing.assert_allclose(
        hubness.hubness(embeddings, bank, 5, 0.5).numpy(),
        _reference_hubness(embeddings, bank, 5, 0.5),
        atol=1e-6,
    )
    # k = 1 is the nearest bank row's cosine.
    np.testing.assert_allclose(
        hubness.hubness(embeddings, bank, 1, 1.0).numpy(),
        (embeddings @ bank.T).max(axis=1),
        atol=1e-6,
    )


def test_corrected_metrics_match_brute_force_csls():
    images, texts = _unit(12, 8, 2), _unit(60, 8, 3)
    # Captions near their image, so that the ranking is not chance.
    texts = texts + 1.5 * np.repeat(images, 5, axis=0)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    correction = hubness.HubnessCorrection(
        neighbours=4,
        weight=0.7,
        image_bank=_unit(30, 8, 4),
        text_bank=_unit(30, 8, 5),
    )
    h_i = _reference_hubness(images, correction.text_bank, 4, 0.7)
    h_t = _reference_hubness(texts, correction.image_bank, 4, 0.7)
    expected = evaluation.metrics_from_ranks(
        *_reference_ranks(images, texts, h_i, h_t)
    )
    assert correction.metrics(images, texts) == pytest.approx(expected)
    # Weight 0 is the plain cosine protocol.
    plain = hubness.HubnessCorrection(
        4, 0.0, correction.image_bank, correction.text_bank
    )
    assert plain.metrics(images, texts) == pytest.approx(
        evaluation.retrieval_metrics(images, texts)
    )


def test_a_hub_loses_the_queries_it_steals():
    # Image 0 is a hub: it sits closer to caption 5 (image 1's) than image
    # 1 does, and close to every bank caption. Image 1 sits near no bank
    # caption. The correction gives caption 5 back to image 1.
    hub, other = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    images = np.stack([hub, other]).astype(np.float32)
    texts = np.array([hub] * 5 + [[0.7, 0.6, 0.387]] + [other] * 4, np.float32)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    bank = np.array(
        [[0.95, 0.0, 0.312]] * 3 + [[0.0, 0.2, 0.98]] * 3, np.float32
    )
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    correction = hubness.HubnessCorrection(
        3, 1.0, image_bank=bank, text_bank=bank
    )
    _, plain_t2i = evaluation.retrieval_ranks(images, texts)
    _, corrected_t2i = evaluation.retrieval_ranks(
        *(
            hubness.image_scoring(images, correction.image_hubness(images)),
            hubness.text_scoring(texts, correction.text_hubness(texts)),
        )
    )
    assert plain_t2i[5] == 1 and corrected_t2i[5] == 0


def test_scoring_vectors_give_the_corrected_dot_product():
    images, texts = _unit(3, 4, 6), _unit(5, 4, 7)
    h_i, h_t = np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.4, 0.3, 0.2, 0.1])
    np.testing.assert_allclose(
        hubness.image_scoring(images, h_i) @ hubness.text_scoring(texts, h_t).T,
        images @ texts.T - h_i[:, None] - h_t[None, :],
        atol=1e-6,
    )


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="neighbours"):
        hubness.HubnessCorrection(neighbours=0)
    with pytest.raises(ValueError, match="weight"):
        hubness.HubnessCorrection(weight=-1)


TF_ONLY_CLIENT = r"""
export_dir, response_path, *files = sys.argv[1:]
captions = ["a red circle", "a blue square left of a green triangle"]
image = tf.saved_model.load(f"{export_dir}/image_tower/1")
text = tf.saved_model.load(f"{export_dir}/text_tower/1")
images = image.signatures["serving_default"](
    image_bytes=tf.constant([open(f, "rb").read() for f in files]))
texts = text.signatures["serving_default"](text=tf.constant(captions))
np.savez(response_path, **{f"image_{k}": v.numpy() for k, v in images.items()},
         **{f"text_{k}": v.numpy() for k, v in texts.items()})
"""


@pytest.fixture(scope="module")
def corrected_run(tfds_dir, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("hubness_run"))
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(
            [
                "train.hubness_correction = @HubnessCorrection()",
                "HubnessCorrection.neighbours = 3",
                "HubnessCorrection.weight = 0.5",
                "train.projector_images = 0",
            ]
        ),
        f"--model_dir={model_dir}",
        f"--data_dir={tfds_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir, result


def test_run_fits_banks_on_train_and_reports_both_scorings(
    corrected_run, tfds_dir
):
    model_dir, result = corrected_run
    correction = runs.load_hubness_correction(model_dir)
    train_images = int(
        pipeline.load_examples("shapes/tiny", "train", tfds_dir).cardinality()
    )
    assert correction.neighbours == 3 and correction.weight == 0.5
    # Every train image, and the first caption of each, as the best
    # checkpoint embeds them (embedded again here, in dataset order).
    assert correction.image_bank.shape == (train_images, 8)
    gin_config.load_gin_for_run(model_dir)
    images, texts, captions_per_image = embedding.embed_examples(
        runs.load_trained_model(model_dir),
        pipeline.load_examples("shapes/tiny", "train", tfds_dir),
    )
    np.testing.assert_allclose(correction.image_bank, images, atol=1e-5)
    assert (captions_per_image == 5).all()
    np.testing.assert_allclose(correction.text_bank, texts[::5], atol=1e-5)
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert set(metrics) == {*evaluation.METRIC_NAMES, "cosine"}
    assert set(metrics["cosine"]) == set(evaluation.METRIC_NAMES)
    assert "cosine:" in result.stdout and "hubness correction" in result.stdout


@pytest.mark.slow
def test_evaluate_scores_the_run_as_it_was_trained(
    corrected_run, tfds_dir, tmp_path
):
    model_dir, _ = corrected_run
    _, again, trained = evaluate_again(
        model_dir, tfds_dir, tmp_path / "metrics.json"
    )
    assert again["cosine"] == pytest.approx(trained["cosine"])
    assert {k: v for k, v in again.items() if k != "cosine"} == (
        pytest.approx({k: v for k, v in trained.items() if k != "cosine"})
    )


@pytest.mark.slow
def test_exported_towers_serve_the_hubness_of_their_banks(
    corrected_run, tfds_dir, tmp_path
):
    model_dir, _ = corrected_run
    files = []
    for index, example in enumerate(
        tfds.as_numpy(
            pipeline.load_examples("shapes/tiny", "test", tfds_dir).take(3)
        )
    ):
        files.append(str(tmp_path / f"{index}.png"))
        tf.io.write_file(files[-1], tf.io.encode_png(example["image"]))
    response = str(tmp_path / "response.npz")
    run_tf_only(
        tmp_path,
        TF_ONLY_CLIENT,
        os.path.join(model_dir, "export"),
        response,
        *files,
    )
    served = np.load(response)
    correction = runs.load_hubness_correction(model_dir)
    np.testing.assert_allclose(
        served["image_hubness"],
        _reference_hubness(
            served["image_embedding"], correction.text_bank, 3, 0.5
        ),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        served["text_hubness"],
        _reference_hubness(
            served["text_embedding"], correction.image_bank, 3, 0.5
        ),
        atol=1e-5,
    )


@pytest.mark.slow
def test_search_ranks_by_the_corrected_score(corrected_run, tfds_dir, tmp_path):
    model_dir, _ = corrected_run
    export_dir = os.path.join(model_dir, "export")
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, example in enumerate(
        tfds.as_numpy(
            pipeline.load_examples("shapes/tiny", "test", tfds_dir).take(8)
        )
    ):
        tf.io.write_file(
            str(folder / f"photo{index}.png"),
            tf.io.encode_png(example["image"]),
        )
    query = "a red circle left of a blue square"
    result = run_tool(
        "search",
        f"--export_dir={export_dir}",
        f"--images={folder}",
        f"--query={query}",
        "--k=8",
        f"--index_dir={tmp_path / 'index'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(os.listdir(folder))
    image_tower = tf.saved_model.load(
        os.path.join(export_dir, "image_tower", "1")
    )
    text_tower = tf.saved_model.load(
        os.path.join(export_dir, "text_tower", "1")
    )
    images = image_tower.signatures["serving_default"](
        image_bytes=tf.stack([tf.io.read_file(str(folder / n)) for n in names])
    )
    text = text_tower.signatures["serving_default"](text=tf.constant([query]))
    scores = (text["embedding"].numpy() @ images["embedding"].numpy().T)[0]
    scores -= images["hubness"].numpy() + text["hubness"].numpy()[0]
    hits = re.findall(r"^\s+\d+\.\s+(-?[\d.]+)\s+(.+)$", result.stdout, re.M)
    assert [name for _, name in hits] == [names[i] for i in np.argsort(-scores)]
    np.testing.assert_allclose(
        [float(s) for s, _ in hits], np.sort(scores)[::-1], atol=1e-3
    )


@pytest.mark.slow
def test_too_small_a_train_split_for_k_is_a_clear_error(tfds_dir, tmp_path):
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(
            [
                "train.hubness_correction = @HubnessCorrection()",
                "HubnessCorrection.neighbours = 100000",
                "train.export = False",
                "train.projector_images = 0",
            ]
        ),
        f"--model_dir={tmp_path}",
        f"--data_dir={tfds_dir}",
    )
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert "fewer than the hubness correction's 100000 neighbours" in message
    assert "Traceback" not in result.stderr
    # Refused before training: no epoch ran, nothing claims to be a result.
    assert "Epoch 1" not in result.stdout
    assert not (tmp_path / "metrics.json").exists()
    assert not (tmp_path / "hubness.npz").exists()
