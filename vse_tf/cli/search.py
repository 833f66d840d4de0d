"""Text-to-image search (and back) with exported towers.

    python -m vse_tf.search --export_dir=EXPORT --images=FOLDER_OR_SPLIT \\
        --query "a red circle left of a blue square" [--k=5] [--html=out.html]
    python -m vse_tf.search --export_dir=EXPORT --captions=captions.txt \\
        --caption-for=photo.jpg

Loads the newest version of each tower from EXPORT with TensorFlow alone,
as a deployment would. Images are embedded once and cached in a
memory-mapped file (see `vse_tf.serving.image_index`); every query is
scored against all of them, exactly, a chunk of the file at a time (the
cosine, less the hubness of both sides where the towers serve one: see
`vse_tf.evaluation.hubness`), or with --index=approximate against the
rows of a faiss inverted file's nearest lists. --html writes a page of the
top-k thumbnails per query.
"""

import base64
import html
import io
import os

import tensorflow as tf

from vse_tf import errors
from vse_tf import io_utils
from vse_tf.cli import common
from vse_tf.serving import nearest
from vse_tf.serving import retrieval

THUMBNAIL = 160


def read_lines(path, what):
    if not os.path.isfile(path):
        raise errors.UserError(
            f"The {what} {path!r} does not exist; expected "
            "a text file with one entry a line."
        )
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    if not lines:
        raise errors.UserError(f"The {what} {path!r} has no non-empty lines.")
    return lines


