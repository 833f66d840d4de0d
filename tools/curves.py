"""What the cost-curve benchmarks share: the process's memory as it runs,
and a log-log plot written atomically."""

import sys
import threading
import time

from vse_tf import io_utils


def _rss_kib():
    """{'RssAnon': KiB, 'RssFile': KiB} of this process, from /proc."""
    with open("/proc/self/status") as f:
        return {
            line.split(":")[0]: int(line.split()[1])
            for line in f
            if line.startswith(("RssAnon", "RssFile"))
        }


class PeakMemory:
    """The peak resident memory of this process while the block runs,
    sampled every 5 ms: `anon_mib` (its own allocations, what it needs)
    and `file_mib` (pages of mapped files, which the kernel can drop and
    read again), each above what was resident at the start."""

    def __enter__(self):
        self._start = _rss_kib()
        self._peak = dict(self._start)
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while self._running:
            for key, value in _rss_kib().items():
                self._peak[key] = max(self._peak[key], value)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()
        self.anon_mib = (self._peak["RssAnon"] - self._start["RssAnon"]) / 1024
        self.file_mib = (self._peak["RssFile"] - self._start["RssFile"]) / 1024


def slope(xs, ys):
    """The exponent p of y ~ x^p fitted on log-log axes: 1 is linear
    growth, 2 quadratic, 0 a constant cost."""
    import numpy as np

    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def pyplot():
    """matplotlib's pyplot, drawing into files; a clear exit without
    matplotlib (the dev extra)."""
    try:
        import matplotlib
    except ImportError:
        sys.exit("error: the plot needs matplotlib: pip install -e '.[dev]'")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure, path):
    """Writes `figure` to `path` as a PNG, atomically, and closes it."""
    figure.tight_layout()
    with io_utils.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    pyplot().close(figure)


def plot(path, title, x_label, y_label, series, machine):
    """A log-log PNG of `series` ({label: (xs, ys)}), each label with its
    fitted exponent, the machine below the title. Needs matplotlib (the
    dev extra)."""
    figure, axes = pyplot().subplots(figsize=(6.4, 4.4), dpi=110)
    for label, (xs, ys) in series.items():
        fitted = f" (x^{slope(xs, ys):.2f})" if len(xs) > 1 else ""
        axes.loglog(xs, ys, marker="o", label=label + fitted)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(f"{title}\n{machine}", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    save(figure, path)
