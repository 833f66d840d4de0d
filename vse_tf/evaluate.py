"""Scores a trained run: `python -m vse_tf.evaluate --model_dir=DIR`.

Rebuilds the model from the run's own operative_config.gin (or the given
--gin_file), loads its best checkpoint, embeds a split, prints the Recall@K
table and writes the metrics as JSON: DIR/metrics.json for the test split,
DIR/metrics_<split>.json otherwise, or --output.
"""

import os

from absl import flags

from vse_tf import cli
from vse_tf import embed
from vse_tf import evaluation
from vse_tf import io_utils
from vse_tf import runs
from vse_tf.data import pipeline

flags.DEFINE_string("split", "test", "Split to score: train, val or test.")
flags.DEFINE_integer("folds", 1, "Folds averaged (5 on 5,000 images is "
                     "COCO 1K).")
flags.DEFINE_string("output", None, "Where to write the metrics JSON.")
FLAGS = cli.FLAGS


def main(argv):
    del argv
    model = runs.load_from_flags(FLAGS)
    dataset = runs.train_argument("dataset")
    examples = pipeline.load_examples(dataset, FLAGS.split, FLAGS.data_dir)
    metrics = embed.evaluate_model(model, examples, folds=FLAGS.folds)
    print(evaluation.format_table(
        metrics, title=f"{dataset} {FLAGS.split} ({FLAGS.folds} fold(s)):"))
    name = ("metrics.json" if FLAGS.split == "test" and FLAGS.folds == 1 else
            f"metrics_{FLAGS.split}_{FLAGS.folds}fold.json")
    output = FLAGS.output or os.path.join(FLAGS.model_dir, name)
    io_utils.write_json_atomic(output, metrics)
    print(f"Wrote {output}")


if __name__ == "__main__":
    cli.run(main)
