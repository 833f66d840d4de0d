"""The precomputed-feature loader (SCAN / VSE++ layout), GPO, and the
precomp gin files end to end with the evaluation protocols."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.conftest import run_tool
from vse_tf import errors
from vse_tf.data import pipeline
from vse_tf.data import precomp

WORDS = (
    "dog",
    "cat",
    "man",
    "woman",
    "red",
    "blue",
    "runs",
    "sits",
    "on",
    "grass",
    "a",
    "the",
    "ball",
    "street",
    "water",
)


def write_precomp(
    root, name, sizes, regions=3, dim=4, per_caption=False, seed=0
):
    """SCAN's layout under root/name: {split}_ims.npy and {split}_caps.txt.

    Returns {file split: (features [N, ...], captions [5N])}.
    """
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    written = {}
    for stem, count in sizes.items():
        shape = (count, regions, dim) if regions else (count, dim)
        features = rng.normal(size=shape).astype(np.float32)
        captions = [
            " ".join(rng.choice(WORDS, size=rng.integers(3, 9))) + f" {i}"
            for i in range(5 * count)
        ]
        np.save(
            os.path.join(folder, f"{stem}_ims.npy"),
            np.repeat(features, 5, axis=0) if per_caption else features,
        )
        with open(os.path.join(folder, f"{stem}_caps.txt"), "w") as f:
            f.write("\n".join(captions) + "\n")
        written[stem] = (features, captions)
    return written


def _all(dataset):
    return list(tfds.as_numpy(dataset))


def test_examples_are_the_rows_and_their_captions(tmp_path):
    written = write_precomp(
        str(tmp_path), "f30k_precomp", {"train": 6, "dev": 2, "test": 3}
    )
    examples = _all(
        pipeline.load_examples("f30k_precomp", "test", str(tmp_path))
    )
    features, captions = written["test"]
    assert len(examples) == 3
    for index, example in enumerate(examples):
        np.testing.assert_array_equal(example["image"], features[index])
        assert [c.decode() for c in example["captions"]] == (
            captions[5 * index : 5 * index + 5]
        )
    # Ids are unique across splits.
    train_ids = {
        e["image_id"]
        for e in _all(
            pipeline.load_examples("f30k_precomp", "train", str(tmp_path))
        )
    }
    assert not train_ids & {e["image_id"] for e in examples}


def test_one_row_per_caption_reads_as_one_per_image(tmp_path):
    written = write_precomp(
        str(tmp_path),
        "coco_precomp",
        {"testall": 4},
        regions=None,
        dim=6,
        per_caption=True,
    )
    examples = _all(
        precomp.load_examples("coco_precomp", "test", str(tmp_path))
    )
    np.testing.assert_array_equal(
        np.stack([e["image"] for e in examples]), written["testall"][0]
    )


def test_train_comes_in_a_new_order_each_pass(tmp_path):
    write_precomp(str(tmp_path), "f30k_precomp", {"train": 200})
    train = precomp.load_examples("f30k_precomp", "train", str(tmp_path))
    assert int(train.cardinality()) == 200
    passes = [[int(e["image_id"]) for e in _all(train)] for _ in range(2)]
    assert sorted(passes[0]) == sorted(passes[1]) == list(range(200))
    assert passes[0] != passes[1]
    # Each image still carries its own features and captions.
    features, captions = write_precomp(
        str(tmp_path), "f30k_precomp", {"train": 200}
    )["train"]
    for example in _all(train)[:20]:
        index = int(example["image_id"])
        np.testing.assert_array_equal(example["image"], features[index])
        assert example["captions"][0].decode() == captions[5 * index]


def test_captions_alone_read_no_features(tmp_path):
    written = write_precomp(str(tmp_path), "f30k_precomp", {"train": 3})
    os.remove(os.path.join(tmp_path, "f30k_precomp", "train_ims.npy"))
    captions = [
        c.decode()
        for c in _all(
            pipeline.load_captions("f30k_precomp", "train", str(tmp_path))
        )
    ]
    assert captions == written["train"][1]


def test_too_large_to_cache_is_read_each_epoch(tmp_path):
    write_precomp(
        str(tmp_path), "f30k_precomp", {"train": 10}, regions=36, dim=8
    )
    train = precomp.load_examples("f30k_precomp", "train", str(tmp_path))
    # 36 x 8 float32 features, 5 captions, one int64 id.
    assert pipeline.example_bytes(train) == 36 * 8 * 4 + 5 * 64 + 8
    assert pipeline.fits_in_memory(train, budget=10 * 1500)
    assert not pipeline.fits_in_memory(train, budget=10 * 1000)


@pytest.mark.parametrize(
    "damage,message",
    [
        ("captions", "not a multiple of 5"),
        ("rows", "has 5 rows but"),
        ("npy", "is not a NumPy .npy array"),
    ],
)
def test_malformed_files_are_clear_errors(tmp_path, damage, message):
    write_precomp(str(tmp_path), "f30k_precomp", {"test": 4})
    folder = os.path.join(tmp_path, "f30k_precomp")
    if damage == "captions":
        with open(os.path.join(folder, "test_caps.txt"), "a") as f:
            f.write("one caption too many\n")
    elif damage == "rows":
        np.save(
            os.path.join(folder, "test_ims.npy"),
            np.zeros((5, 3, 4), np.float32),
        )
    else:
        with open(os.path.join(folder, "test_ims.npy"), "w") as f:
            f.write("<html>Not found</html>")
    with pytest.raises(errors.DatasetError, match=message):
        precomp.load_examples("f30k_precomp", "test", str(tmp_path))


def test_missing_dataset_says_where_it_goes(tmp_path):
    with pytest.raises(errors.DatasetError) as error:
        precomp.load_examples("coco_precomp", "test", str(tmp_path))
    text = str(error.value)
    assert os.path.join(str(tmp_path), "coco_precomp", "testall_ims.npy") in (
        text
    )
    assert "SCAN" in text and "--data_dir" in text


# A paper config shrunk to seconds.
TINY_PRECOMP = [
    "train.epochs = 1",
    "train.steps_per_epoch = 3",
    "train.batch_size = 16",
    "build_precomputed_tower.feature_dim = 4",
    "build_precomputed_tower.regions = 3",
    "build_text_tower.word_dim = 8",
    "build_text_tower.units = 8",
    "EMBEDDING_DIM = 8",
    "HEAD_UNITS = 16",
]


def _train(gin_file, data_dir, model_dir, extra=()):
    result = run_tool(
        "train",
        f"--gin_file={gin_file}",
        f"--model_dir={model_dir}",
        f"--data_dir={data_dir}",
        *[f"--gin_bindings={b}" for b in [*TINY_PRECOMP, *extra]],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _evaluate(model_dir, data_dir, protocol):
    return run_tool(
        "evaluate",
        f"--model_dir={model_dir}",
        f"--data_dir={data_dir}",
        f"--protocol={protocol}",
        "--json",
    )


def test_f30k_precomp_trains_and_scores_the_1k_protocol(tmp_path):
    data = str(tmp_path / "data")
    write_precomp(data, "f30k_precomp", {"train": 40, "dev": 8, "test": 1000})
    run = str(tmp_path / "run")
    _train(
        "gin/f30k_precomp.gin",
        data,
        run,
        ["build_precomputed_tower.pooling = 'gpo'"],
    )
    with open(os.path.join(run, "metrics.json")) as f:
        trained = json.load(f)
    result = _evaluate(run, data, "f30k")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == pytest.approx(trained)
    assert os.path.exists(os.path.join(run, "metrics_f30k.json"))
    # The exported image tower takes the features themselves.
    served = tf.saved_model.load(
        os.path.join(run, "export", "image_tower", "1")
    )
    embedding = served.signatures["serving_default"](
        features=tf.ones([2, 3, 4])
    )["embedding"]
    np.testing.assert_allclose(
        np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-5
    )
    # COCO's protocols need COCO's 5,000 test images.
    result = _evaluate(run, data, "coco1k")
    assert result.returncode == 2
    assert "needs 5000 test images" in result.stderr
    assert "has 1000" in result.stderr and "Traceback" not in result.stderr


def test_coco_precomp_1k_folds_rank_within_each_fold(tmp_path):
    data = str(tmp_path / "data")
    write_precomp(
        data, "coco_precomp", {"train": 40, "dev": 8, "testall": 5000}
    )
    run = str(tmp_path / "run")
    _train("gin/coco_precomp.gin", data, run, ["train.export = False"])
    metrics = {}
    for protocol in ("coco1k", "coco5k"):
        result = _evaluate(run, data, protocol)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics[protocol] = json.loads(result.stdout)
    with open(os.path.join(run, "metrics.json")) as f:
        assert metrics["coco5k"] == pytest.approx(json.load(f))
    # A caption's fold is a subset of the 5K candidates holding its truth:
    # no rank can grow, so no recall can fall, and medians shrink.
    for name in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"):
        assert metrics["coco1k"][name] >= metrics["coco5k"][name], name
    assert metrics["coco1k"]["t2i_meanr"] < metrics["coco5k"]["t2i_meanr"]


@pytest.mark.slow
def test_missing_precomp_data_through_the_cli(tmp_path):
    result = run_tool(
        "train",
        "--gin_file=gin/f30k_precomp.gin",
        f"--model_dir={tmp_path / 'run'}",
        f"--data_dir={tmp_path}",
    )
    assert result.returncode == 2
    assert "f30k_precomp is not under --data_dir" in result.stderr
    assert "Traceback" not in result.stderr
