"""A search page over exported towers and an image collection.

    python -m vse_tf.serve --export_dir=runs/f8k/export \\
        --images=flickr8k:test --data_dir=../shared/data \\
        --captions=flickr8k:test [--port=8080]

Then open http://127.0.0.1:8080/: type what a photo shows, see the best
photos with their scores and file names, click one for its best captions
among --captions. The page's JSON API, `GET /api/search?q=TEXT&k=N`, gives
the hits `python -m vse_tf.search` prints for that query and index (see
`vse_tf.serving.web`). The collection, its index and the flags that name
them are `vse_tf.search`'s. The server binds 127.0.0.1 unless --host says
otherwise; Ctrl-C stops it.
"""

import os

from vse_tf import errors
from vse_tf.cli import common
from vse_tf.cli import search as search_cli
from vse_tf.serving import retrieval
from vse_tf.serving import web


def caption_set(spec, data_dir):
    """The candidate captions: a text file, one a line, or the captions of
    a split, DATASET:SPLIT."""
    if os.path.isfile(spec) or ":" not in spec:
        return search_cli.read_lines(spec, "caption file")
    from vse_tf.data import pipeline

    dataset, split = spec.rsplit(":", 1)
    captions = pipeline.load_captions(dataset, split, data_dir)
    return [caption.decode("utf-8") for caption in captions.as_numpy_iterator()]


def flag_parser():
    """The flags of `python -m vse_tf.serve`."""
    parsed = common.parser("serve", __doc__)
    search_cli.add_collection_flags(parsed)
    parsed.add_argument(
        "--captions",
        help="captions a clicked photo is captioned from: a text file, one "
        "a line, or DATASET:SPLIT",
    )
    parsed.add_argument(
        "--port", type=int, default=8080, help="0 picks a free port"
    )
    parsed.add_argument(
        "--max_batch",
        type=int,
        default=retrieval.MAX_BATCH,
        help="the most queries of requests arriving together searched as "
        f"one batch (default {retrieval.MAX_BATCH}; 1: each alone)",
    )
    parsed.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only)",
    )
    return parsed


def main(args):
    if not args.images:
        raise errors.UserError(
            "--images is required: a folder of JPEG/PNG files or a split "
            "such as flickr8k:test."
        )
    if not 0 <= args.port <= 65535:
        raise errors.UserError(f"--port={args.port} is not a port (0-65535).")
    if args.max_batch < 1:
        raise errors.UserError("--max_batch must be at least 1.")
    search_cli.check_collection_flags(args)
    # Read before the images are indexed (minutes for a large collection),
    # so that a wrong --captions is said at once.
    captions = (
        caption_set(args.captions, args.data_dir) if args.captions else None
    )
    search = search_cli.open_search(args)
    try:
        server = web.serve(
            web.SearchApp(search, captions, args.max_batch),
            args.host,
            args.port,
        )
    except OSError as error:
        raise errors.UserError(
            f"Cannot listen on {args.host}:{args.port} ({error.strerror}); "
            "pick another --port, or 0 for any free one."
        ) from error
    host, port = server.server_address[:2]
    print(
        f"Serving {len(search.collection)} images from "
        f"{search.collection.source}"
        + (f" with {len(captions)} captions" if captions else "")
        + f" at http://{host}:{port}/ (Ctrl-C stops)",
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()


def run():
    """The program: `python -m vse_tf.serve`."""
    common.run(main, flag_parser())


if __name__ == "__main__":
    run()
