"""Scores a trained run: `python -m vse_tf.evaluate --model_dir=DIR`.

Rebuilds the model from the run's own operative_config.gin (or the given
--gin_file), loads its best checkpoint, embeds a split, prints the Recall@K
table and writes the metrics as JSON: DIR/metrics.json for the test split,
DIR/metrics_<protocol>.json for a protocol, DIR/metrics_<split>_<folds>fold
.json otherwise, or --output.

    python -m vse_tf.evaluate --model_dir=runs/coco --protocol=coco1k
"""

import json

from absl import flags

from vse_tf import errors
from vse_tf import evaluation
from vse_tf import io_utils
from vse_tf.cli import common
from vse_tf.data import pipeline
from vse_tf.evaluation import embedding
from vse_tf.training import run_dir
from vse_tf.training import runs

flags.DEFINE_enum(
    "protocol",
    None,
    list(evaluation.PROTOCOLS),
    "A standard protocol: "
    + "; ".join(
        f"{name} = {p.summary}" for name, p in evaluation.PROTOCOLS.items()
    )
    + ". Sets --split and --folds.",
)
flags.DEFINE_string("split", "test", "Split to score: train, val or test.")
flags.DEFINE_integer(
    "folds", 1, "Folds averaged (5 on 5,000 images is COCO 1K)."
)
flags.DEFINE_string("output", None, "Where to write the metrics JSON.")
flags.DEFINE_bool(
    "json", False, "Print the metrics as JSON on stdout instead of the table."
)
FLAGS = common.FLAGS


def main(argv):
    del argv
    model = common.load_run(FLAGS)
    dataset = runs.run_fact(FLAGS.model_dir, "dataset")
    split, folds = FLAGS.split, FLAGS.folds
    if folds < 1:
        raise errors.UserError(f"--folds={folds}: at least 1 fold.")
    if FLAGS.protocol:
        split = evaluation.PROTOCOLS[FLAGS.protocol].split
        folds = evaluation.PROTOCOLS[FLAGS.protocol].folds
    examples = pipeline.load_examples(dataset, split, FLAGS.data_dir)
    images = int(examples.cardinality())
    if FLAGS.protocol:
        try:
            evaluation.check_protocol(FLAGS.protocol, images)
        except ValueError as error:
            raise errors.UserError(f"{dataset}: {error}") from error
    elif images % folds:
        raise errors.UserError(
            f"--folds={folds} does not cut the {split} split of {dataset} "
            f"({images} images) into equal folds; pick a number that "
            f"divides {images}."
        )
    try:
        # A run fitted with a hubness correction is scored as it serves.
        metrics = embedding.evaluate_model(
            model,
            examples,
            folds=folds,
            correction=runs.load_hubness_correction(FLAGS.model_dir),
        )
    except evaluation.NonFiniteEmbeddings as error:
        raise errors.UserError(
            f"Cannot score the best checkpoint of {FLAGS.model_dir} on the "
            f"{split} split: {error}"
        ) from error
    if FLAGS.protocol:
        table = evaluation.format_paper_row(metrics, FLAGS.protocol)
    else:
        table = evaluation.format_table(
            metrics, title=f"{dataset} {split} ({folds} fold(s)):"
        )
    output = FLAGS.output or run_dir.RunDir(FLAGS.model_dir).evaluation_metrics(
        split, folds, FLAGS.protocol
    )
    io_utils.write_json_atomic(output, metrics)
    if FLAGS.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    else:
        print(table)
        print(f"Wrote {output}")


def run():
    """The program: `python -m vse_tf.evaluate`."""
    common.run(main)


if __name__ == "__main__":
    run()
