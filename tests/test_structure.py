"""The package's architecture, read from its source: one subpackage per concern, imports pointing one way.

Every import in npminilm/ and kernels/ (installed as `npminilm.kernels`) is parsed, at module level and inside
functions alike, and resolved to the npminilm module it names. Then:
- a module imports only from its own subpackage and from the layers below it (LAYERS), so the NumPy base never
  imports upward and the encoder and decoder never import each other;
- no two modules import each other, directly or around a longer cycle;
- only the GPU package and the kernels import torch, transformers, tokenizers, sentence_transformers or triton
  at module level (elsewhere such an import waits inside the function that needs it);
- kernels has one import name, `npminilm.kernels`, in the package, tests, benchmarks and tools alike;
- every exception class is defined in npminilm/errors.py, and no class or constant is defined twice.
"""

import ast

import pytest

from tests.conftest import ROOT

# the layer of each part of the package: a module may import from its own part and from lower layers only
LAYERS = {
    "npminilm.errors": 0,
    "npminilm.nn": 1, "npminilm.io": 1, "npminilm.runtime": 1, "npminilm.util": 1, "npminilm.kernels": 1,
    "npminilm.cpu": 1,
    "npminilm.tokenization": 2, "npminilm.finetune": 2,
    "npminilm.encoder": 3, "npminilm.decoder": 3,
    "npminilm.gpu": 4, "npminilm.serve": 4, "npminilm.corpus": 4,
    "npminilm.cli": 5,
    "npminilm.__main__": 6, "npminilm": 6,
}  # fmt: skip
HEAVY = {"torch", "transformers", "tokenizers", "sentence_transformers", "triton"}
MAY_IMPORT_HEAVY = ("npminilm.gpu", "npminilm.kernels")


def module_files():
    """{module name: path} for every module of the installed package layout."""
    files = {}
    for base, package in ((ROOT / "npminilm", "npminilm"), (ROOT / "kernels", "npminilm.kernels")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join([package, *parts])] = path
    return files


FILES = module_files()
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in FILES.items()}


def is_package(name):
    return FILES[name].name == "__init__.py"


def imports(name, tree):
    """(imported name, line, module level?) for each import in `tree`, relative imports made absolute."""
    found = []

    def visit(node, top):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name if is_package(name) else name.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        base = base.rpartition(".")[0]
                    target = f"{base}.{child.module}" if child.module else base
                else:
                    target = child.module
                found.append((target, child.lineno, top))
                # `from package import module` imports that module too
                found.extend((f"{target}.{alias.name}", child.lineno, top) for alias in child.names
                             if f"{target}.{alias.name}" in FILES)
            visit(child, top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, True)
    return found


def part(name):
    """The LAYERS entry that `name` belongs to."""
    return max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len)


def internal_edges():
    """{module: {npminilm module it imports: line}}."""
    edges = {name: {} for name in FILES}
    for name, tree in TREES.items():
        for target, line, _ in imports(name, tree):
            if target in FILES and target != name:
                edges[name].setdefault(target, line)
    return edges


EDGES = internal_edges()


def test_every_module_has_a_layer():
    assert len(FILES) > 40, sorted(FILES)  # the parse saw the whole package
    unplaced = [name for name in FILES if not any(name == p or name.startswith(p + ".") for p in LAYERS)]
    assert not unplaced, f"modules outside every layer of LAYERS: {unplaced}"


def test_imports_point_down():
    upward = [f"{FILES[src].relative_to(ROOT)}:{line} imports {dst} (layer {LAYERS[part(dst)]} {part(dst)}, "
              f"from layer {LAYERS[part(src)]} {part(src)})"
              for src, targets in EDGES.items() for dst, line in targets.items()
              if part(src) != part(dst) and LAYERS[part(dst)] >= LAYERS[part(src)]]
    assert not upward, "imports that do not point down:\n" + "\n".join(upward)


def find_cycle(edges):
    """One import cycle as a list of modules (first == last), or None."""
    state, stack = {}, []

    def dfs(node):
        state[node] = "open"
        stack.append(node)
        for nxt in edges[node]:
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in edges:
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(EDGES)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"b": 1}}) is None


def test_torch_and_triton_only_in_the_gpu_package():
    heavy = [f"{FILES[name].relative_to(ROOT)}:{line} imports {target} at module level"
             for name, tree in TREES.items() if not name.startswith(MAY_IMPORT_HEAVY)
             for target, line, top in imports(name, tree) if top and target.split(".")[0] in HEAVY]
    assert not heavy, "\n".join(heavy)


def test_the_import_checks_see_function_level_and_relative_imports():
    tree = ast.parse("import torch\ndef f():\n    from triton import jit\n    from ..io import hub\n")
    assert imports("npminilm.encoder.bert", tree) == [("torch", 1, True), ("triton", 3, False),
                                                      ("npminilm.io", 4, False), ("npminilm.io.hub", 4, False)]


@pytest.mark.parametrize("folder", ["npminilm", "kernels", "tests", "benchmarks", "tools"])
def test_kernels_has_one_import_name(folder):
    wrong = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            wrong += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                      if n.split(".")[0] == "kernels"]
    assert not wrong, "kernels is imported as npminilm.kernels only:\n" + "\n".join(wrong)


def top_level_definitions():
    """(kind, name, module) for each module-level class and UPPER_CASE constant."""
    for name, tree in TREES.items():
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                yield "class", node.name, name, node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for n in (t.elts if isinstance(t, ast.Tuple) else [t]):
                        if isinstance(n, ast.Name) and n.id.isupper() and not n.id.startswith("_"):
                            yield "constant", n.id, name, node


def test_errors_live_in_npminilm_errors():
    elsewhere = [f"{module}: class {cls}" for kind, cls, module, node in top_level_definitions()
                 if kind == "class" and module != "npminilm.errors"
                 and any(getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception")) for b in node.bases)]
    assert not elsewhere, "exception classes outside npminilm.errors: " + ", ".join(elsewhere)


def test_each_class_and_constant_is_defined_once():
    where = {}
    for kind, name, module, _ in top_level_definitions():
        where.setdefault((kind, name), []).append(module)
    twice = {f"{kind} {name}": modules for (kind, name), modules in where.items() if len(modules) > 1}
    assert not twice, f"defined in more than one module: {twice}"


def test_the_readme_layout_table_shows_every_folder():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Layout"):].split("\n## ", 1)[0]
    folders = sorted({path.parent.relative_to(ROOT).as_posix() for name, path in FILES.items()
                      if is_package(name) and name != "npminilm"})
    missing = [f for f in folders if f"`{f}/`" not in table]
    assert not missing, f"folders missing from the README's layout table: {missing}"


def test_every_package_is_in_the_wheel():
    """pyproject.toml lists the packages a wheel holds: a subpackage left off it works from a checkout (and an
    editable install) but is missing from `pip install .`."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    packages = {name for name in FILES if is_package(name)}
    assert packages <= listed, f"packages missing from pyproject.toml: {sorted(packages - listed)}"
