"""Warm-up requests TF Serving replays before a version takes traffic.

TF Serving reads `<version>/assets.extra/tf_serving_warmup_requests`, a
TFRecord file of `tensorflow.serving.PredictionLog` protos, and runs each
request through the freshly loaded model, so that the first real request
does not pay for loading kernels and initializing lookup tables. Each
version carries, per signature, one request of one row and one of eight.

The protos are written here by hand (five length-delimited fields around
a `TensorProto`), so exporting needs no tensorflow-serving-api;
tests/test_export.py reads them back with its protos and replays them.
"""

import os

import numpy as np
import tensorflow as tf

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
BATCH_SIZES = (1, 8)
CAPTION = "a dog runs across the grass"


def _varint(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number, payload):
    """A length-delimited field (wire type 2): a string or a message."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def prediction_log(model_name, signature_name, inputs):
    """A serialized PredictionLog holding one PredictRequest.

    `inputs`: {input name: array}. Field numbers are those of
    tensorflow_serving/apis/{prediction_log,predict,model}.proto.
    """
    model_spec = _field(1, model_name) + _field(3, signature_name)
    request = _field(1, model_spec) + b"".join(
        _field(
            2,  # map<string, TensorProto> inputs: {key = 1, value = 2}
            _field(1, name)
            + _field(2, tf.make_tensor_proto(value).SerializeToString()),
        )
        for name, value in inputs.items()
    )
    predict_log = _field(1, request)
    return _field(6, predict_log)


def _jpeg(size=64):
    """A grey JPEG: any photo decodes, resizes and crops the same way."""
    pixels = tf.fill([size, size, 3], tf.constant(128, tf.uint8))
    return tf.io.encode_jpeg(pixels).numpy()


def example_inputs(input_spec, rows):
    """{name: `rows` rows} for a signature input described by `input_spec`
    (a tf.TensorSpec): captions, JPEG bytes or zeros."""
    if input_spec.dtype == tf.string:
        value = _jpeg() if input_spec.name == "image_bytes" else CAPTION
        return np.array([value] * rows, dtype=object)
    shape = [rows] + [1 if d is None else d for d in input_spec.shape[1:]]
    return np.zeros(shape, input_spec.dtype.as_numpy_dtype)


def write_warmup_requests(version_dir, model_name, input_specs):
    """Writes the warm-up file of a version being staged.

    `input_specs`: {signature name: its one tf.TensorSpec}.
    """
    os.makedirs(os.path.join(version_dir, "assets.extra"), exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(version_dir, WARMUP_FILE)) as f:
        for signature_name, spec in input_specs.items():
            for rows in BATCH_SIZES:
                f.write(
                    prediction_log(
                        model_name,
                        signature_name,
                        {spec.name: example_inputs(spec, rows)},
                    )
                )
