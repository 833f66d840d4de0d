"""Two real worker processes on 127.0.0.1 train like one process."""

import json
import os
import re
import socket

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import assert_same_training
from tests.conftest import bindings
from tests.conftest import finished
from tests.conftest import read_weights
from tests.conftest import run_tool
from tests.conftest import start_tool
from tests.test_fault_tolerance import _outputs


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _epoch_losses(model_dir):
    """The per-epoch training loss TensorBoard logged, in epoch order."""
    losses = {}
    folder = os.path.join(model_dir, "logs", "train")
    for name in os.listdir(folder):
        for event in tf.compat.v1.train.summary_iterator(
            os.path.join(folder, name)
        ):
            for value in event.summary.value:
                if value.tag == "epoch_loss":
                    losses[event.step] = float(tf.make_ndarray(value.tensor))
    return [losses[step] for step in sorted(losses)]


# A clip this small acts on every step; clipping each worker's part of the
# gradient instead of the sum trains other weights. In float32 whatever
# the CPU: bfloat16 rounds sums taken in another order 1e-3 apart, which
# would hide the 1e-5 this test holds two workers to.
CLIPPED = [
    "make_optimizer.global_clipnorm = 0.01",
    "train.mixed_precision = 'float32'",
]


def _train_one_process(tfds_dir, model_dir, extra):
    result = run_tool(
        "train",
        "--gin_file=gin/demo.gin",
        *bindings(CLIPPED + extra),
        f"--model_dir={model_dir}",
        f"--data_dir={tfds_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return read_weights(
        os.path.join(model_dir, "checkpoints", "backup", "latest.weights.h5")
    )


@pytest.mark.slow
def test_two_workers_train_like_one_process(tfds_dir, tmp_path):
    single_dir = tmp_path / "single"
    expected = _train_one_process(tfds_dir, single_dir, [])
    start = _train_one_process(
        tfds_dir,
        tmp_path / "start",
        ["CosineDecayOverRun.initial_learning_rate = 0.0"],
    )
    model_dir = tmp_path / "run"
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers, scratch = [], []
    for index in range(2):
        scratch.append(tmp_path / f"tmp{index}")
        scratch[-1].mkdir()
        config = {
            "cluster": cluster,
            "task": {"type": "worker", "index": index},
        }
        workers.append(
            start_tool(
                "train",
                "--gin_file=gin/demo.gin",
                *bindings(CLIPPED),
                f"--model_dir={model_dir}",
                f"--data_dir={tfds_dir}",
                env_extra={
                    "TMPDIR": str(scratch[-1]),
                    "TF_CONFIG": json.dumps(config),
                    "TF_CPP_MIN_LOG_LEVEL": "2",
                },
            )
        )
    chief_out, other_out = finished(workers)
    assert "2 replicas" in chief_out

    # The chief wrote every output a single-process run writes ...
    assert _outputs(model_dir) == _outputs(single_dir)
    # ... and the other worker only its own temporary folder, now removed.
    own = re.search(r"it writes to (\S+), removed", other_out).group(1)
    assert own.startswith(str(scratch[1]))
    assert not os.path.exists(own) and not os.listdir(scratch[1])
    assert "Test metrics" in chief_out and "Test metrics" not in other_out

    # The global batch is split across the workers, the losses gather it
    # back and the clip acts on the gradient summed over both: the logged
    # losses and the weights are the single process's.
    single = _epoch_losses(single_dir)
    assert len(single) == 2
    np.testing.assert_allclose(_epoch_losses(model_dir), single, rtol=1e-5)
    assert_same_training(
        read_weights(
            os.path.join(
                model_dir, "checkpoints", "backup", "latest.weights.h5"
            )
        ),
        expected,
        start,
    )
