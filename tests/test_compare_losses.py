"""tools/compare_losses.py's table and its claims, on hand-made metrics."""

import importlib.util
import os

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location(
    "compare_losses", os.path.join(REPO, "tools", "compare_losses.py"))
compare_losses = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_losses)


def _metrics(rsum, cosine=None):
    # R@1, R@5, R@10 each way: rsum / 6 each, so the columns are checkable.
    metrics = {c: rsum / 6 for c in compare_losses.COLUMNS}
    metrics["rsum"] = rsum
    if cosine is not None:
        metrics["cosine"] = {"rsum": cosine}
    return metrics


def test_table_gives_the_mean_and_range_over_seeds():
    table = compare_losses.markdown_table({
        "all_negatives": [_metrics(300), _metrics(306)],
        "vse0": [_metrics(240), _metrics(246)]})
    rows = table.splitlines()
    assert rows[0].startswith("| loss | seeds | i2t R@1")
    assert "cosine" not in rows[0]
    assert rows[2] == ("| all negatives (ConVSE) | 2 | " + " | ".join(
        ["50.5"] * 6) + " | 303.0 | 300.0 - 306.0 |")


def test_hubness_corrected_runs_add_their_cosine_rsum():
    table = compare_losses.markdown_table({
        "vse0": [_metrics(250, cosine=240), _metrics(254, cosine=246)]})
    header, rule, row = table.splitlines()
    assert header.endswith("| rsum range | cosine rsum |")
    assert rule.count("|---") == header.count("|") - 1
    assert row.endswith("| 250.0 - 254.0 | 243.0 |")


def test_a_difference_is_claimed_only_beyond_the_spread():
    lines = compare_losses.claims({
        "all_negatives": [_metrics(300), _metrics(306)],
        "vse0": [_metrics(240), _metrics(246)],
        "vse_pp": [_metrics(244), _metrics(250)]}).splitlines()

    def verdict(better, worse):
        [line] = [line for line in lines if f"{better} vs {worse}" in line]
        return line

    assert "beyond the spread" in verdict("ConVSE)", "VSE0")
    assert "no difference claimed" in verdict("VSE++, max of hinges", "VSE0")
