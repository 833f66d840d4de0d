"""Scores a trained run: `python -m vse_tf.evaluate --model_dir=DIR`.

Rebuilds the model from the run's own operative_config.gin (or the given
--gin_file), loads its best checkpoint, embeds a split, prints the Recall@K
table and writes the metrics as JSON: DIR/metrics.json for the test split,
DIR/metrics_<protocol>.json for a protocol, DIR/metrics_<split>_<folds>fold
.json otherwise, or --output.

    python -m vse_tf.evaluate --model_dir=runs/coco --protocol=coco1k
"""

import json

from vse_tf import errors
from vse_tf import evaluation
from vse_tf import io_utils
from vse_tf.cli import common
from vse_tf.data import pipeline
from vse_tf.evaluation import embedding
from vse_tf.training import run_dir
from vse_tf.training import runs


def main(flags):
    model = common.load_run(flags)
    dataset = runs.run_fact(flags.model_dir, "dataset")
    split, folds = flags.split, flags.folds
    if folds < 1:
        raise errors.UserError(f"--folds={folds}: at least 1 fold.")
    if flags.protocol:
        split = evaluation.PROTOCOLS[flags.protocol].split
        folds = evaluation.PROTOCOLS[flags.protocol].folds
    examples = pipeline.load_examples(dataset, split, flags.data_dir)
    images = int(examples.cardinality())
    if flags.protocol:
        try:
            evaluation.check_protocol(flags.protocol, images)
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
            correction=runs.load_hubness_correction(flags.model_dir),
        )
    except evaluation.NonFiniteEmbeddings as error:
        raise errors.UserError(
            f"Cannot score the best checkpoint of {flags.model_dir} on the "
            f"{split} split: {error}"
        ) from error
    if flags.protocol:
        table = evaluation.format_paper_row(metrics, flags.protocol)
    else:
        table = evaluation.format_table(
            metrics, title=f"{dataset} {split} ({folds} fold(s)):"
        )
    output = flags.output or run_dir.RunDir(flags.model_dir).evaluation_metrics(
        split, folds, flags.protocol
    )
    io_utils.write_json_atomic(output, metrics)
    if flags.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    else:
        print(table)
        print(f"Wrote {output}")


def run():
    """The program: `python -m vse_tf.evaluate`."""
    parsed = common.run_parser("evaluate", __doc__)
    parsed.add_argument(
        "--protocol",
        choices=list(evaluation.PROTOCOLS),
        help="a standard protocol: "
        + "; ".join(
            f"{name} = {p.summary}" for name, p in evaluation.PROTOCOLS.items()
        )
        + ". Sets --split and --folds.",
    )
    parsed.add_argument(
        "--split", default="test", help="split to score: train, val or test"
    )
    parsed.add_argument(
        "--folds",
        type=int,
        default=1,
        help="folds averaged (5 on 5,000 images is COCO 1K)",
    )
    parsed.add_argument("--output", help="where to write the metrics JSON")
    parsed.add_argument(
        "--json",
        action="store_true",
        help="print the metrics as JSON on stdout instead of the table",
    )
    common.run(main, parsed)


if __name__ == "__main__":
    run()
