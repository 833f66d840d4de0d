"""Checks that vse_tf's imports point one way, without importing it.

    python -m tools.check_imports

Reads every module of the package, builds the graph of its imports of
one another (at any depth in the file, deferred imports too), and fails
(exit status 1) on:

- a cycle in that graph;
- a library module (anything outside `vse_tf.cli` and the `python -m
  vse_tf.<verb>` entry modules) that imports `vse_tf.cli`, absl's flags or
  gin's configuration loading;
- a layer importing one above it: entry -> cli -> embedder/gin_config/
  configurables -> training/serving -> evaluation/modeling ->
  models/data/losses -> pretrained -> errors/io/compat.

The package itself (`vse_tf/__init__`, whose `vse_tf.load` defers its
import of the embedder) stands at the entry layer; an import of it is no
edge, since Python runs it before any of its modules.
"""

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vse_tf"
# Lower numbers sit lower; a module may import its own layer or below.
LAYERS = {
    "vse_tf.errors": 0,
    "vse_tf.io_utils": 0,
    "vse_tf.compat": 0,
    "vse_tf.pretrained": 1,
    "vse_tf.data": 2,
    "vse_tf.models": 2,
    "vse_tf.losses": 2,
    "vse_tf.evaluation": 3,
    "vse_tf.modeling": 3,
    "vse_tf.training": 4,
    "vse_tf.serving": 4,
    "vse_tf.embedder": 5,
    "vse_tf.gin_config": 5,
    "vse_tf.configurables": 5,
    "vse_tf.cli": 6,
}
ENTRY = 7  # vse_tf/<verb>.py and the package itself
VERBS = (
    "train",
    "evaluate",
    "export",
    "projector",
    "search",
    "serve",
    "serving_client",
    "prepare",
)
FORBIDDEN_IN_LIBRARY = ("vse_tf.cli", "absl.flags", "absl.app")


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name):
    if name == "vse_tf" or (
        name.rsplit(".", 1)[-1] in VERBS and name.count(".") == 1
    ):
        return ENTRY
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if name == prefix or name.startswith(prefix + "."):
            return LAYERS[prefix]
    raise KeyError(name)


def imports(path, modules):
    """The vse_tf modules and the other names `path` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "__import__"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(node.args[0].value)
    return found


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for other in sorted(graph[node]):
            if state.get(other) == "open":
                return stack[stack.index(other) :] + [other]
            if other not in state:
                cycle = visit(other)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def main():
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph, problems = {}, []
    for name, path in sorted(paths.items()):
        imported = imports(path, paths)
        # A package's __init__ is not an edge to every module in it.
        graph[name] = {
            m
            for m in imported
            if m in paths
            and m != name
            and not (m == "vse_tf" and name != "vse_tf")
        }
        library = layer(name) < LAYERS["vse_tf.cli"]
        for other in sorted(imported):
            if library and other.startswith(FORBIDDEN_IN_LIBRARY):
                problems.append(f"{name} (library) imports {other}")
            if other in graph[name] and layer(other) > layer(name):
                problems.append(
                    f"{name} (layer {layer(name)}) imports "
                    f"{other} (layer {layer(other)}), above it"
                )
    cycle = find_cycle(graph)
    if cycle:
        problems.append("import cycle: " + " -> ".join(cycle))
    edges = sum(len(v) for v in graph.values())
    if problems:
        print("\n".join(problems), file=sys.stderr)
        print(
            f"{len(problems)} problem(s) in {len(graph)} modules, "
            f"{edges} imports.",
            file=sys.stderr,
        )
        return 1
    print(
        f"{len(graph)} modules, {edges} imports: no cycle, every import "
        "points down."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
