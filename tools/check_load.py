"""Checks `vse_tf.load` against a run's own metrics.json, on real photos.

    python -m tools.check_load --model_dir=runs/f8k --data_dir=../shared/data

Loads the run folder and then its export with `vse_tf.load`, embeds the
test split's photos (their files, as a user passes them) and captions,
scores Recall@K with `vse_tf.evaluation.retrieval_metrics` (a count of
captions per photo), and compares every metric, hubness-corrected and by
cosine, with metrics.json. Exit status 1 when one differs. For runs on
Karpathy's datasets (flickr8k, flickr30k, coco) and on caption files.
"""

import argparse
import json
import sys
import time

import vse_tf
from tools import machine_info
from vse_tf import evaluation
from vse_tf.data import caption_files
from vse_tf.data import karpathy
from vse_tf.training import run_dir


def test_photos(dataset, data_dir):
    """(photo paths, their captions) of the test split, in its order."""
    if caption_files.handles(dataset):
        paths, captions, _ = caption_files.checked_split(
            dataset, "test", data_dir
        )
        return paths, captions
    paths, captions, _ = karpathy.checked_split(dataset, "test", data_dir)
    return paths, captions


def differences(model, paths, captions, expected):
    """{metric: |recomputed - metrics.json|}, corrected and by cosine."""
    counts = [len(c) for c in captions]
    photos = model.encode_images(paths, scoring=True)
    texts = model.encode_texts([c for cs in captions for c in cs], scoring=True)
    found = {"": evaluation.retrieval_metrics(photos, texts, counts)}
    if model.corrected:
        dim = photos.shape[1] - 2  # the scoring vectors' two columns more
        found["cosine/"] = evaluation.retrieval_metrics(
            photos[:, :dim], texts[:, :dim], counts
        )
    return {
        f"{prefix}{name}": abs(
            metrics[name] - (expected["cosine"] if prefix else expected)[name]
        )
        for prefix, metrics in found.items()
        for name in evaluation.METRIC_NAMES
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 1)[1],
    )
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--data_dir")
    args = parser.parse_args()
    run = run_dir.RunDir(args.model_dir)
    dataset = run.read_run_info()["dataset"]
    with open(run.metrics) as f:
        expected = json.load(f)
    paths, captions = test_photos(dataset, args.data_dir)
    worst = 0.0
    for source in (args.model_dir, run.export):
        started = time.time()
        model = vse_tf.load(source)
        found = differences(model, paths, captions, expected)
        worst = max(worst, *found.values())
        print(
            f"{model}: {len(paths)} photos, "
            f"{sum(len(c) for c in captions)} captions; largest difference "
            f"from metrics.json over {len(found)} metrics: "
            f"{max(found.values()):.6f} ({time.time() - started:.0f} s)"
        )
    print(
        f"rsum in metrics.json: {expected['rsum']:.2f}"
        + (
            f" (cosine {expected['cosine']['rsum']:.2f})"
            if "cosine" in expected
            else ""
        )
        + f"; {machine_info.describe()}"
    )
    return 1 if worst > 1e-9 else 0


if __name__ == "__main__":
    sys.exit(main())
