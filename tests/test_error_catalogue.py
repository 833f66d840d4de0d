"""What a user sees for each mistake: every program, one process each.

Each entry runs `python -m vse_tf.<program>` as a user would and asserts
the contract of `vse_tf.errors`: exit status 2, no traceback and no
TensorFlow start-up lines, the parameter or file named, and nothing
half-written left where the program would have written.
"""

import os
import shutil
import subprocess

import numpy as np
import pytest

from tests.conftest import REPO
from tests.conftest import bindings
from tests.conftest import run_tool

pytestmark = pytest.mark.slow


def _assert_clean(result, *phrases):
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    # Neither TensorFlow's native start-up lines nor absl's log prefix.
    assert not any(
        line[:5] in ("I0000", "E0000", "W0000")
        for line in result.stderr.splitlines()
    ), result.stderr
    text = " ".join(result.stderr.split())  # the paragraph is wrapped
    for phrase in phrases:
        assert phrase in text, result.stderr


# Bad bindings and settings of `train`: (bindings, what the error names).
TRAIN_BINDINGS = [
    (
        ["AllNegativesLoss.temperature = -1.0"],
        "AllNegativesLoss.temperature = -1.0",
    ),
    (
        [
            "train.hubness_correction = @HubnessCorrection()",
            "HubnessCorrection.neighbours = 0",
        ],
        "HubnessCorrection.neighbours = 0",
    ),
    (
        [
            "train.hubness_correction = @HubnessCorrection()",
            "HubnessCorrection.weight = 1.5",
        ],
        "HubnessCorrection.weight = 1.5",
    ),
    (["train.batch_size = 0"], "train.batch_size = 0"),
    (["train.batch_size = 'abc'"], "train.batch_size = 'abc'"),
    (["train.microbatch_size = 0"], "train.microbatch_size = 0"),
    (
        ["train.batch_size = 16", "train.microbatch_size = 5"],
        "train.microbatch_size = 5 does not divide",
    ),
    (["train.epochs = -1"], "train.epochs = -1"),
    (["train.steps_per_epoch = 0"], "train.steps_per_epoch = 0"),
    (["train.max_vocabulary = 1"], "train.max_vocabulary = 1"),
    (["train.projector_images = -5"], "train.projector_images = -5"),
    (["train.dataset = 'shapez'"], "train.dataset = 'shapez'"),
    (
        ["train.dataset = 'shapes:1.0.0'"],
        "train.dataset = 'shapes:1.0.0' names a version that 'shapes' does not "
        "have; it has 1.1.0",
    ),
    (
        ["make_optimizer.clipnorm = 1.0", "make_optimizer.clipvalue = 0.5"],
        "make_optimizer.clipnorm = 1.0 and make_optimizer.clipvalue = 0.5 are "
        "both set",
    ),
    (["train.mixed_precision = 'float8'"], "train.mixed_precision = 'float8'"),
    (["build_text_tower.max_length = 0"], "build_text_tower.max_length = 0"),
    (
        ["build_image_tower.embedding_dim = 0"],
        "build_image_tower.embedding_dim = 0",
    ),
    (["build_image_tower.image_size = 2"], "build_image_tower.image_size = 2"),
    (
        ["build_dual_encoder.learnable_temperature = -0.1"],
        "build_dual_encoder.learnable_temperature = -0.1",
    ),
    (
        ["make_optimizer.learning_rate = -1.0"],
        "make_optimizer.learning_rate = -1.0",
    ),
    (
        ["make_optimizer.global_clipnorm = -2.0"],
        "make_optimizer.global_clipnorm = -2.0",
    ),
    (["make_optimizer.name = 'adamm'"], "Did you mean 'adam'"),
    (
        ["train.loss = @HingeLoss()", "HingeLoss.margin = -0.2"],
        "HingeLoss.margin = -0.2",
    ),
    (
        [
            "build_dual_encoder.image_tower_fn = @build_efficientnet_tower",
            "build_efficientnet_tower.weights = 'random'",
            "build_efficientnet_tower.variant = 'lite9'",
        ],
        "build_efficientnet_tower.variant",
    ),
    (["build_text_tower.word_vectors = 'glove-9b'"], "glove-9b"),
    (["trainn.epochs = 1"], "Did you mean 'train'"),
    (["train.epoch = 1"], "'train' has no parameter 'epoch'"),
]


