"""The package's functions stay small enough to read: none has a body over
60 lines, and none but constructors and gin configurables (whose keywords
are the bindings of a config) takes over 7 parameters."""

import ast
import pathlib

from tests.conftest import REPO

MAX_BODY_LINES = 60
MAX_PARAMETERS = 7


def _functions():
    for path in sorted(pathlib.Path(REPO, "vse_tf").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield (
                    f"{path.relative_to(REPO)}:{node.lineno} {node.name}",
                    node,
                )


def body_lines(function):
    """Lines from the first statement after the docstring to the last."""
    body = function.body
    if (
        isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def parameters(function):
    """Its parameters, self or cls aside."""
    arguments = function.args
    names = [
        a.arg
        for a in (
            *arguments.posonlyargs,
            *arguments.args,
            *arguments.kwonlyargs,
        )
    ]
    names += [a.arg for a in (arguments.vararg, arguments.kwarg) if a]
    return [n for n in names if n not in ("self", "cls")]


def _exempt_from_parameter_count(function):
    decorators = [ast.unparse(d) for d in function.decorator_list]
    return function.name == "__init__" or any(
        d.startswith("gin.configurable") for d in decorators
    )


def test_no_function_body_is_over_60_lines():
    long = [
        f"{where}: {body_lines(f)} lines"
        for where, f in _functions()
        if body_lines(f) > MAX_BODY_LINES
    ]
    assert not long, long


def test_no_function_takes_over_7_parameters():
    many = [
        f"{where}: {len(parameters(f))} parameters"
        for where, f in _functions()
        if len(parameters(f)) > MAX_PARAMETERS
        and not _exempt_from_parameter_count(f)
    ]
    assert not many, many


def test_the_measures_count_what_they_say():
    source = (
        'def f(self, a, b=1, *rest, c, **named):\n    """Doc."""\n'
        "    x = 1\n\n    return (\n        x\n    )\n"
    )
    (function,) = ast.parse(source).body
    assert parameters(function) == ["a", "b", "c", "rest", "named"]
    assert body_lines(function) == 5
