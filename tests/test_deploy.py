"""deploy/multi_worker_job.yaml: each pod's TF_CONFIG, resolved as the
kubelet resolves it, names every worker by its pod's DNS name and itself
by its index; the same TF_CONFIGs, their hosts on 127.0.0.1, train as
real local worker processes."""

import json
import os
import re

import pytest
import yaml

from tests.conftest import REPO
from tests.conftest import bindings
from tests.conftest import finished
from tests.conftest import start_tool
from tests.test_multi_worker import _free_ports
from vse_tf.training import distribute

MANIFEST = os.path.join(REPO, "deploy", "multi_worker_job.yaml")
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def _manifest():
    documents = list(yaml.safe_load_all(open(MANIFEST, encoding="utf-8")))
    kinds = {document["kind"]: document for document in documents}
    return kinds["Service"], kinds["Job"]


def _pod_env(container, index):
    """The container's environment in pod `index`: the downward API's
    completion-index annotation, and $(NAME) expanded from the variables
    defined before it, as the kubelet does."""
    annotations = {INDEX_ANNOTATION: str(index)}
    env = {}
    for variable in container["env"]:
        if "valueFrom" in variable:
            path = variable["valueFrom"]["fieldRef"]["fieldPath"]
            key = re.fullmatch(r"metadata\.annotations\['(.+)'\]", path)
            env[variable["name"]] = annotations[key.group(1)]
        else:
            env[variable["name"]] = re.sub(
                r"\$\((\w+)\)",
                lambda name: env.get(name.group(1), name.group(0)),
                variable["value"],
            )
    return env


def _tf_configs():
    service, job = _manifest()
    container = job["spec"]["template"]["spec"]["containers"][0]
    count = job["spec"]["parallelism"]
    return [
        json.loads(_pod_env(container, index)["TF_CONFIG"])
        for index in range(count)
    ]


def test_each_pod_names_every_worker_and_itself(monkeypatch):
    service, job = _manifest()
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    name = job["metadata"]["name"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 2
    # Pod i answers as NAME-i.SERVICE only through a headless Service
    # selecting the Job's pods, named as the pods' subdomain.
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"job-name": name}
    assert pod["subdomain"] == service["metadata"]["name"]
    port = service["spec"]["ports"][0]["port"]
    assert pod["containers"][0]["ports"][0]["containerPort"] == port
    workers = [
        f"{name}-{index}.{pod['subdomain']}:{port}"
        for index in range(spec["parallelism"])
    ]
    for index, config in enumerate(_tf_configs()):
        assert config == {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": index},
        }
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
        assert distribute.cluster_config() == config


@pytest.mark.slow
def test_the_pods_tf_configs_train_as_local_workers(tfds_dir, tmp_path):
    _, job = _manifest()
    container = job["spec"]["template"]["spec"]["containers"][0]
    configs = _tf_configs()
    hosts = configs[0]["cluster"]["worker"]
    local = dict(zip(hosts, (f"127.0.0.1:{p}" for p in _free_ports(2))))
    # The container's command, the experiment shrunk to the test's: the
    # demo's tiny config, local folders for the volumes.
    assert container["command"] == ["python", "-m", "vse_tf.train"]
    local_dirs = {"--model_dir": tmp_path / "run", "--data_dir": tfds_dir}
    args = [
        f"{flag}={local_dirs[flag]}" if flag in local_dirs else argument
        for argument in container["args"]
        for flag in [argument.split("=")[0]]
        if flag != "--gin_file"
    ]
    workers = []
    for config in configs:
        config["cluster"]["worker"] = [local[h] for h in hosts]
        workers.append(
            start_tool(
                "train",
                "--gin_file=gin/demo.gin",
                *bindings(),
                *args,
                env_extra={"TF_CONFIG": json.dumps(config)},
            )
        )
    chief_out, _ = finished(workers)
    assert "2 replicas" in chief_out and "Test metrics" in chief_out
    assert os.path.exists(tmp_path / "run" / "metrics.json")