@pytest.mark.parametrize(
    "extra, named", TRAIN_BINDINGS, ids=[case[1] for case in TRAIN_BINDINGS]
)
def test_bad_training_binding(extra, named, tfds_dir, tmp_path):
    model_dir = tmp_path / "run"
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(extra),
        f"--model_dir={model_dir}",
        f"--data_dir={tfds_dir}",
    )
    _assert_clean(result, named)
    assert not model_dir.exists()  # refused before training: no folder


def test_two_clips_name_the_config_that_set_one(tmp_path):
    result = run_tool(
        "train",
        "--gin_file=gin/f30k_precomp.gin",
        "--gin_bindings=make_optimizer.clipvalue = 0.5",
        f"--model_dir={tmp_path / 'run'}",
        f"--data_dir={tmp_path / 'data'}",
    )
    _assert_clean(
        result,
        "make_optimizer.global_clipnorm = 2.0 and "
        "make_optimizer.clipvalue = 0.5 are both set",
        "make_optimizer.global_clipnorm is set by "
        "gin/f30k_precomp.gin; make_optimizer.clipvalue is set by "
        "--gin_bindings",
    )
    assert not (tmp_path / "run").exists()


def test_missing_gin_file(tmp_path):
    result = run_tool(
        "train", "--gin_file=gin/nosuch.gin", f"--model_dir={tmp_path / 'run'}"
    )
    _assert_clean(result, "Gin file not found: gin/nosuch.gin")
    assert not (tmp_path / "run").exists()


def test_missing_dataset_files(tmp_path):
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(["train.dataset = 'flickr8k'"]),
        f"--model_dir={tmp_path / 'run'}",
        f"--data_dir={tmp_path / 'data'}",
    )
    _assert_clean(
        result, "flickr8k is not under --data_dir", "dataset_flickr8k.json"
    )
    assert not (tmp_path / "run").exists()


def test_broken_image_in_the_test_split(tmp_path):
    from tests.test_karpathy import write_dataset

    base = write_dataset(
        tmp_path / "data",
        "flickr8k",
        ["train"] * 8 + ["val"] * 3 + ["test"] * 3,
    )
    (base / "images" / "1012.jpg").write_text("<html>Not found</html>")
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(
            ["train.dataset = 'flickr8k'", "load_examples.image_size = 32"]
        ),
        f"--model_dir={tmp_path / 'run'}",
        f"--data_dir={tmp_path / 'data'}",
    )
    _assert_clean(result, "flickr8k test split", "1012.jpg")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "breakage",
    ["missing photo", "missing column", "empty caption", "not UTF-8"],
)
def test_a_bad_caption_file(tmp_path, breakage):
    from tests.test_caption_files import _broken

    dataset, expected = _broken(tmp_path, breakage)
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings([f"train.dataset = '{dataset}'"]),
        f"--model_dir={tmp_path / 'run'}",
    )
    _assert_clean(result, expected)
    assert not (tmp_path / "run").exists()


def test_corrupt_weights_file(tmp_path):
    weights = tmp_path / "resnet50.h5"
    weights.write_bytes(b"\x89HDF\r\n" + b"\0" * 100)  # a truncated file
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(
            [
                "build_dual_encoder.image_tower_fn = @build_backbone_tower",
                "build_backbone_tower.backbone = 'resnet50'",
                f"build_backbone_tower.weights = '{weights}'",
                "build_backbone_tower.input_size = 32",
                "build_backbone_tower.crop_size = 32",
                "build_backbone_tower.embedding_dim = 8",
            ]
        ),
        f"--model_dir={tmp_path / 'run'}",
    )
    _assert_clean(result, str(weights))
    assert not (tmp_path / "run").exists()


def test_unwritable_model_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(),
        f"--model_dir={blocker / 'run'}",
    )
    _assert_clean(result, "Cannot write to the model dir", "a_file/run")
    assert blocker.read_text() == "not a folder"


def test_tf_config_that_is_not_json(tmp_path):
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(),
        f"--model_dir={tmp_path / 'run'}",
        env_extra={"TF_CONFIG": "{worker: 0}"},
    )
    _assert_clean(result, "TF_CONFIG is not valid JSON")
    assert not (tmp_path / "run").exists()


# The programs that read a finished run.


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A copy of the trained run that a case may damage."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run[0], copy)
    return copy


def _files(folder):
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, _, names in os.walk(folder)
        for name in names
    )


