"""A TF Serving client for the exported towers, in Python.

    from vse_tf.serving import client
    embeddings = client.predict("localhost:8501", "text_tower", ["a dog"])

Sends captions to the text tower or image bytes to the image tower (their
`serving_default` signatures, see `vse_tf.serving.saved_model`) and returns
the embeddings. REST speaks TF Serving's JSON API (image bytes
base64-encoded as {"b64": ...}) with the standard library alone; gRPC sends
a PredictRequest from tensorflow-serving-api (`pip install
'vse_tf[serving]'`). `python -m vse_tf.serving_client` is its command line.
"""

import base64
import json
import urllib.error
import urllib.request

import numpy as np

from vse_tf import errors

SIGNATURE = "serving_default"
OUTPUT = "embedding"
# Model name in export/models.config -> the input its signature takes.
INPUTS = {"text_tower": "text", "image_tower": "image_bytes"}


def rest_request(model, values):
    """(URL path, JSON body) of a predict call in TF Serving's REST API.

    `values` are str captions for the text tower, bytes for the image tower.
    Columnar ("inputs") format; bytes travel as {"b64": ...} objects, which
    TF Serving decodes back to a DT_STRING tensor.
    """
    name = INPUTS[model]
    encoded = [
        {"b64": base64.b64encode(v).decode("ascii")}
        if isinstance(v, bytes)
        else v
        for v in values
    ]
    body = {"signature_name": SIGNATURE, "inputs": {name: encoded}}
    return f"/v1/models/{model}:predict", json.dumps(body)


def rest_embeddings(response_text):
    """Embeddings [N, D] from a REST predict response."""
    outputs = json.loads(response_text)["outputs"]
    # A signature with one output comes back without its name.
    if isinstance(outputs, dict):
        outputs = outputs[OUTPUT]
    return np.asarray(outputs, np.float32)


def grpc_request(model, values):
    """A tensorflow_serving.apis PredictRequest for `values`."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = SIGNATURE
    strings = [v if isinstance(v, bytes) else v.encode("utf-8") for v in values]
    request.inputs[INPUTS[model]].CopyFrom(
        tf.make_tensor_proto(strings, dtype=tf.string, shape=[len(strings)])
    )
    return request


def grpc_embeddings(response):
    import tensorflow as tf

    return tf.make_ndarray(response.outputs[OUTPUT]).astype(np.float32)


def predict(server, model, values, protocol="rest", timeout=30.0):
    """Embeddings [N, D] of `values` from the server at host:port."""
    if protocol == "rest":
        path, body = rest_request(model, values)
        request = urllib.request.Request(
            f"http://{server}{path}",
            data=body.encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return rest_embeddings(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")
            raise errors.UserError(
                f"{server} answered {error.code}: {detail}"
            ) from error
        except urllib.error.URLError as error:
            raise errors.UserError(
                f"No TF Serving REST API at {server} ({error.reason}). Start "
                "one as export/README.md shows (REST is port 8501 there)."
            ) from error
    try:
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc
    except ImportError as error:
        raise errors.UserError(
            "gRPC needs tensorflow-serving-api: pip install 'vse_tf[serving]'."
        ) from error
    with grpc.insecure_channel(server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            return grpc_embeddings(
                stub.Predict(grpc_request(model, values), timeout=timeout)
            )
        except grpc.RpcError as error:
            raise errors.UserError(
                f"gRPC call to {server} failed: {error.code().name} "
                f"{error.details()}. Is TF Serving listening there (gRPC is "
                "port 8500 in export/README.md)?"
            ) from error
