"""Scores a trained run: `python -m vse_tf.evaluate --model_dir=DIR`.

Rebuilds the model from the run's own operative_config.gin (or the given
--gin_file), loads its best checkpoint, embeds a split, prints the Recall@K
table and writes the metrics as JSON: DIR/metrics.json for the test split,
DIR/metrics_<split>.json otherwise, or --output.
"""

import inspect
import os

import gin
from absl import flags

from vse_tf import cli
from vse_tf import embed
from vse_tf import evaluation
from vse_tf import io_utils
from vse_tf import trainer
from vse_tf.callbacks import BEST_WEIGHTS
from vse_tf.data import pipeline
from vse_tf.models import text_towers

flags.DEFINE_string("split", "test", "Split to score: train, val or test.")
flags.DEFINE_integer("folds", 1, "Folds averaged (5 on 5,000 images is "
                     "COCO 1K).")
flags.DEFINE_string("output", None, "Where to write the metrics JSON.")
FLAGS = cli.FLAGS


def evaluate_run(model_dir, data_dir=None, split="test", folds=1):
    """Metrics of the best checkpoint in `model_dir` on `split`."""
    checkpoint = os.path.join(model_dir, "checkpoints", BEST_WEIGHTS)
    vocabulary_path = os.path.join(model_dir, trainer.VOCABULARY)
    if not os.path.exists(checkpoint) or not os.path.exists(vocabulary_path):
        raise cli.UserError(
            f"No trained model in {model_dir!r}: expected "
            f"{checkpoint} and {vocabulary_path}. Train one first with "
            "`python -m vse_tf.train --gin_file=... --model_dir="
            f"{model_dir}`.")
    dataset = _train_argument("dataset")
    examples = pipeline.load_examples(dataset, split, data_dir)
    model = trainer.build_model(
        text_towers.load_vocabulary(vocabulary_path), loss=None,
        example_batch=pipeline.example_inputs(examples))
    model.load_weights(checkpoint)
    return dataset, embed.evaluate_model(model, examples, folds=folds)


def _train_argument(name):
    """What the config gives `train(name=...)`, or its default."""
    try:
        return gin.query_parameter(f"train.{name}")
    except ValueError:
        return inspect.signature(trainer.train).parameters[name].default


def main(argv):
    del argv
    if not FLAGS.model_dir:
        raise cli.UserError("--model_dir is required: the folder of a "
                            "training run.")
    gin_files = FLAGS.gin_file or [
        os.path.join(FLAGS.model_dir, cli.OPERATIVE_CONFIG)]
    cli.load_gin(gin_files, FLAGS.gin_bindings)
    dataset, metrics = evaluate_run(FLAGS.model_dir, FLAGS.data_dir,
                                    FLAGS.split, FLAGS.folds)
    print(evaluation.format_table(
        metrics, title=f"{dataset} {FLAGS.split} ({FLAGS.folds} fold(s)):"))
    name = ("metrics.json" if FLAGS.split == "test" and FLAGS.folds == 1 else
            f"metrics_{FLAGS.split}_{FLAGS.folds}fold.json")
    output = FLAGS.output or os.path.join(FLAGS.model_dir, name)
    io_utils.write_json_atomic(output, metrics)
    print(f"Wrote {output}")


if __name__ == "__main__":
    cli.run(main)