def test_evaluate_a_folder_that_does_not_exist(tmp_path):
    result = run_tool("evaluate", f"--model_dir={tmp_path / 'nosuch'}")
    _assert_clean(result, "is not a training run", "nosuch")
    assert not (tmp_path / "nosuch").exists()


def test_evaluate_without_model_dir(tmp_path):
    output = tmp_path / "metrics.json"
    before = _working_tree()
    _assert_clean(
        run_tool("evaluate", f"--output={output}"), "--model_dir is required"
    )
    assert not output.exists() and _working_tree() == before


def test_evaluate_a_truncated_checkpoint(run_copy, tfds_dir):
    best = run_copy / "checkpoints" / "best.weights.h5"
    best.write_bytes(best.read_bytes()[:1000])
    before = _files(run_copy)
    result = run_tool(
        "evaluate", f"--model_dir={run_copy}", f"--data_dir={tfds_dir}"
    )
    _assert_clean(result, "best.weights.h5")
    assert _files(run_copy) == before


def test_evaluate_a_checkpoint_that_diverged(run_copy, tfds_dir, tmp_path):
    import h5py

    with h5py.File(run_copy / "checkpoints" / "best.weights.h5", "r+") as f:
        f.visititems(
            lambda name, item: (
                item.__setitem__(Ellipsis, np.nan)
                if isinstance(item, h5py.Dataset) and (item.dtype.kind == "f")
                else None
            )
        )
    before = _files(run_copy)
    output = tmp_path / "metrics.json"
    result = run_tool(
        "evaluate",
        f"--model_dir={run_copy}",
        f"--data_dir={tfds_dir}",
        f"--output={output}",
    )
    _assert_clean(
        result,
        "Cannot score the best checkpoint of",
        "embeddings are not finite",
    )
    assert _files(run_copy) == before and not output.exists()


def test_evaluate_folds_that_do_not_divide_the_split(
    trained_run, tfds_dir, tmp_path
):
    output = tmp_path / "metrics.json"
    result = run_tool(
        "evaluate",
        f"--model_dir={trained_run[0]}",
        f"--data_dir={tfds_dir}",
        "--folds=7",
        f"--output={output}",
    )
    _assert_clean(result, "--folds=7 does not cut the test split")
    assert not output.exists()


def test_evaluate_a_protocol_on_a_split_of_another_size(
    trained_run, tfds_dir, tmp_path
):
    output = tmp_path / "metrics.json"
    result = run_tool(
        "evaluate",
        f"--model_dir={trained_run[0]}",
        f"--data_dir={tfds_dir}",
        "--protocol=coco5k",
        f"--output={output}",
    )
    _assert_clean(result, "coco5k")
    assert not output.exists()


def test_export_a_run_without_a_checkpoint(run_copy, tmp_path):
    os.remove(run_copy / "checkpoints" / "best.weights.h5")
    export_dir = tmp_path / "export"
    result = run_tool(
        "export", f"--model_dir={run_copy}", f"--export_dir={export_dir}"
    )
    _assert_clean(result, "No trained model", "best.weights.h5")
    assert not export_dir.exists()


def test_export_version_zero(trained_run, tmp_path):
    export_dir = tmp_path / "export"
    result = run_tool(
        "export",
        f"--model_dir={trained_run[0]}",
        f"--export_dir={export_dir}",
        "--version=0",
    )
    _assert_clean(result, "--version=0")
    assert not export_dir.exists()


def test_projector_of_a_split_that_does_not_exist(
    trained_run, tfds_dir, tmp_path
):
    log_dir = tmp_path / "projector"
    result = run_tool(
        "projector",
        f"--model_dir={trained_run[0]}",
        f"--data_dir={tfds_dir}",
        "--split=validation",
        f"--projector_dir={log_dir}",
    )
    _assert_clean(result, "no split 'validation'")
    assert not log_dir.exists()


def test_projector_of_no_images(trained_run, tfds_dir, tmp_path):
    log_dir = tmp_path / "projector"
    result = run_tool(
        "projector",
        f"--model_dir={trained_run[0]}",
        f"--data_dir={tfds_dir}",
        "--max_images=0",
        f"--projector_dir={log_dir}",
    )
    _assert_clean(result, "--max_images=0")
    assert not log_dir.exists()


# Search and the serving client.


