"""README.md: short, its layout naming every module, and its test command
the one CI runs."""

import pathlib
import re

from tests.conftest import REPO

README = pathlib.Path(REPO, "README.md").read_text(encoding="utf-8")


def _layout():
    section = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"\w+", section))


def test_readme_is_at_most_250_lines():
    assert len(README.splitlines()) <= 250


def test_the_layout_names_every_module():
    named = _layout()
    modules = {
        path.stem
        for folder in ("vse_tf", "tools")
        for path in pathlib.Path(REPO, folder).rglob("*.py")
        if path.stem != "__init__"
    }
    packages = {
        path.parent.name
        for path in pathlib.Path(REPO, "vse_tf").rglob("__init__.py")
    }
    assert not (modules | packages) - named, sorted(
        (modules | packages) - named
    )


def test_the_test_command_is_what_ci_runs():
    ci = pathlib.Path(REPO, ".ci", "run").read_text(encoding="utf-8")
    command = ci.strip().splitlines()[-1]
    assert f"```sh\n{command}\n```" in README
