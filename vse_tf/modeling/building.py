"""Building the dual encoder that gin configures, compiled with its
optimizer and loss.

Training builds it here, and so does every program that loads a trained
run (evaluate, export, projector, `vse_tf.training.runs`), which therefore
imports no trainer.
"""

from vse_tf import errors
from vse_tf.modeling import optimizers
from vse_tf.models import dual_encoder


def build_model(
    vocabulary, loss=None, global_batch_size=None, total_steps=None
):
    """The dual encoder as gin configures it, built and compiled; a
    training run passes its `total_steps` for a schedule that spans the
    run (`optimizers.CosineDecayOverRun`)."""
    model = dual_encoder.build_dual_encoder(vocabulary)
    if loss is not None:
        check_projection_heads(model, loss)
    return _built_and_compiled(model, loss, global_batch_size, total_steps)


def build_head_model(model, loss, global_batch_size, total_steps=None):
    """The model's heads, compiled to train on cached backbone features."""
    return _built_and_compiled(
        model.head_model(), loss, global_batch_size, total_steps
    )


def check_projection_heads(model, loss):
    """A UserError unless both towers join as many projection heads as
    the loss scores."""
    heads = getattr(loss, "projection_heads", 1)
    for tower in model.both_towers():
        joined = getattr(tower, "projection_heads", 1)
        if joined != heads:
            raise errors.UserError(
                f"The loss scores {heads} projection head(s) "
                f"({type(loss).__name__}.projection_heads), but the "
                f"{tower.name} joins {joined}: bind both towers' "
                "projection_heads and the loss's to one value (a gin "
                "macro, as gin/flickr8k.gin does)."
            )


def _built_and_compiled(model, loss, global_batch_size, total_steps=None):
    model(model.dummy_inputs())  # creates the weights before any restore
    model.compile(
        optimizer=optimizers.make_optimizer(
            global_batch_size=global_batch_size, total_steps=total_steps
        ),
        loss=loss,
    )
    return model
