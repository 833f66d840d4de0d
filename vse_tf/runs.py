"""A finished training run, read back from its folder.

Every tool that works on a trained model (evaluate, export, projector) goes
through here, so each fails the same clear way on a folder that holds none.
"""

import inspect
import os

import gin

from vse_tf import cli
from vse_tf import trainer
from vse_tf.callbacks import BEST_WEIGHTS
from vse_tf.models import text_towers


def best_checkpoint(model_dir):
    return os.path.join(model_dir, "checkpoints", BEST_WEIGHTS)


def load_gin_for_run(model_dir, gin_files=(), gin_bindings=()):
    """The given gin files, else the run's own operative_config.gin."""
    if not gin_files:
        operative = os.path.join(model_dir, cli.OPERATIVE_CONFIG)
        if not os.path.exists(operative):
            raise cli.UserError(
                f"{model_dir!r} is not a training run: it has no "
                f"{cli.OPERATIVE_CONFIG}. Pass the --model_dir of a run, or "
                "the run's --gin_file.")
        gin_files = [operative]
    cli.load_gin(list(gin_files), gin_bindings)


def load_trained_model(model_dir):
    """The dual encoder of the run (as gin configures it), best weights."""
    checkpoint = best_checkpoint(model_dir)
    vocabulary = os.path.join(model_dir, trainer.VOCABULARY)
    if not os.path.exists(checkpoint) or not os.path.exists(vocabulary):
        raise cli.UserError(
            f"No trained model in {model_dir!r}: expected {checkpoint} and "
            f"{vocabulary}. Train one first with `python -m vse_tf.train "
            f"--gin_file=... --model_dir={model_dir}`.")
    model = trainer.build_model(text_towers.load_vocabulary(vocabulary))
    if train_argument("cache_features"):
        # The run trained the heads; the backbones are the pretrained ones.
        heads = model.head_model()
        heads(heads.dummy_inputs())  # a model takes weights once built
        heads.load_weights(checkpoint)
    else:
        model.load_weights(checkpoint)
    return model


def load_from_flags(flags):
    """The model of --model_dir, configured by its own gin or --gin_file."""
    if not flags.model_dir:
        raise cli.UserError("--model_dir is required: the folder of a "
                            "training run.")
    load_gin_for_run(flags.model_dir, flags.gin_file, flags.gin_bindings)
    return load_trained_model(flags.model_dir)


def train_argument(name):
    """What the config gives `train(name=...)`, or its default."""
    try:
        return gin.query_parameter(f"train.{name}")
    except ValueError:
        return inspect.signature(trainer.train).parameters[name].default
