"""Shared test set-up.

The CPU is split into two logical devices before TensorFlow starts, so that
a MirroredStrategy over them runs real two-replica steps on a laptop.
"""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gin  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

# What TF Serving has, for the TF-only clients (after the devices are set).
from tools.check_load import TF_ONLY_PRELUDE  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The demo config shrunk to seconds: tiny data, tiny towers, six steps.
TINY = [
    "train.dataset = 'shapes/tiny'",
    "train.epochs = 2",
    "train.steps_per_epoch = 3",
    "train.batch_size = 16",
    "build_image_tower.image_size = 32",
    "build_image_tower.conv_layers = ((8, 4, 4),)",
    "build_image_tower.hidden_units = 16",
    "build_text_tower.units = 8",
    "build_text_tower.word_dim = 8",
    "EMBEDDING_DIM = 8",
    "train.projector_images = 12",
]


def _tool_env(env_extra):
    # Without the TF_CPP_MIN_LOG_LEVEL this process sets for itself.
    env = {**os.environ, "VSE_TF_QUIET_PROGRESS": "1", **(env_extra or {})}
    if "TF_CPP_MIN_LOG_LEVEL" not in (env_extra or {}):
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def run_tool(tool, *args, env_extra=None):
    """`python -m vse_tf.<tool> args` as a user runs it, to its end."""
    return subprocess.run(
        [sys.executable, "-m", f"vse_tf.{tool}", *args],
        cwd=REPO,
        env=_tool_env(env_extra),
        capture_output=True,
        text=True,
        timeout=600,
    )


