"""The paper's recipe (gin/paper/): a VSE++ base embedding, then ConVSE or
ConVSE++ warm-started from it, over each dataset config; both stages end to
end on precomputed-feature fixtures."""

import glob
import os
import re

import gin
import numpy as np
import pytest

from tests.conftest import REPO
from tests.conftest import run_tool
from tests.test_coco import TINY_COCO
from tests.test_precomp import TINY_PRECOMP
from tests.test_precomp import write_precomp
from vse_tf import gin_config
from vse_tf.modeling import building
from vse_tf.training import run_dir
from vse_tf.training import warm_start

DATASETS = ["coco.gin", "flickr30k.gin", "coco_precomp.gin", "f30k_precomp.gin"]
STAGES = {
    "base_embedding.gin": "HingeLoss",
    "convse.gin": "AllNegativesLoss",
    "convsepp.gin": "HardestNegativeLoss",
}


def _load(dataset, stage, extra=()):
    gin_config.load_gin(
        [
            os.path.join(REPO, "gin", dataset),
            os.path.join(REPO, "gin", "paper", stage),
        ],
        list(extra),
    )


def _loss():
    return gin.query_parameter("train.loss").selector.split(".")[-1]


def _value(selector):
    """A parameter's value, through a macro if it names one."""
    value = gin.query_parameter(selector)
    if isinstance(value, gin.config.ConfigurableReference):
        return gin.query_parameter(str(value))  # "%MACRO"
    return value


def _towers_head_units():
    image_tower = gin.query_parameter(
        "build_dual_encoder.image_tower_fn"
    ).selector.split(".")[-1]
    return {
        _value(f"{image_tower}.head_units"),
        _value("build_text_tower.head_units"),
    }


def test_every_paper_file_is_a_stage_or_included_by_one():
    shipped = {
        os.path.basename(p)
        for p in glob.glob(os.path.join(REPO, "gin", "paper", "*.gin"))
    }
    assert shipped == set(STAGES) | {"stage2.gin"}


@pytest.mark.parametrize("dataset", DATASETS)
def test_the_base_is_vsepp_as_it_ships(dataset):
    _load(dataset, "base_embedding.gin")
    assert _loss() == "HingeLoss"
    assert gin.query_parameter("HingeLoss.max_violation") is True
    assert gin.query_parameter("train.batch_size") == 128
    assert gin.query_parameter("train.epochs") == 30
    # 2e-4, divided by 10 after 15 epochs of batch 128 (--lr_update 15).
    schedule = gin.query_parameter("make_optimizer.learning_rate")
    assert schedule.selector.endswith("PiecewiseConstantDecay")
    assert gin.query_parameter(
        "keras.optimizers.schedules.PiecewiseConstantDecay.values"
    ) == [2e-4, 2e-5]
    # No paper head: the authors add it in the ConVSE modes only.
    assert _towers_head_units() == {None}
    with pytest.raises(ValueError):  # no warm start: the base starts anew
        gin.query_parameter("train.init_from")


@pytest.mark.parametrize("stage", ["convse.gin", "convsepp.gin"])
@pytest.mark.parametrize("dataset", DATASETS)
def test_the_second_stage_starts_from_the_base(dataset, stage):
    _load(dataset, stage, ["BASE_RUN = 'runs/base'"])
    assert _loss() == STAGES[stage]
    assert gin.query_parameter("train.batch_size") == 256
    assert gin.query_parameter("train.epochs") == 30
    # --lr_update 30 over 30 epochs: a flat rate.
    assert gin.query_parameter("make_optimizer.learning_rate") == 2e-4
    assert _towers_head_units() == {2048}
    assert _value("train.init_from") == "runs/base"


def test_both_stages_train_and_the_second_loads_the_base(tmp_path):
    data = str(tmp_path / "data")
    write_precomp(data, "f30k_precomp", {"train": 40, "dev": 8, "test": 1000})
    # Bindings win over the files: the base keeps its HEAD_UNITS = None.
    tiny = [
        f"--gin_bindings={b}"
        for b in [
            *TINY_PRECOMP,
            "train.export = False",
            "train.batch_size = 16",
        ]
        if not b.startswith("HEAD_UNITS")
    ]
    base = str(tmp_path / "base")
    result = run_tool(
        "train",
        "--gin_file=gin/f30k_precomp.gin",
        "--gin_file=gin/paper/base_embedding.gin",
        *tiny,
        f"--model_dir={base}",
        f"--data_dir={data}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stage = str(tmp_path / "convsepp")
    result = run_tool(
        "train",
        "--gin_file=gin/f30k_precomp.gin",
        "--gin_file=gin/paper/convsepp.gin",
        *tiny,
        "--gin_bindings=HEAD_UNITS = 16",
        f"--gin_bindings=BASE_RUN = '{base}'",
        f"--model_dir={stage}",
        f"--data_dir={data}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {
        line.split()[0]: line.split()
        for line in result.stdout.split("Warm start from ")[1].splitlines()[1:4]
    }
    # The word embedding, the GRU (3) and both projections (2 each) load;
    # the two heads' dense layers (2 x 2 a tower) start new.
    assert rows["loaded"][1] == "8", result.stdout
    assert rows["new"][2] == "8", result.stdout
    assert rows["skipped"][3] == "0", result.stdout
    assert "Training on f30k_precomp with HardestNegativeLoss" in (
        result.stdout
    )
    with open(run_dir.RunDir(stage).operative_config) as f:
        # gin breaks a long value onto the next line ("= \\\n    '...").
        operative = re.sub(r"\\\n\s+", "", f.read())
    assert f"BASE_RUN = '{base}'" in operative
    assert "train.init_from = %BASE_RUN" in operative


@pytest.mark.parametrize("dataset", ["coco.gin", "flickr30k.gin"])
def test_on_raw_photos_the_base_projection_loads_and_the_heads_are_new(
    dataset, tmp_path
):
    # The image tower is the backbone, VSE++'s linear projection, then (in
    # stage 2 only) the paper's head: the projection keeps its place.
    tiny = [b for b in TINY_COCO if not b.startswith("HEAD_UNITS")]
    vocabulary = ["a", "dog", "runs"]
    _load(dataset, "base_embedding.gin", tiny)
    base = building.build_model(vocabulary)
    path = str(tmp_path / "base.weights.h5")
    base.save_weights(path)
    gin.clear_config()
    _load(
        dataset,
        "convsepp.gin",
        [*tiny, "HEAD_UNITS = 16", f"BASE_RUN = '{path}'"],
    )
    stage = building.build_model(vocabulary)
    table = warm_start.warm_start(stage, path).table
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert rows["new"][2] == "8"  # 2 dense layers x 2 weights x 2 towers
    assert rows["skipped"][3] == "0"
    projection = stage.image_tower.head.get_layer("projection")
    np.testing.assert_array_equal(
        projection.kernel.numpy(),
        base.image_tower.head.get_layer("projection").kernel.numpy(),
    )
