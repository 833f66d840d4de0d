"""A finished training run, read back from its folder.

Every tool that works on a trained model (evaluate, export, projector) goes
through here, so each fails the same clear way on a folder that holds none.
The run's gin configuration must be loaded first (the programs do it).
"""

import os

import gin

from vse_tf import errors
from vse_tf.evaluation import hubness
from vse_tf.modeling import building
from vse_tf.models import text_towers
from vse_tf.training import legacy_weights
from vse_tf.training import run_dir


def run_fact(model_dir, name):
    """What the run's run.json says of `name` (e.g. "dataset"); for a run
    written before run.json, what its configuration binds `train.<name>`
    to."""
    facts = run_dir.RunDir(model_dir).read_run_info()
    if name in facts:
        return facts[name]
    try:
        return gin.query_parameter(f"train.{name}")
    except ValueError:
        raise errors.UserError(
            f"{model_dir!r} has no {run_dir.RUN_INFO} and its configuration "
            f"does not bind train.{name}: pass the run's own --gin_file, or "
            f"--gin_bindings='train.{name} = ...'."
        ) from None


def load_trained_model(model_dir):
    """The dual encoder of the run (as gin configures it), best weights."""
    run = run_dir.RunDir(model_dir)
    checkpoint, vocabulary = run.best_weights, run.vocabulary
    if not all(os.path.exists(p) for p in (checkpoint, vocabulary)):
        raise errors.UserError(
            f"No trained model in {model_dir!r}: expected {checkpoint} and "
            f"{vocabulary}. Train one first with `python -m vse_tf.train "
            f"--gin_file=... --model_dir={model_dir}`."
        )
    model = building.build_model(text_towers.load_vocabulary(vocabulary))
    if run_fact(model_dir, "cache_features"):
        # The run trained the heads; the backbones are the pretrained ones.
        heads = model.head_model()
        heads(heads.dummy_inputs())  # a model takes weights once built
        _load(heads, checkpoint)
    else:
        # The checkpoint holds the optimizer's state too: an optimizer
        # built to take it loads without Keras's "Skipping variable
        # loading" warning.
        model.optimizer.build(model.trainable_variables)
        _load(model, checkpoint)
    return model


def _load(model, checkpoint):
    legacy_weights.load(
        model,
        checkpoint,
        "checkpoint",
        "It is damaged, or was written by another model: train the run "
        "again, or load it with the run's own operative_config.gin.",
    )


def load_hubness_correction(model_dir):
    """The run's fitted hubness correction, or None if it trained without."""
    path = run_dir.RunDir(model_dir).hubness_banks
    return (
        hubness.HubnessCorrection.load(path) if os.path.exists(path) else None
    )