def _thumbnail_uri(image_bytes):
    """A small JPEG of the image as a data: URI, so the page is one file."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    scale = THUMBNAIL / max(image.shape[0], image.shape[1])
    if scale < 1:
        size = [
            max(1, round(image.shape[0] * scale)),
            max(1, round(image.shape[1] * scale)),
        ]
        image = tf.cast(
            tf.round(tf.image.resize(image, size, antialias=True)), tf.uint8
        )
    jpeg = tf.io.encode_jpeg(image, quality=90).numpy()
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def write_html(path, queries, collection, indices, scores):
    parts = [
        "<!doctype html><meta charset='utf-8'><title>vse_tf search"
        "</title><style>body{font-family:sans-serif}figure{display:"
        "inline-block;margin:4px;text-align:center}img{height:"
        f"{THUMBNAIL}px;image-rendering:pixelated}}figcaption"
        "{font-size:12px}</style>",
        f"<p>{len(collection)} images from "
        f"{html.escape(collection.source)}"
        "</p>",
    ]
    for query, hits, hit_scores in zip(queries, indices, scores):
        parts.append(f"<h3>{html.escape(query)}</h3><div>")
        for rank, (index, score) in enumerate(zip(hits, hit_scores), 1):
            name = html.escape(collection.names[index])
            parts.append(
                f"<figure><img src='{_thumbnail_uri(collection.read(index))}'"
                f" alt='{name}'><figcaption>{rank}. {score:.3f}<br>{name}"
                "</figcaption></figure>"
            )
        parts.append("</div>")
    io_utils.write_text_atomic(path, "\n".join(parts) + "\n")


def write_contact_sheet(path, queries, collection, indices, scores):
    """The hits as one PNG: under each query a row of pictures, each
    scaled to fit THUMBNAIL pixels as the HTML page shows it (small ones
    enlarged, pixel for pixel), with its rank and score below it."""
    from PIL import Image
    from PIL import ImageDraw

    k = indices.shape[1]
    label, caption, pad = 22, 16, 6
    row = label + THUMBNAIL + caption + pad
    sheet = Image.new(
        "RGB", (pad + k * (THUMBNAIL + pad), pad + row * len(queries)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for q, (query, hits, hit_scores) in enumerate(
        zip(queries, indices, scores)
    ):
        top = pad + q * row
        draw.text((pad, top + 4), f'"{query}"', fill="black")
        for rank, (index, score) in enumerate(zip(hits, hit_scores)):
            image = Image.open(io.BytesIO(collection.read(index))).convert(
                "RGB"
            )
            scale = THUMBNAIL / max(image.size)
            image = image.resize(
                [max(1, round(side * scale)) for side in image.size],
                Image.NEAREST if scale > 1 else Image.LANCZOS,
            )
            left = pad + rank * (THUMBNAIL + pad)
            sheet.paste(image, (left, top + label))
            draw.text(
                (left, top + label + THUMBNAIL + 2),
                f"{rank + 1}. {score:.2f}",
                fill="black",
            )
    with io_utils.atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


def search_images(args):
    if not args.images:
        raise errors.UserError(
            "--images is required for a text query: a folder "
            "of JPEG/PNG files or a split such as "
            "shapes:test."
        )
    queries = list(args.query)
    if args.query_file:
        queries += read_lines(args.query_file, "query file")
    if not queries:
        raise errors.UserError(
            "Give at least one --query (or --query_file), or "
            "--caption-for IMAGE with --captions FILE."
        )
    search = open_search(args)
    collection = search.collection
    print(
        f"{len(collection)} images from {collection.source} "
        f"({'cached index' if search.cached else 'indexed'}: "
        f"{search.index_dir})"
    )
    indices, scores = search.search(queries, args.k)
    for query, hits, hit_scores in zip(queries, indices, scores):
        print(f"\n{query}")
        for rank, (index, score) in enumerate(zip(hits, hit_scores), 1):
            print(f"  {rank:>2}. {score:6.3f}  {collection.names[index]}")
    if args.html:
        write_html(args.html, queries, collection, indices, scores)
        print(f"\nWrote {args.html}")
    if args.png:
        write_contact_sheet(args.png, queries, collection, indices, scores)
        print(f"Wrote {args.png}")


def caption_image(args):
    if not args.captions:
        raise errors.UserError(
            "--caption-for needs --captions FILE, the "
            "candidate captions, one a line."
        )
    captions = read_lines(args.captions, "caption file")
    if not os.path.isfile(args.caption_for):
        raise errors.UserError(
            f"The image {args.caption_for!r} does not exist."
        )
    with open(args.caption_for, "rb") as f:
        image_bytes = f.read()
    _, serve_bytes, serve_text = retrieval.load_towers(args.export_dir)
    image = retrieval.embed_image(serve_bytes, image_bytes, args.caption_for)
    indices, scores = nearest.top_k(
        image, retrieval.embed_texts(serve_text, captions), args.k
    )
    print(f"{args.caption_for} ({len(captions)} candidate captions)")
    for rank, (index, score) in enumerate(zip(indices[0], scores[0]), 1):
        print(f"  {rank:>2}. {score:6.3f}  {captions[index]}")


def flag_parser():
    """The flags of `python -m vse_tf.search`."""
    parsed = common.parser("search", __doc__)
    add_collection_flags(parsed)
    parsed.add_argument(
        "--query",
        action="append",
        default=[],
        help="a caption to search for (repeatable)",
    )
    parsed.add_argument("--query_file", help="more queries, one a line")
    parsed.add_argument("--k", type=int, default=5, help="hits per query")
    parsed.add_argument("--html", help="write the hits as an HTML page here")
    parsed.add_argument("--png", help="write the hits as one PNG image here")
    parsed.add_argument(
        "--caption-for",
        "--caption_for",
        dest="caption_for",
        metavar="IMAGE",
        help="rank --captions for this image instead",
    )
    parsed.add_argument("--captions", help="candidate captions, one a line")
    return parsed


def add_collection_flags(parsed):
    """The towers, the collection and its index: the flags `search` and
    `serve` share."""
    parsed.add_argument(
        "--export_dir",
        required=True,
        help="folder holding image_tower/ and text_tower/",
    )
    parsed.add_argument(
        "--images",
        help="folder of JPEG/PNG images, or DATASET:SPLIT such as "
        "flickr8k:test",
    )
    parsed.add_argument("--data_dir", help="the datasets' root, for a split")
    parsed.add_argument(
        "--on_bad_image",
        choices=("skip", "error"),
        default="skip",
        help="an image that cannot be "
        "decoded is skipped, counted and named (default), "
        "or stops the search naming it",
    )
    parsed.add_argument(
        "--index_dir",
        help="where the image embeddings are "
        "cached (default EXPORT/search_index/...)",
    )
    parsed.add_argument(
        "--index",
        choices=("exact", "approximate"),
        default="exact",
        help="exact: every image scored, "
        "read from a memory-mapped file a chunk at a time "
        "(default); approximate: a faiss inverted file, "
        "for collections past a million (pip install "
        "faiss-cpu)",
    )
    parsed.add_argument(
        "--nprobe",
        type=int,
        default=nearest.NPROBE,
        help="lists an approximate query scans (more: higher recall, slower)",
    )


def open_search(args):
    """The `retrieval.ImageSearch` the collection flags name."""
    return retrieval.ImageSearch(
        args.export_dir,
        args.images,
        args.data_dir,
        args.index_dir,
        args.index,
        args.nprobe,
        args.on_bad_image,
    )


def check_collection_flags(args):
    """The shared flags' errors, before anything loads."""
    if args.nprobe < 1:
        raise errors.UserError("--nprobe must be at least 1.")
    if not os.path.isdir(args.export_dir):
        raise errors.UserError(
            f"No export dir {args.export_dir!r}: export a "
            "run first (`python -m vse_tf.export`)."
        )


def main(args):
    if args.k < 1:
        raise errors.UserError("--k must be at least 1.")
    check_collection_flags(args)
    if args.caption_for:
        caption_image(args)
    else:
        search_images(args)


def run():
    """The program: `python -m vse_tf.search`."""
    common.run(main, flag_parser())


if __name__ == "__main__":
    run()