def start_tool(tool, *args, env_extra=None):
    """`python -m vse_tf.<tool> args` started, its output piped: a
    subprocess.Popen (a worker of several, a server)."""
    return subprocess.Popen(
        [sys.executable, "-m", f"vse_tf.{tool}", *args],
        cwd=REPO,
        env=_tool_env(env_extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(workers, timeout=400):
    """The stdout of each started process once all have ended, each
    checked to have exited 0; all are killed if one hangs."""
    try:
        results = [worker.communicate(timeout=timeout) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, (_, stderr) in zip(workers, results):
        assert worker.returncode == 0, stderr[-3000:]
    return [stdout for stdout, _ in results]


def run_tf_only(work, script, *args):
    """Runs `script` after check_load's TF_ONLY_PRELUDE (TensorFlow alone,
    and `unregistered_ops`) with `args` in a fresh process."""
    path = os.path.join(str(work), "tf_only_client.py")
    with open(path, "w") as f:
        f.write(TF_ONLY_PRELUDE + script)
    result = subprocess.run(
        [sys.executable, path, *map(str, args)],
        cwd=str(work),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def evaluate_again(model_dir, data_dir, output):
    """(CompletedProcess, its metrics, the run's metrics.json) of
    `python -m vse_tf.evaluate` on a finished run."""
    import json

    result = run_tool(
        "evaluate",
        f"--model_dir={model_dir}",
        f"--data_dir={data_dir}",
        f"--output={output}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(output) as f:
        again = json.load(f)
    with open(os.path.join(model_dir, "metrics.json")) as f:
        return result, again, json.load(f)


def read_weights(path):
    """{dataset path: array} of every weight in a Keras .weights.h5 file."""
    import h5py

    weights = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, item: (
                weights.__setitem__(name, item[()])
                if isinstance(item, h5py.Dataset)
                else None
            )
        )
    return weights


def assert_same_training(found, expected, start, relative=1e-4):
    """Weights `found` equal `expected` to `relative` times the largest
    update a weight made from `start` (all {path: array})."""
    assert found.keys() == expected.keys()
    update = max(
        float(np.abs(expected[k] - start[k]).max())
        for k in expected
        if not k.startswith("optimizer")
    )
    assert update > 1e-4, "training did not move the weights"
    error = max(float(np.abs(found[k] - expected[k]).max()) for k in expected)
    assert error <= relative * update, (
        f"weights differ by {error:.3g}, {error / update:.2%} of the "
        f"largest update {update:.3g}"
    )


def pessimistic_ranks(images, texts, captions_per_image, tie=0.0):
    """Ranks by brute force in float64: the competitors that score at least
    as high as the truth, less `tie` (ties count against the truth).
    `captions_per_image`: one count, or one for each image."""
    scores = np.asarray(images, np.float64) @ np.asarray(texts, np.float64).T
    owner = np.repeat(
        np.arange(len(images)),
        np.broadcast_to(captions_per_image, len(images)),
    )
    i2t = np.array(
        [
            np.sum(scores[i, owner != i] >= scores[i, owner == i].max() - tie)
            for i in range(len(images))
        ]
    )
    t2i = np.array(
        [
            np.sum(
                np.delete(scores[:, j], owner[j]) >= scores[owner[j], j] - tie
            )
            for j in range(len(texts))
        ]
    )
    return i2t, t2i


def recalls_by_brute_force(model_dir, data_dir):
    """(R@K and rsum, i2t ranks, t2i ranks) of the run's best checkpoint on
    its test split, embedded again here, ranked by brute force in float64
    (a competitor within 1e-6, float32 precision of unit vectors' scores,
    ties the truth and counts against it) and reduced to recalls by hand.
    The run's gin config must be loaded."""
    from vse_tf.data import pipeline
    from vse_tf.evaluation import embedding
    from vse_tf.training import runs

    images, texts, per_image = embedding.embed_examples(
        runs.load_trained_model(model_dir),
        pipeline.load_examples(
            runs.run_fact(model_dir, "dataset"), "test", data_dir
        ),
    )
    i2t, t2i = pessimistic_ranks(images, texts, per_image, tie=1e-6)
    recalls = {
        f"{name}_r{k}": 100.0 * np.mean(ranks < k)
        for name, ranks in (("i2t", i2t), ("t2i", t2i))
        for k in (1, 5, 10)
    }
    recalls["rsum"] = sum(recalls.values())
    return recalls, i2t, t2i


def bindings(extra=()):
    return [f"--gin_bindings={b}" for b in [*TINY, *extra]]


@pytest.fixture(autouse=True)
def clear_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """A TFDS data dir holding the tiny built-in dataset, made once."""
    import tensorflow_datasets as tfds

    import vse_tf.data.shapes  # noqa: F401  (registers the builder)

    path = str(tmp_path_factory.mktemp("tensorflow_datasets"))
    tfds.builder("shapes/tiny", data_dir=path).download_and_prepare()
    return path


@pytest.fixture(scope="session")
def two_replicas():
    """One MirroredStrategy over the two logical CPUs for the whole session.

    Separate strategies in one process reuse collective keys and can cross
    their all-gathers, so tests share this one.
    """
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs the two logical CPUs configured above")
    return tf.distribute.MirroredStrategy([d.name for d in devices[:2]])


@pytest.fixture(scope="session")
def trained_run(tfds_dir, tmp_path_factory):
    """(model_dir, CompletedProcess) of one tiny `python -m vse_tf.train`."""
    model_dir = str(tmp_path_factory.mktemp("run"))
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(),
        f"--model_dir={model_dir}",
        f"--data_dir={tfds_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir, result


@pytest.fixture(scope="session")
def photo_folder(tfds_dir, tmp_path_factory):
    """Eight test images as PNG files, and the captions of the first."""
    from vse_tf.data import pipeline

    folder = tmp_path_factory.mktemp("photos")
    examples = list(
        pipeline.load_examples("shapes/tiny", "test", tfds_dir)
        .take(8)
        .as_numpy_iterator()
    )
    for index, example in enumerate(examples):
        tf.io.write_file(
            str(folder / f"photo{index}.png"),
            tf.io.encode_png(example["image"]),
        )
    return folder, [c.decode() for c in examples[0]["captions"]]
