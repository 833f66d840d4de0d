"""Every shipped gin file parses, with unknown names treated as errors
(the stages of gin/paper/ go on top of a dataset config: see
test_paper_recipe.py)."""

import glob
import os

import gin
import pytest

from tests.conftest import REPO
from vse_tf import errors
from vse_tf.cli import config

CONFIGS = sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, "gin", "**", "*.gin"), recursive=True)
    if not p.startswith(os.path.join(REPO, "gin", "paper", ""))
)


def test_there_are_configs():
    assert "gin/demo.gin" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS)
def test_config_parses(path):
    config.load_gin([os.path.join(REPO, path)], [])


def test_demo_picks_a_loss_and_the_paper_temperature():
    config.load_gin([os.path.join(REPO, "gin", "demo.gin")], [])
    assert gin.query_parameter("AllNegativesLoss.temperature") == 0.1
    assert gin.query_parameter("train.loss").selector.endswith(
        "AllNegativesLoss"
    )


def test_unknown_names_are_errors_not_skipped():
    with pytest.raises(errors.UserError, match="Did you mean 'train'"):
        config.load_gin([], ["trainn.epochs = 1"])
    with pytest.raises(errors.UserError, match="'epochs'"):
        config.load_gin([], ["train.epoch = 1"])
