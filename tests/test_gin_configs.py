"""Every shipped gin file parses, with unknown names treated as errors
(the stages of gin/paper/ go on top of a dataset config: see
test_paper_recipe.py)."""

import glob
import os

import gin
import pytest

from tests.conftest import REPO
from vse_tf import errors
from vse_tf import gin_config

CONFIGS = sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, "gin", "**", "*.gin"), recursive=True)
    if not p.startswith(os.path.join(REPO, "gin", "paper", ""))
)


def test_there_are_configs():
    assert "gin/demo.gin" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS)
def test_config_parses(path):
    gin_config.load_gin([os.path.join(REPO, path)], [])


def test_demo_picks_a_loss_and_the_paper_temperature():
    gin_config.load_gin([os.path.join(REPO, "gin", "demo.gin")], [])
    assert gin.query_parameter("AllNegativesLoss.temperature") == 0.1
    assert gin.query_parameter("train.loss").selector.endswith(
        "AllNegativesLoss"
    )


def test_unknown_names_are_errors_not_skipped():
    with pytest.raises(errors.UserError, match="Did you mean 'train'"):
        gin_config.load_gin([], ["trainn.epochs = 1"])
    with pytest.raises(errors.UserError, match="'epochs'"):
        gin_config.load_gin([], ["train.epoch = 1"])


def test_the_registry_names_every_configurable_and_loads_no_trainer():
    # A config is parsed once the registry is imported and then locked: a
    # configurable it missed (one registered only on the trainer's import)
    # fails the run after the config is read. Loading a run's config must
    # not import the trainer either.
    import re
    import subprocess
    import sys

    declared = set()
    for path in glob.glob(
        os.path.join(REPO, "vse_tf", "**", "*.py"), recursive=True
    ):
        text = open(path, encoding="utf-8").read()
        named = re.findall(r'@gin\.configurable\("(\w+)"', text)
        bare = re.findall(
            r"@gin\.configurable\s*\n(?:@.*\n)*\s*(?:def|class) (\w+)", text
        )
        declared.update(named + bare)
    probe = (
        "import sys\n"
        "from vse_tf import configurables\n"
        "from vse_tf.training import runs\n"
        "from vse_tf import compat\n"
        "print(' '.join(sorted(compat.gin_configurables())))\n"
        "assert 'vse_tf.training.trainer' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd="/"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    registered = set(result.stdout.split())
    assert "train" in declared and "fine_tune_backbones" in declared
    assert declared <= registered, sorted(declared - registered)
