"""The search page and its JSON API over an `ImageSearch`, on the standard
library's threading HTTP server (`python -m vse_tf.serve`).

    GET /                          the page (search_page.html)
    GET /api/search?q=TEXT&k=N     {"hits": [{"name", "score", "image_url"}]}
    GET /api/captions?image=NAME&k=N
                                   {"captions": [{"text", "score"}]}
    GET /api/info                  {"source", "images", "captions", "max_k"}
    GET /images/NAME               the photo's bytes as stored

Hits are `ImageSearch.search`'s, the same as `python -m vse_tf.search`
prints; the queries of requests that arrive together are searched as one
batch (`retrieval.BatchingSearch`). A photo is served only by a name of
the collection, looked up in its list of names, so no path reaches a file
outside it. A bad request (an empty or over-long query, a k out of range,
a URL that is not UTF-8) is a 400 with {"error": message}.
"""

import http.server
import importlib.resources
import json
import traceback
import urllib.parse

from vse_tf.serving import retrieval

MAX_QUERY_CHARS = 1000
MAX_K = 100
DEFAULT_K = 12
IMAGE_TYPES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg"}


class HttpError(Exception):
    """A request answered with `status` and {"error": message}."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _page():
    return (
        importlib.resources.files("vse_tf.serving")
        .joinpath("search_page.html")
        .read_bytes()
    )


def _error(status, message):
    body = json.dumps({"error": message}, ensure_ascii=False)
    return status, "application/json", body.encode("utf-8")


def _image_type(image_bytes):
    for signature, content_type in IMAGE_TYPES.items():
        if image_bytes.startswith(signature):
            return content_type
    return "application/octet-stream"


def _utf8(raw_target):
    # http.server reads the request line as Latin-1; its bytes are UTF-8
    # or the request is refused.
    try:
        target = raw_target.encode("latin-1").decode("utf-8")
        path, _, query = target.partition("?")
        return (
            urllib.parse.unquote(path, errors="strict"),
            urllib.parse.parse_qs(query, encoding="utf-8", errors="strict"),
        )
    except UnicodeError:
        raise HttpError(400, "The URL is not UTF-8.") from None


class SearchApp:
    """Answers a request target with (status, content type, body).

    Args:
      search: the `retrieval.ImageSearch` queries run against.
      captions: candidate captions shown for a photo, or None.
      max_batch: the most queries of concurrent requests searched as one
        batch (1: each alone).
    """

    def __init__(self, search, captions=None, max_batch=retrieval.MAX_BATCH):
        self.search = search
        self.batched = retrieval.BatchingSearch(search, max_batch)
        names = search.collection.names
        self.rows = {name: row for row, name in enumerate(names)}
        self.max_k = min(MAX_K, len(names))
        self.captions = captions or []
        self.caption_embeddings = (
            retrieval.embed_texts(search.serve_text, self.captions)
            if self.captions
            else None
        )
        self.page = _page()

    def __call__(self, raw_target):
        try:
            path, params = _utf8(raw_target)
            if path == "/":
                return 200, "text/html; charset=utf-8", self.page
            if path.startswith("/images/"):
                return self._image(path[len("/images/") :])
            api = {
                "/api/search": self._search,
                "/api/captions": self._captions,
                "/api/info": self._info,
            }
            if path not in api:
                raise HttpError(404, f"No page {path!r}.")
            body = json.dumps(api[path](params), ensure_ascii=False)
            return 200, "application/json", body.encode("utf-8")
        except HttpError as error:
            return _error(error.status, str(error))
        except Exception as error:  # a bug: the server log has the trace
            traceback.print_exc()
            return _error(500, f"Internal error ({type(error).__name__}).")

    def _k(self, params, most):
        text = params.get("k", [str(min(DEFAULT_K, most))])[0]
        if (
            not (text.isascii() and text.isdigit())
            or not 1 <= int(text) <= most
        ):
            raise HttpError(400, f"k must be a whole number from 1 to {most}.")
        return int(text)

    def _row(self, name):
        if name not in self.rows:
            raise HttpError(404, f"{name!r} is not a photo of the collection.")
        return self.rows[name]

    def _search(self, params):
        query = params.get("q", [""])[0].strip()
        if not query:
            raise HttpError(400, "The query q is empty.")
        if len(query) > MAX_QUERY_CHARS:
            raise HttpError(
                400,
                f"The query q has {len(query):,} characters; at most "
                f"{MAX_QUERY_CHARS:,} are read.",
            )
        indices, scores = self.batched(query, self._k(params, self.max_k))
        names = self.search.collection.names
        return {
            "hits": [
                {
                    "name": names[index],
                    "score": float(score),
                    "image_url": "/images/" + urllib.parse.quote(names[index]),
                }
                for index, score in zip(indices, scores)
            ]
        }

    def _captions(self, params):
        row = self._row(params.get("image", [""])[0])
        if not self.captions:
            return {"captions": []}
        k = self._k(params, min(MAX_K, len(self.captions)))
        indices, scores = self.search.rank_captions(
            [row], self.caption_embeddings, k
        )
        return {
            "captions": [
                {"text": self.captions[index], "score": float(score)}
                for index, score in zip(indices[0], scores[0])
            ]
        }

    def _info(self, params):
        del params
        return {
            "source": self.search.collection.source,
            "images": len(self.search.collection),
            "captions": len(self.captions),
            "max_k": self.max_k,
        }

    def _image(self, name):
        image = self.search.collection.read(self._row(name))
        return 200, _image_type(image), image


def handler(app):
    """A request handler class answering GET requests with `app`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "vse_tf"

        def do_GET(self):
            status, content_type, body = app(self.path)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if status == 200 and content_type.startswith("image/"):
                self.send_header("Cache-Control", "max-age=3600")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            del format, args  # the page's requests are not news

    return Handler


def serve(app, host, port):
    """A threading HTTP server for `app` on host:port (port 0: any free
    one), not yet serving: call serve_forever()."""
    return http.server.ThreadingHTTPServer((host, port), handler(app))
