"""The TF Serving client: its requests against the exported signatures.

TF Serving itself is not installable here, so the requests are checked
against the SavedModels' own signatures and sent over real REST and gRPC
connections to small stand-ins on 127.0.0.1 that answer from those
SavedModels. Set VSE_TF_SERVING_REST / VSE_TF_SERVING_GRPC (host:port) to
also run them against a real server.
"""

import base64
import http.server
import json
import os
import socket
import threading
from concurrent import futures

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO
from tests.conftest import run_tool
from vse_tf.serving import client as serving_client

grpc = pytest.importorskip("grpc")
from tensorflow_serving.apis import predict_pb2  # noqa: E402
from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: E402

CAPTIONS = ["a red circle left of a blue square", ""]


@pytest.fixture(scope="module")
def signatures(trained_run):
    """{model name: its serving_default signature}, as exported."""
    model_dir, _ = trained_run
    return {
        model: tf.saved_model.load(
            os.path.join(model_dir, "export", model, "1")
        ).signatures[serving_client.SIGNATURE]
        for model in serving_client.INPUTS
    }


@pytest.fixture(scope="module")
def png():
    return tf.io.encode_png(tf.zeros([32, 32, 3], tf.uint8) + 200).numpy()


def _input_specs(signature):
    return signature.structured_input_signature[1]


def test_rest_requests_fit_the_signatures(signatures, png):
    for model, values in (("text_tower", CAPTIONS), ("image_tower", [png])):
        path, body = serving_client.rest_request(model, values)
        assert path == f"/v1/models/{model}:predict"
        body = json.loads(body)
        assert body["signature_name"] == "serving_default"
        specs = _input_specs(signatures[model])
        assert set(body["inputs"]) == set(specs)
        (name,) = specs
        assert specs[name].dtype == tf.string
        assert specs[name].shape.is_compatible_with([len(values)])
    _, body = serving_client.rest_request("image_tower", [png])
    (encoded,) = json.loads(body)["inputs"]["image_bytes"]
    assert base64.b64decode(encoded["b64"]) == png


def test_grpc_requests_fit_the_signatures(signatures, png):
    for model, values in (("text_tower", CAPTIONS), ("image_tower", [png])):
        request = serving_client.grpc_request(model, values)
        assert request.model_spec.name == model
        assert request.model_spec.signature_name == "serving_default"
        specs = _input_specs(signatures[model])
        assert set(request.inputs) == set(specs)
        for name, tensor in request.inputs.items():
            assert tf.dtypes.as_dtype(tensor.dtype) == specs[name].dtype
            shape = [d.size for d in tensor.tensor_shape.dim]
            assert specs[name].shape.is_compatible_with(shape)
            decoded = list(tf.make_ndarray(tensor))
            assert decoded == [
                v if isinstance(v, bytes) else v.encode() for v in values
            ]


def _answer(signatures, model, inputs):
    """What TF Serving computes for a predict call: the signature's output."""
    return signatures[model](
        **{name: tf.constant(values) for name, values in inputs.items()}
    )


@pytest.fixture(scope="module")
def rest_stand_in(signatures):
    """TF Serving's REST predict API on 127.0.0.1, answered by the exports."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802  (the http.server hook name)
            model = self.path.split("/v1/models/")[1].split(":")[0]
            body = json.loads(
                self.rfile.read(int(self.headers["Content-Length"]))
            )
            inputs = {
                name: [
                    base64.b64decode(v["b64"]) if isinstance(v, dict) else v
                    for v in values
                ]
                for name, values in body["inputs"].items()
            }
            outputs = _answer(signatures, model, inputs)
            data = json.dumps(
                {"outputs": outputs["embedding"].numpy().tolist()}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def grpc_stand_in(signatures):
    """TF Serving's gRPC PredictionService on 127.0.0.1, same answers."""

    class Service(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802
            inputs = {
                name: tf.make_ndarray(tensor)
                for name, tensor in request.inputs.items()
            }
            outputs = _answer(signatures, request.model_spec.name, inputs)
            response = predict_pb2.PredictResponse()
            response.outputs["embedding"].CopyFrom(
                tf.make_tensor_proto(outputs["embedding"].numpy())
            )
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        Service(), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_round_trip_returns_the_towers_embeddings(
    protocol, rest_stand_in, grpc_stand_in, signatures, png
):
    server = rest_stand_in if protocol == "rest" else grpc_stand_in
    for model, values in (
        ("text_tower", CAPTIONS),
        ("image_tower", [png, png]),
    ):
        got = serving_client.predict(server, model, values, protocol)
        name = serving_client.INPUTS[model]
        expected = signatures[model](**{name: tf.constant(values)})[
            "embedding"
        ].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.slow
def test_cli_prints_embeddings_from_a_server(rest_stand_in, png, tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(png)
    result = run_tool(
        "serving_client",
        f"--server={rest_stand_in}",
        "--text=a red circle",
        f"--image={image}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "text_tower 'a red circle': 8-d" in result.stdout
    assert "image_tower" in result.stdout


@pytest.mark.slow
def test_unreachable_server_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends
    result = run_tool(
        "serving_client", f"--server=127.0.0.1:{port}", "--text=a red circle"
    )
    assert result.returncode == 2
    assert "No TF Serving REST API" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_real_tf_serving(protocol, png):
    server = os.environ.get(f"VSE_TF_SERVING_{protocol.upper()}")
    if not server:
        pytest.skip(
            f"no TF Serving to call: set VSE_TF_SERVING_"
            f"{protocol.upper()}=host:port to a server started as "
            "export/README.md shows"
        )
    for model, values in (("text_tower", CAPTIONS), ("image_tower", [png])):
        embeddings = serving_client.predict(server, model, values, protocol)
        assert embeddings.shape[0] == len(values)
        np.testing.assert_allclose(
            np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5
        )


def test_models_config_serves_both_towers():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    with open(os.path.join(REPO, "export", "models.config")) as f:
        config = text_format.Parse(
            f.read(), model_server_config_pb2.ModelServerConfig()
        )
    models = {c.name: c for c in config.model_config_list.config}
    assert set(models) == set(serving_client.INPUTS)
    for name, model in models.items():
        assert model.base_path.endswith(f"/{name}")
        assert model.model_platform == "tensorflow"


def test_batching_config_sets_known_parameters():
    known = {
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
        "allowed_batch_sizes",
        "pad_variable_length_inputs",
    }
    with open(os.path.join(REPO, "export", "batching.config")) as f:
        lines = [line.split("#")[0].strip() for line in f]
    fields = [line for line in lines if line]
    assert fields
    for line in fields:
        name, value = line.split(" { value: ")
        assert name in known and value.rstrip(" }").isdigit(), line
