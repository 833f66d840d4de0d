"""Checks `vse_tf.load` against a run's own metrics.json, on real photos.

    python -m tools.check_load --model_dir=runs/f8k --data_dir=../shared/data

Loads the run folder and then its export with `vse_tf.load`, embeds the
test split's photos (their files, as a user passes them) and captions,
scores Recall@K with `vse_tf.evaluation.retrieval_metrics` (a count of
captions per photo), and compares every metric, hubness-corrected and by
cosine, with metrics.json. Last, the export's text tower embeds the
captions in a process that has TensorFlow alone, as TF Serving does (no
TF Text, keras or vse_tf), after checking that every op of both towers is
in its registry; scored against the export's photos, they must give
metrics.json too. Exit status 1 when a metric differs. For runs on
Karpathy's datasets (flickr8k, flickr30k, coco) and on caption files.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import vse_tf
from tools import machine_info
from vse_tf import evaluation
from vse_tf.data import caption_files
from vse_tf.data import karpathy
from vse_tf.evaluation import hubness
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


def differences(model, paths, captions, expected, texts=None):
    """{metric: |recomputed - metrics.json|}, corrected and by cosine;
    `texts`: the captions' scoring vectors, if not the model's."""
    counts = [len(c) for c in captions]
    photos = model.encode_images(paths, scoring=True)
    if texts is None:
        texts = model.encode_texts(
            [c for cs in captions for c in cs], scoring=True
        )
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


# What TF Serving has: TensorFlow, without this project's stack or TF Text
# (the tests' TF-only clients start with it too).
TF_ONLY_PRELUDE = r"""
import sys

for name in ("keras", "keras_hub", "keras_nlp", "tensorflow_text", "tf_keras",
             "vse_tf"):
    sys.modules[name] = None

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry


# The ops in a SavedModel's graphs that this TensorFlow lacks.
def unregistered_ops(version_dir):
    model = saved_model_pb2.SavedModel()
    with open(f"{version_dir}/saved_model.pb", "rb") as f:
        model.ParseFromString(f.read())
    ops = set()
    for graph in model.meta_graphs:
        ops.update(node.op for node in graph.graph_def.node)
        for function in graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return sorted(op for op in ops if op_def_registry.get(op) is None)
"""


TF_ONLY = (
    TF_ONLY_PRELUDE
    + r"""
import json

image_dir, text_dir, captions_file, out = sys.argv[1:]
for version_dir in (image_dir, text_dir):
    missing = unregistered_ops(version_dir)
    if missing:
        sys.exit(f"{version_dir}: ops outside TensorFlow's core: {missing}")
with open(captions_file) as f:
    captions = json.load(f)
serve = tf.saved_model.load(text_dir).signatures["serving_default"]
outputs = [serve(text=tf.constant(captions[i:i + 256]))
           for i in range(0, len(captions), 256)]
np.savez(out, **{key: np.concatenate([o[key].numpy() for o in outputs])
                 for key in outputs[0]})
"""
)


def served_by_tensorflow_alone(export_dir, captions):
    """The captions' scoring vectors (as `vse_tf.load` scores) from the
    newest text tower, loaded by a process without TF Text, keras or
    vse_tf."""
    from vse_tf.serving import saved_model

    tower_dirs = saved_model.version_dirs(export_dir)
    with tempfile.TemporaryDirectory() as work:
        with open(os.path.join(work, "captions.json"), "w") as f:
            json.dump(captions, f)
        out = os.path.join(work, "served.npz")
        subprocess.run(
            [
                sys.executable,
                "-c",
                TF_ONLY,
                *tower_dirs,
                os.path.join(work, "captions.json"),
                out,
            ],
            check=True,
            env={**os.environ, "PYTHONPATH": ""},
        )
        with np.load(out) as served:
            if "hubness" not in served:
                return served["embedding"]
            return hubness.text_scoring(served["embedding"], served["hubness"])


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
    started = time.time()
    texts = served_by_tensorflow_alone(
        run.export, [c for cs in captions for c in cs]
    )
    found = differences(model, paths, captions, expected, texts)
    worst = max(worst, *found.values())
    print(
        "captions served by TensorFlow alone, photos by the export: largest "
        f"difference from metrics.json: {max(found.values()):.6f} "
        f"({time.time() - started:.0f} s)"
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
