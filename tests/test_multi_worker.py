"""Two real worker processes on 127.0.0.1 train like one process."""

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tests.conftest import REPO, bindings
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
                os.path.join(folder, name)):
            for value in event.summary.value:
                if value.tag == "epoch_loss":
                    losses[event.step] = float(tf.make_ndarray(value.tensor))
    return [losses[step] for step in sorted(losses)]


def test_two_workers_train_like_one_process(trained_run, tfds_dir, tmp_path):
    single_dir, _ = trained_run
    model_dir = tmp_path / "run"
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers, scratch = [], []
    for index in range(2):
        scratch.append(tmp_path / f"tmp{index}")
        scratch[-1].mkdir()
        env = {**os.environ, "VSE_TF_QUIET_PROGRESS": "1",
               "TMPDIR": str(scratch[-1]),
               "TF_CONFIG": json.dumps({
                   "cluster": cluster,
                   "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "vse_tf.train", "--gin_file=gin/demo.gin",
             *bindings(), f"--model_dir={model_dir}",
             f"--data_dir={tfds_dir}"],
            cwd=REPO, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    try:
        results = [w.communicate(timeout=400) for w in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, (_, stderr) in zip(workers, results):
        assert worker.returncode == 0, stderr[-3000:]
    chief_out, other_out = results[0][0], results[1][0]
    assert "2 replica(s)" in chief_out

    # The chief wrote every output a single-process run writes ...
    assert _outputs(model_dir) == _outputs(single_dir)
    # ... and the other worker only its own temporary folder, now removed.
    own = re.search(r"it writes to (\S+), removed", other_out).group(1)
    assert own.startswith(str(scratch[1]))
    assert not os.path.exists(own) and not os.listdir(scratch[1])
    assert "Test metrics" in chief_out and "Test metrics" not in other_out

    # The global batch is split across the workers and the losses gather
    # it back: the logged losses are the single process's, epoch by epoch.
    single = _epoch_losses(single_dir)
    assert len(single) == 2
    np.testing.assert_allclose(_epoch_losses(model_dir), single, rtol=1e-5)
