"""`python -m vse_tf.serve`: a real server process on 127.0.0.1, its JSON
against `python -m vse_tf.search`'s printed hits, bad requests, and the
page in a real headless Chromium."""

import concurrent.futures
import http.client
import json
import os
import re
import signal
import socket
import threading
import time
import urllib.parse

import numpy as np
import pytest

from tests.conftest import REPO
from tests.conftest import run_tool
from tools import bench_serve
from tools import browser
from vse_tf.serving import retrieval
from vse_tf.serving import web

QUERIES = ["a red circle", "two objects, one of them blue"]


def _get(url, raw_target=None):
    """(status, body bytes, content type); `raw_target` is sent as it is,
    not normalized as a browser or urllib would."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port)
    target = raw_target or parts.path + (
        "?" + parts.query if parts.query else ""
    )
    connection.putrequest("GET", target, skip_accept_encoding=True)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body, response.getheader("Content-Type")


def _api(base, path, **params):
    status, body, _ = _get(f"{base}{path}?{urllib.parse.urlencode(params)}")
    return status, json.loads(body)


def _printed_hits(stdout):
    """(name, score) of each hit `python -m vse_tf.search` prints."""
    return [
        (name, float(score))
        for score, name in re.findall(
            r"^\s+\d+\.\s+(-?[\d.]+)\s+(.+)$", stdout, re.M
        )
    ]


@pytest.fixture(scope="module")
def collection(trained_run, photo_folder, tmp_path_factory):
    """The flags of the tiny run's export over eight photos, with a
    caption file."""
    model_dir, _ = trained_run
    folder, captions = photo_folder
    work = tmp_path_factory.mktemp("serve")
    caption_file = work / "captions.txt"
    caption_file.write_text(
        "\n".join(captions + ["a yellow star", "three green squares"]) + "\n"
    )
    return (
        folder,
        caption_file,
        [
            f"--export_dir={os.path.join(model_dir, 'export')}",
            f"--images={folder}",
            f"--index_dir={work / 'index'}",
        ],
    )


@pytest.fixture(scope="module")
def server(collection):
    _, caption_file, flags = collection
    with bench_serve.running_server(*flags, f"--captions={caption_file}") as (
        base,
        process,
    ):
        yield base, process


@pytest.mark.slow
def test_the_api_gives_the_hits_the_cli_prints(collection, server):
    folder, caption_file, flags = collection
    base, _ = server
    for query in QUERIES:
        status, answer = _api(base, "/api/search", q=query, k=3)
        assert status == 200
        printed = run_tool("search", *flags, f"--query={query}", "--k=3")
        assert printed.returncode == 0, printed.stderr[-3000:]
        hits = answer["hits"]
        assert [(h["name"], round(h["score"], 3)) for h in hits] == (
            _printed_hits(printed.stdout)
        )
        for hit in hits:
            status, image, content_type = _get(base + hit["image_url"])
            assert status == 200 and content_type == "image/png"
            assert image == (folder / hit["name"]).read_bytes()
    status, answer = _api(base, "/api/captions", image="photo0.png", k=4)
    printed = run_tool(
        "search",
        *flags[:1],
        f"--captions={caption_file}",
        f"--caption-for={folder / 'photo0.png'}",
        "--k=4",
    )
    assert status == 200
    assert [(c["text"], round(c["score"], 3)) for c in answer["captions"]] == (
        _printed_hits(printed.stdout)
    )


BAD_SEARCHES = [
    ({"q": ""}, 400, "empty"),
    ({"q": "   ", "k": 3}, 400, "empty"),
    ({"q": "x" * 10_240}, 400, "10,240 characters"),
    ({"q": "dog", "k": 0}, 400, "from 1 to 8"),
    ({"q": "dog", "k": 9}, 400, "from 1 to 8"),
    ({"q": "dog", "k": -2}, 400, "from 1 to 8"),
    ({"q": "dog", "k": "three"}, 400, "from 1 to 8"),
    ({"q": "dog", "k": "²"}, 400, "from 1 to 8"),  # a digit, not ASCII
    ({"q": "dog", "k": "1e1"}, 400, "from 1 to 8"),
]


@pytest.mark.slow
def test_bad_requests_get_a_clear_400_and_paths_stay_in_the_collection(
    server,
):
    base, _ = server
    for params, status, message in BAD_SEARCHES:
        got, answer = _api(base, "/api/search", **params)
        assert (got, message in answer["error"]) == (status, True), params
    status, body, _ = _get(base, raw_target="/api/search?q=%ff%fe")
    assert status == 400 and b"not UTF-8" in body
    # A raw byte 0xFF in the request line, which http.client won't send.
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(b"GET /api/search?q=\xff\xfe HTTP/1.0\r\n\r\n")
        answer = b"".join(iter(lambda: raw.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.0 400") and b"not UTF-8" in answer
    outside = [
        "/images/../conftest.py",
        "/images/%2e%2e/%2e%2e/README.md",
        "/images//etc/passwd",
        "/images/photo0.png/..",
        f"/images/{urllib.parse.quote(os.path.join(REPO, 'README.md'))}",
        "/../README.md",
    ]
    for target in outside:
        status, body, _ = _get(base, raw_target=target)
        assert status == 404, target
        assert json.loads(body)["error"].startswith(("No page", "'")), body
    assert _api(base, "/api/search", q="dog", k=8)[0] == 200  # still up
    assert len(_api(base, "/api/search", q="dog", k=8)[1]["hits"]) == 8


@pytest.mark.slow
def test_requests_at_once_get_the_answers_they_get_alone(collection):
    # In this process, the real towers slowed down so that requests pile
    # up and are searched in batches.
    _, _, flags = collection
    export_dir, images, index_dir = (f.split("=", 1)[1] for f in flags)
    search = retrieval.ImageSearch(export_dir, images, index_dir=index_dir)
    app = web.SearchApp(search)
    queries = [
        (f"a {colour} {shape}", 3 + len(colour + shape) % 6)
        for colour in ("red", "green", "blue", "yellow")
        for shape in ("circle", "square", "triangle", "star")
    ]

    def ask(query_and_k):
        query, k = query_and_k
        status, _, body = app(
            f"/api/search?{urllib.parse.urlencode({'q': query, 'k': k})}"
        )
        assert status == 200
        return json.loads(body)["hits"]

    alone = [ask(qk) for qk in queries]
    assert len({tuple(h["name"] for h in hits[:3]) for hits in alone}) > 4
    plain, sizes = search.search, []

    def slowly(queries, k):
        sizes.append(len(queries))
        time.sleep(0.05)
        return plain(queries, k)

    search.search = slowly
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(ask, queries))
    assert max(sizes) > 1, sizes
    for one, many in zip(alone, together):
        assert [h["name"] for h in many] == [h["name"] for h in one]
        np.testing.assert_allclose(
            [h["score"] for h in many], [h["score"] for h in one], atol=1e-5
        )


@pytest.mark.slow
def test_the_page_in_headless_chromium(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    base, _ = server
    query = QUERIES[1]
    with browser.chromium() as driver:
        wait = WebDriverWait(driver, 60)
        driver.get(base + "/")
        status = driver.find_element(By.ID, "status")
        wait.until(lambda _: "8 photos from" in status.text)
        driver.find_element(By.ID, "q").send_keys(query, Keys.ENTER)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".hit"))
        hits = driver.find_elements(By.CSS_SELECTOR, ".hit")
        expected = _api(base, "/api/search", q=query, k=8)[1]["hits"]
        assert [h.get_attribute("data-name") for h in hits] == [
            h["name"] for h in expected
        ]
        assert f"{expected[0]['score']:.3f}" in hits[0].text
        wait.until(
            lambda d: all(
                image.get_property("naturalWidth") > 0
                for image in d.find_elements(By.CSS_SELECTOR, ".hit img")
            )
        )
        hits[1].click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#captions li"))
        shown = driver.find_elements(By.CSS_SELECTOR, "#captions li")
        captions = _api(base, "/api/captions", image=expected[1]["name"], k=5)[
            1
        ]["captions"]
        assert [li.text for li in shown] == [
            f"{c['score']:.3f} {c['text']}" for c in captions
        ]
        assert (
            driver.find_element(By.CSS_SELECTOR, "#photo h3").text
            == (expected[1]["name"])
        )
        assert "?q=" in driver.current_url
        driver.save_screenshot(str(tmp_path / "page.png"))
        # An empty query is answered on the page, not sent.
        box = driver.find_element(By.ID, "q")
        box.clear()
        box.send_keys(" ", Keys.ENTER)
        wait.until(lambda _: status.get_attribute("class") == "error")
    assert (tmp_path / "page.png").stat().st_size > 10_000


@pytest.mark.slow
def test_bad_flags_and_a_taken_port_are_clean_errors(collection):
    _, _, flags = collection
    no_images = run_tool("serve", flags[0], "--port=0")
    assert no_images.returncode == 2 and "--images" in no_images.stderr
    bad_port = run_tool("serve", *flags, "--port=70000")
    assert bad_port.returncode == 2 and "--port" in bad_port.stderr
    no_captions = run_tool("serve", *flags, "--captions=no_such_file.txt")
    assert no_captions.returncode == 2
    assert "no_such_file.txt" in no_captions.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_tool("serve", *flags, f"--port={port}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Cannot listen" in result.stderr and "Traceback" not in (
        result.stderr
    )


@pytest.mark.slow
def test_sigterm_stops_the_server(collection):
    _, _, flags = collection
    with bench_serve.running_server(*flags) as (base, process):
        assert _api(base, "/api/info")[1]["images"] == 8
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=60) == 143
        assert "Stopped by SIGTERM" in process.stderr.read()


class _SlowSearch:
    """Query "q" ranks image i at (i - q) mod 20; each search takes 20 ms,
    so that callers pile up behind it."""

    def __init__(self):
        self.batches = []

    def search(self, queries, k):
        self.batches.append(len(queries))
        if "fail" in queries:
            raise ValueError("a tower failed")
        time.sleep(0.02)
        rows = np.array([np.roll(np.arange(20), -int(q)) for q in queries])
        return rows[:, :k], -rows[:, :k].astype(np.float32)


def test_concurrent_queries_are_searched_together_each_its_own():
    search = _SlowSearch()
    batched = retrieval.BatchingSearch(search, max_batch=8)
    start = threading.Barrier(24)

    def ask(number):
        start.wait()
        return batched(str(number), k=1 + number % 5)

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(ask, range(24)))
    for number, (indices, scores) in enumerate(answers):
        expected = np.roll(np.arange(20), -number)[: 1 + number % 5]
        np.testing.assert_array_equal(indices, expected)
        np.testing.assert_array_equal(scores, -expected)
    assert sum(search.batches) == 24 and max(search.batches) > 1
    assert max(search.batches) <= 8
    # A failed batch is each caller's error, and the worker goes on.
    with pytest.raises(ValueError, match="a tower failed"):
        batched("fail", k=1)
    np.testing.assert_array_equal(batched("3", k=2)[0], [3, 4])