def test_search_an_export_folder_without_a_version(tmp_path):
    export_dir = tmp_path / "export"
    for tower in ("image_tower", "text_tower"):
        (export_dir / tower).mkdir(parents=True)
    (tmp_path / "photos").mkdir()
    before = _files(tmp_path)
    result = run_tool(
        "search",
        f"--export_dir={export_dir}",
        f"--images={tmp_path / 'photos'}",
        "--query=a ball",
        f"--html={tmp_path / 'hits.html'}",
    )
    _assert_clean(result, "image_tower", "version")
    assert _files(tmp_path) == before


def test_search_stops_on_a_text_file_named_jpg(trained_run, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "notes.jpg").write_text("these are my notes, not a photo")
    html = tmp_path / "hits.html"
    result = run_tool(
        "search",
        f"--export_dir={os.path.join(trained_run[0], 'export')}",
        f"--images={photos}",
        "--query=a ball",
        "--on_bad_image=error",
        f"--html={html}",
        f"--index_dir={tmp_path / 'index'}",
    )
    _assert_clean(result, "notes.jpg", "could not be decoded")
    assert not html.exists() and not (tmp_path / "index").exists()
    assert _no_index_in(os.path.join(trained_run[0], "export"))


def _no_index_in(export_dir):
    return not os.path.exists(os.path.join(export_dir, "search_index"))


def test_search_images_that_are_not_there(trained_run, tmp_path):
    export_dir = os.path.join(trained_run[0], "export")
    result = run_tool(
        "search",
        f"--export_dir={export_dir}",
        f"--images={tmp_path / 'nosuch'}",
        "--query=a ball",
        f"--html={tmp_path / 'hits.html'}",
    )
    _assert_clean(result, "--images=", "nosuch")
    assert _files(tmp_path) == [] and _no_index_in(export_dir)


def test_search_zero_hits(trained_run, tmp_path):
    (tmp_path / "photos").mkdir()
    export_dir = os.path.join(trained_run[0], "export")
    result = run_tool(
        "search",
        f"--export_dir={export_dir}",
        f"--images={tmp_path / 'photos'}",
        "--query=a ball",
        "--k=0",
        f"--html={tmp_path / 'hits.html'}",
    )
    _assert_clean(result, "--k must be at least 1")
    assert _files(tmp_path) == [] and _no_index_in(export_dir)


def test_approximate_search_without_faiss(trained_run, tmp_path):
    # A faiss that does not import, as on a machine without the extra.
    (tmp_path / "shadow").mkdir()
    (tmp_path / "shadow" / "faiss.py").write_text(
        "raise ImportError(\"No module named 'faiss'\")\n"
    )
    (tmp_path / "photos").mkdir()
    result = run_tool(
        "search",
        f"--export_dir={os.path.join(trained_run[0], 'export')}",
        f"--images={tmp_path / 'photos'}",
        "--query=a ball",
        "--index=approximate",
        f"--index_dir={tmp_path / 'index'}",
        env_extra={"PYTHONPATH": str(tmp_path / "shadow")},
    )
    _assert_clean(result, "needs faiss", "pip install faiss-cpu")
    assert not (tmp_path / "index").exists()
    assert _no_index_in(os.path.join(trained_run[0], "export"))


def _working_tree():
    """What `git status` lists in the folder the programs run in: a file a
    program left there shows up."""
    return subprocess.run(
        ["git", "status", "--porcelain"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout


def test_serving_client_image_that_is_not_there(tmp_path):
    before = _working_tree()
    result = run_tool(
        "serving_client",
        "--server=127.0.0.1:9",
        f"--image={tmp_path / 'nosuch.jpg'}",
    )
    _assert_clean(result, "nosuch.jpg")
    assert _files(tmp_path) == [] and _working_tree() == before


def test_serving_client_without_a_server():
    # Port 9 (discard) on this machine: nothing answers.
    before = _working_tree()
    result = run_tool(
        "serving_client", "--server=127.0.0.1:9", "--text=a ball", "--timeout=5"
    )
    _assert_clean(result, "127.0.0.1:9")
    assert _working_tree() == before


def test_paper_stage_without_its_base_run(tmp_path):
    result = run_tool(
        "train",
        "--gin_file=gin/f30k_precomp.gin",
        "--gin_file=gin/paper/convsepp.gin",
        f"--model_dir={tmp_path / 'run'}",
    )
    _assert_clean(
        result,
        "The gin macro BASE_RUN has no value",
        '--gin_bindings="BASE_RUN = ..."',
    )
    assert not (tmp_path / "run").exists()
