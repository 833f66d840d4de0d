"""Which `tf.distribute` strategy a run uses, and which worker writes.

    TF_CONFIG set          -> MultiWorkerMirroredStrategy (one process per
                              machine; all of them run the same command)
    get_strategy.tpu = ... -> TPUStrategy
    more than one GPU      -> MirroredStrategy
    otherwise              -> the default strategy (one device)

`get_strategy.kind` overrides the choice. The global batch is what the gin
file says; each replica takes batch_size / replicas of it, and the losses
gather every replica's embeddings, so negatives always come from the whole
global batch.

In a multi-worker run every worker computes every step, but only the chief
writes into the model dir; the others write into a temporary folder of their
own that is deleted at the end (the layout Keras's multi-worker guide uses).
"""

import json
import os
import shutil
import tempfile

import gin
import tensorflow as tf

from vse_tf import errors

KINDS = ("auto", "default", "mirrored", "multi_worker", "tpu")


def cluster_config():
    """TF_CONFIG as a dict, checked; None when it is unset.

    A malformed TF_CONFIG would otherwise surface as a hang (a worker waiting
    for peers that never come) or a gRPC traceback.
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    example = (
        '\'{"cluster": {"worker": ["host1:port", "host2:port"]}, '
        '"task": {"type": "worker", "index": 0}}\''
    )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise errors.UserError(
            f"TF_CONFIG is not valid JSON ({error.msg} at character "
            f"{error.pos}). Set it on each machine to the cluster and this "
            f"machine's task, e.g. TF_CONFIG={example}, or unset it to train "
            "on one machine."
        ) from error
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if (
        not isinstance(cluster, dict)
        or not cluster
        or not all(
            isinstance(hosts, list) and hosts for hosts in cluster.values()
        )
    ):
        raise errors.UserError(
            'TF_CONFIG has no "cluster" mapping each task type to its list '
            f'of "host:port" addresses; expected e.g. {example}.'
        )
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise errors.UserError(
            f'TF_CONFIG\'s "task" is {task!r}, but its "type" must name '
            f"one of the cluster's task types {sorted(cluster)}; expected "
            f"e.g. {example}."
        )
    index = task.get("index")
    count = len(cluster[task["type"]])
    if not isinstance(index, int) or not 0 <= index < count:
        raise errors.UserError(
            f"TF_CONFIG names this machine {task['type']} {index!r}, but the "
            f"cluster lists {count} {task['type']} address(es), so the index "
            f"must be one of 0..{count - 1}."
        )
    return config


@gin.configurable
def get_strategy(kind="auto", tpu=None):
    """The strategy of this run (see the module docstring).

    Args:
      kind: "auto", or one of "default", "mirrored", "multi_worker", "tpu"
        to force it.
      tpu: a TPU's name or grpc:// address; "local" for a TPU VM.
    """
    if kind not in KINDS:
        raise errors.UserError(
            f"Unknown strategy {kind!r}; choose one of {', '.join(KINDS)}."
        )
    cluster = cluster_config()
    if kind == "auto":
        if cluster is not None:
            kind = "multi_worker"
        elif tpu:
            kind = "tpu"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "multi_worker":
        if cluster is None:
            raise errors.UserError(
                "The multi_worker strategy needs TF_CONFIG "
                "to describe the cluster."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """Whether this process writes the run's outputs."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    # Without a "chief" task, worker 0 plays the chief (Keras's convention).
    return (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


class WorkerDir:
    """The folder a worker writes into: the model dir on the chief, else a
    temporary folder removed on exit."""

    def __init__(self, model_dir, strategy):
        self.model_dir = model_dir
        self.is_chief = is_chief(strategy)
        self.path = model_dir
        if not self.is_chief:
            resolver = strategy.cluster_resolver
            self.path = tempfile.mkdtemp(
                prefix=f"vse_tf-{resolver.task_type}{resolver.task_id}-"
            )
            print(
                f"This is {resolver.task_type} {resolver.task_id}, not the "
                f"chief: it writes to {self.path}, removed at the end; "
                f"the chief writes {model_dir}."
            )

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if not self.is_chief:
            shutil.rmtree(self.path, ignore_errors=True)


def check_batch_size(batch_size, strategy, microbatch_size=None):
    """A UserError unless the global batch splits evenly over the replicas,
    and each replica's share into slices of `microbatch_size`."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise errors.UserError(
            f"train.batch_size = {batch_size} does not split over "
            f"{replicas} replicas. The global batch is divided evenly, so "
            f"use a multiple of {replicas}, e.g. "
            f"{max(batch_size // replicas, 1) * replicas}."
        )
    share = batch_size // replicas
    if microbatch_size is not None and share % microbatch_size:
        divisors = [d for d in range(1, share + 1) if share % d == 0]
        closest = min(divisors, key=lambda d: abs(d - microbatch_size))
        raise errors.UserError(
            f"train.microbatch_size = {microbatch_size} does not divide the "
            f"batch of a replica, train.batch_size / replicas = {batch_size}"
            f" / {replicas} = {share}. Each replica computes its share in "
            f"slices of equal size: use a divisor of {share}, e.g. "
            f"{closest}."
        )
