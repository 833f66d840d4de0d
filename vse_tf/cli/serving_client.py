"""A small TF Serving client for the exported towers.

    python -m vse_tf.serving_client --server=localhost:8501 \\
        --text "a red circle"
    python -m vse_tf.serving_client --server=localhost:8500 --protocol=grpc \\
        --image photo.jpg

Sends captions to the text tower or image files to the image tower and
prints the embeddings; `vse_tf.serving.client` does the calls (REST with
the standard library, gRPC with `pip install 'vse_tf[serving]'`).
"""

import numpy as np

from vse_tf import errors
from vse_tf.cli import common
from vse_tf.serving import client


def flag_parser():
    """The flags of `python -m vse_tf.serving_client`."""
    parser = common.parser("serving_client", __doc__)
    parser.add_argument(
        "--server",
        default="localhost:8501",
        help="host:port of TF Serving (REST 8501, gRPC 8500 "
        "in export/README.md)",
    )
    parser.add_argument("--protocol", choices=("rest", "grpc"), default="rest")
    parser.add_argument(
        "--text",
        action="append",
        default=[],
        help="a caption for the text tower (repeatable)",
    )
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        help="a JPEG/PNG file for the image tower (repeatable)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds a call may take"
    )
    return parser


def main(args):
    if not args.text and not args.image:
        raise errors.UserError("Nothing to send: give --text and/or --image.")
    images = []
    for path in args.image:
        try:
            with open(path, "rb") as f:
                images.append(f.read())
        except OSError as error:
            raise errors.UserError(
                f"Cannot read the image {path!r} ({error.strerror})."
            ) from error
    for model, values, labels in (
        ("text_tower", args.text, args.text),
        ("image_tower", images, args.image),
    ):
        if values:
            embeddings = client.predict(
                args.server, model, values, args.protocol, args.timeout
            )
            for label, embedding in zip(labels, embeddings):
                shown = np.array2string(embedding[:6], precision=4)
                print(
                    f"{model} {label!r}: {len(embedding)}-d {shown[:-1]} ...]"
                )


def run():
    """The program: `python -m vse_tf.serving_client`."""
    common.run(main, flag_parser())


if __name__ == "__main__":
    run()
