"""The karpathy_captions TFDS builder on a Flickr30K fixture in the real
layout (a manual folder of JPEGs and Karpathy's split file)."""

import os

import numpy as np
import pytest

from tests.conftest import REPO
from tests.conftest import recalls_by_brute_force
from tests.test_karpathy import write_dataset
from vse_tf import errors
from vse_tf import gin_config
from vse_tf.data import karpathy
from vse_tf.data import pipeline
from vse_tf.training import trainer

SPLITS = [
    "train",
    "test",
    "train",
    "val",
    "restval",
    "train",
    "test",
    "val",
    "train",
    "train",
]


def _all(examples):
    return list(examples.as_numpy_iterator())


def test_records_equal_the_files_they_are_built_from(tmp_path):
    write_dataset(tmp_path, "flickr30k", SPLITS, folder="flickr30k-images")
    data_dir = str(tmp_path)
    for split in ("train", "val", "test"):
        built = _all(
            pipeline.load_examples(
                "karpathy_captions/flickr30k", split, data_dir
            )
        )
        direct = _all(karpathy.load_examples("flickr30k", split, data_dir))
        assert [e["image_id"] for e in built] == [e["image_id"] for e in direct]
        for a, b in zip(built, direct):
            # The same JPEG bytes, decoded and cropped by the same function.
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["captions"], b["captions"])
    assert os.path.isdir(tmp_path / "karpathy_captions" / "flickr30k")
    captions = _all(
        pipeline.load_captions("karpathy_captions/flickr30k", "train", data_dir)
    )
    assert len(captions) == 5 * (
        SPLITS.count("train") + SPLITS.count("restval")
    )


def test_missing_manual_files_say_where_they_go(tmp_path):
    with pytest.raises(errors.DatasetError) as error:
        pipeline.load_examples(
            "karpathy_captions/flickr30k", "train", str(tmp_path)
        )
    assert os.path.join(
        str(tmp_path), "flickr30k", "dataset_flickr30k.json"
    ) in str(error.value)
    assert not os.path.exists(tmp_path / "karpathy_captions")


def test_flickr30k_gin_trains_a_few_steps(tmp_path):
    write_dataset(tmp_path, "flickr30k", SPLITS * 2, folder="flickr30k-images")
    gin_config.load_gin(
        [os.path.join(REPO, "gin", "flickr30k.gin")],
        [
            "karpathy_captions.image_size = 40",
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
            "train.projector_images = 0",
            "train.export = False",
        ],
    )
    metrics = trainer.train(str(tmp_path / "run"), data_dir=str(tmp_path))
    # What it reports is its best checkpoint's, scored independently.
    expected, _, _ = recalls_by_brute_force(
        str(tmp_path / "run"), str(tmp_path)
    )
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)
