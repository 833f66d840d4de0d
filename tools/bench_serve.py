"""The search page under load, and its picture: `python -m vse_tf.serve`
started as a user starts it, then queried by concurrent clients.

    python -m tools.bench_serve --export_dir=runs/f8k/export \\
        --images=flickr8k:test --captions=flickr8k:test \\
        --data_dir=../shared/data --clients 1 8 --max_batch 1 32 \\
        --queries=400 --rounds=3 \\
        --json=docs/benchmarks/serve.json --screenshot=docs/search_page.jpg

For each --max_batch a server is started, and for each --clients a round
sends --queries requests of `GET /api/search?q=CAPTION&k=12` (the page's
k), the captions of --captions in order, from that many threads at once,
each request on a new connection as a browser's fetch on HTTP/1.0; a
request is an error unless it answers 200 with --k hits. Latency is
measured by the client, from connecting to the last byte. Before the
rounds each client sends one query that is not counted (the towers' first
calls trace their graphs). The figures are the median over --rounds of
each round's p50, p90, p99, max, errors and throughput. --screenshot opens
the page in headless Chromium (`tools.browser`), searches --shot_query
and clicks the first hit.
"""

import argparse
import concurrent.futures
import contextlib
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np

from tools import machine_info
from vse_tf import io_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def running_server(*flags, env=None):
    """(base URL, process) of `python -m vse_tf.serve --port=0 flags`,
    once it listens; stopped by its PID (SIGTERM) on leaving."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vse_tf.serve", "--port=0", *flags],
        cwd=REPO,
        env={**os.environ, "VSE_TF_QUIET_PROGRESS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # It prints its address once the index is built and it listens.
        for line in process.stdout:
            found = re.search(r" at (http://[\d.]+:\d+)/ ", line)
            if found:
                yield found.group(1), process
                return
        raise RuntimeError(f"the server did not start: {process.stderr.read()}")
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def one_query(base, query, k):
    """(seconds, whether it answered 200 with k hits)."""
    url = f"{base}/api/search?{urllib.parse.urlencode({'q': query, 'k': k})}"
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            hits = json.loads(response.read())["hits"]
            ok = response.status == 200 and len(hits) == k
    except (OSError, ValueError, KeyError):
        ok = False
    return time.perf_counter() - start, ok


def one_round(base, queries, clients, k):
    """The latency percentiles (ms), errors and throughput of `queries`
    sent by `clients` threads at once."""
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda q: one_query(base, q, k), queries))
    wall = time.perf_counter() - start
    latencies = np.array([seconds for seconds, _ in answers]) * 1000
    return {
        "p50_ms": float(np.percentile(latencies, 50)),
        "p90_ms": float(np.percentile(latencies, 90)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "max_ms": float(latencies.max()),
        "errors": sum(not ok for _, ok in answers),
        "queries_per_s": len(queries) / wall,
    }


def screenshot(base, query, path):
    """The page with `query`'s hits and the first one opened, as a PNG
    or JPEG."""
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from tools import browser

    with browser.chromium() as driver:
        wait = WebDriverWait(driver, 60)
        driver.get(base + "/")
        wait.until(
            lambda d: "photos from" in d.find_element(By.ID, "status").text
        )
        driver.find_element(By.ID, "q").send_keys(query, Keys.ENTER)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".hit"))
        wait.until(
            lambda d: all(
                image.get_property("naturalWidth") > 0
                for image in d.find_elements(By.CSS_SELECTOR, ".hit img")
            )
        )
        driver.find_elements(By.CSS_SELECTOR, ".hit")[0].click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#captions li"))
        picture = Image.open(io.BytesIO(driver.get_screenshot_as_png()))
    with io_utils.atomic_path(path) as tmp:
        # JPEG where the name says so: a fifth of the PNG's size.
        picture.convert("RGB").save(
            tmp, format="JPEG" if path.endswith(".jpg") else "PNG", quality=88
        )


def flag_parser():
    parsed = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parsed.add_argument("--export_dir", required=True)
    parsed.add_argument("--images", required=True)
    parsed.add_argument("--data_dir")
    parsed.add_argument("--index_dir")
    parsed.add_argument(
        "--captions",
        required=True,
        help="the queries, and the captions a clicked photo shows "
        "(a text file or DATASET:SPLIT)",
    )
    parsed.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parsed.add_argument(
        "--max_batch",
        type=int,
        nargs="+",
        default=[1, 32],
        help="the server's --max_batch settings, one server each",
    )
    parsed.add_argument("--queries", type=int, default=400)
    parsed.add_argument("--rounds", type=int, default=3)
    parsed.add_argument("--k", type=int, default=12)
    parsed.add_argument("--json", help="write the figures here")
    parsed.add_argument("--screenshot", help="write the page's PNG here")
    parsed.add_argument("--shot_query", default="two dogs play in the snow")
    return parsed


def measure(base, queries, clients, args):
    """The median over --rounds of each figure of `one_round`."""
    for query in queries[:clients]:
        one_query(base, query, args.k)  # traces, not counted
    rounds = [
        one_round(base, queries, clients, args.k) for _ in range(args.rounds)
    ]
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def main():
    args = flag_parser().parse_args()
    from vse_tf.cli import serve

    machine = machine_info.describe()
    print(machine)
    queries = serve.caption_set(args.captions, args.data_dir)[: args.queries]
    flags = [
        f"--{name}={getattr(args, name)}"
        for name in ("export_dir", "images", "data_dir", "index_dir")
        if getattr(args, name)
    ]
    rows = []
    for max_batch in args.max_batch:
        with running_server(
            *flags, f"--captions={args.captions}", f"--max_batch={max_batch}"
        ) as (base, _):
            for clients in args.clients:
                figures = measure(base, queries, clients, args)
                rows.append(
                    {"max_batch": max_batch, "clients": clients, **figures}
                )
                print(rows[-1], flush=True)
            if args.screenshot and max_batch == args.max_batch[-1]:
                screenshot(base, args.shot_query, args.screenshot)
                print(f"Wrote {args.screenshot}")
    print(
        f"\n{len(queries)} queries a round, k = {args.k}, median of "
        f"{args.rounds} rounds\n"
        "| --max_batch | clients | p50 ms | p90 ms | p99 ms | max ms "
        "| errors | queries/s |\n|---|---|---|---|---|---|---|---|"
    )
    for row in rows:
        print(
            f"| {row['max_batch']} | {row['clients']} | {row['p50_ms']:.1f} "
            f"| {row['p90_ms']:.1f} | {row['p99_ms']:.1f} | "
            f"{row['max_ms']:.1f} | {row['errors']:.0f} | "
            f"{row['queries_per_s']:.1f} |"
        )
    if args.json:
        settings = ("images", "queries", "rounds", "k")
        io_utils.write_json_atomic(
            args.json,
            {
                "machine": machine,
                "settings": {key: getattr(args, key) for key in settings},
                "results": rows,
            },
        )


if __name__ == "__main__":
    main()
