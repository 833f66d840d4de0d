"""MS-COCO through TFDS coco_captions/2014, on TFDS's mock data: the
Karpathy splits, the captions kept, and gin/coco.gin end to end."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.conftest import REPO
from vse_tf import errors
from vse_tf import gin_config
from vse_tf.data import coco
from vse_tf.data import pipeline
from vse_tf.training import trainer

MOCK_IMAGES = 4  # a split


def _all(dataset):
    return list(tfds.as_numpy(dataset))


def test_train_is_train_plus_restval_with_five_captions(tmp_path):
    with tfds.testing.mock_data(num_examples=MOCK_IMAGES):
        raw = {
            split: _all(tfds.load(coco.TFDS_NAME, split=split))
            for split in ("train", "restval", "test")
        }
        train = _all(coco.coco_captions("train", str(tmp_path), image_size=24))
        test = _all(
            pipeline.load_examples("coco_captions", "test", str(tmp_path))
        )
        every = _all(
            coco.coco_captions(
                "train", str(tmp_path), image_size=24, extra_captions=True
            )
        )
        captions = [
            c.decode()
            for c in _all(
                pipeline.load_captions("coco_captions", "train", str(tmp_path))
            )
        ]
    assert len(train) == 2 * MOCK_IMAGES
    assert [e["image_id"] for e in train] == [
        e["image/id"] for e in raw["train"] + raw["restval"]
    ]
    for example, source in zip(train, raw["train"] + raw["restval"]):
        assert example["image"].shape == (24, 24, 3)
        assert example["image"].dtype == np.uint8
        np.testing.assert_array_equal(
            example["captions"], source["captions"]["text"][:5]
        )
    # The mock draws 5 to 49 captions an image: the extras are kept on
    # request, in train only.
    assert [len(e["captions"]) for e in every] == [
        len(e["captions"]["text"]) for e in raw["train"] + raw["restval"]
    ]
    assert any(len(e["captions"]) > 5 for e in every)
    # (The mock draws other captions when only captions are read, so only
    # their number can be compared.)
    assert len(captions) == 5 * len(train)
    assert len(test) == MOCK_IMAGES
    assert test[0]["image"].shape == (256, 256, 3)


def test_unprepared_coco_says_how_to_build_it(tmp_path):
    with pytest.raises(errors.DatasetError) as error:
        coco.coco_captions("test", str(tmp_path))
    text = str(error.value)
    assert f"tfds build coco_captions/2014 --data_dir={tmp_path}" in text
    assert "--data_dir" in text


TINY_COCO = [
    "coco_captions.image_size = 40",
    "build_backbone_tower.input_size = 40",
    "build_backbone_tower.crop_size = 32",
    "build_backbone_tower.backbone = 'resnet50'",
    "RESNET_WEIGHTS = 'random'",
    "train.epochs = 1",
    "train.steps_per_epoch = 2",
    "train.batch_size = 8",
    "build_text_tower.word_dim = 8",
    "build_text_tower.units = 8",
    "EMBEDDING_DIM = 8",
    "HEAD_UNITS = 16",
    "train.projector_images = 4",
]


def test_coco_gin_trains_and_exports(tmp_path, capsys):
    # VSE++'s fine-tuned ResNet, frozen for the first epoch as in
    # VSE-infinity.
    gin_config.load_gin(
        [os.path.join(REPO, "gin", "coco.gin")],
        TINY_COCO
        + [
            "train.epochs = 2",
            "train.steps_per_epoch = 1",
            "build_backbone_tower.trainable_backbone = True",
            "fine_tune_backbones.frozen_epochs = 1",
            "fine_tune_backbones.learning_rate_multiplier = 0.1",
        ],
    )
    model_dir = str(tmp_path / "run")
    with tfds.testing.mock_data(num_examples=MOCK_IMAGES):
        metrics = trainer.train(model_dir, data_dir=str(tmp_path / "data"))
    with open(os.path.join(model_dir, "metrics.json")) as f:
        assert json.load(f) == pytest.approx(metrics)
    log = capsys.readouterr().out
    assert "epoch 1: backbones frozen" in log
    assert "epoch 2: backbones training, at 0.1x the learning rate" in log
    served = tf.saved_model.load(
        os.path.join(model_dir, "export", "image_tower", "1")
    )
    png = tf.io.encode_png(tf.zeros([50, 60, 3], tf.uint8))
    embedding = served.signatures["serving_default"](
        image_bytes=tf.stack([png, png])
    )["embedding"]
    assert embedding.shape == (2, 8)
    np.testing.assert_allclose(
        np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-5
    )
