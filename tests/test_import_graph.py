"""The import graph of cnx2rg_jax/ and tfds_cncxr/: no `configs` imports, no cycles, layers kept.

Every .py file is read with `ast` (nothing is imported): every import statement counts,
function-level and `if TYPE_CHECKING:` ones included, relative imports are resolved, and
`from pkg import name` means the submodule pkg.name where there is one. A *package* is
cnx2rg_jax.<subpackage or top-level module>, or tfds_cncxr as a whole; cnx2rg_jax/__init__.py
counts as nothing. LAYERS, lowest first, is the one place that says which package may import
which: a package imports only packages of lower layers, never one of its own layer or above.
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCANNED = ("cnx2rg_jax", "tfds_cncxr")  # top-level packages whose files are read
SPLIT = "cnx2rg_jax"  # the top-level package whose subpackages and modules are packages
FORBIDDEN = ("configs",)  # library code is handed its config; it never imports one

LAYERS = (
    ("cnx2rg_jax.errors",),  # UserError, the base of every user error
    ("cnx2rg_jax.jsonl", "cnx2rg_jax.config_files"),  # the JSON-lines reader; config files by path
    ("cnx2rg_jax.text",),
    ("tfds_cncxr",),
    ("cnx2rg_jax.distributed",),  # multi-host helpers; the input pipeline uses them
    ("cnx2rg_jax.data",),
    ("cnx2rg_jax.decoding", "cnx2rg_jax.sharding"),  # model-side utilities
    ("cnx2rg_jax.models",),
    ("cnx2rg_jax.training",),  # learning only; its validation and annotator are handed in
    ("cnx2rg_jax.radgraph",),
    ("cnx2rg_jax.evaluation",),  # clinical scoring may use a trained CN-RadGraph
    ("cnx2rg_jax.inference",),
    ("cnx2rg_jax.card",),
    ("cnx2rg_jax.config_checks",),
    # Entry modules and the side packages.
    ("cnx2rg_jax.bench", "cnx2rg_jax.convert", "cnx2rg_jax.predict"),
    ("cnx2rg_jax.comparison",),  # times each model with bench.train
    ("cnx2rg_jax.ablation", "cnx2rg_jax.run"),
)


# --- the graph ---------------------------------------------------------------------------------

@dataclasses.dataclass
class ImportGraph:
  """Modules (name -> file), and the imports between them, each with where it is written."""

  root: pathlib.Path
  split: str
  modules: dict[str, pathlib.Path]
  edges: dict[str, dict[str, list[str]]]  # importer -> imported -> ["path:line", ...]
  forbidden: list[tuple[str, str, str]]  # (importer, imported name, "path:line")

  def package(self, module: str) -> str | None:
    """The package `module` belongs to; None for the split package's own __init__."""
    parts = module.split(".")
    if parts[0] != self.split:
      return parts[0]
    return ".".join(parts[:2]) if len(parts) > 1 else None

  def package_edges(self) -> dict[str, dict[str, list[str]]]:
    """Package -> imported package -> the import lines, between different packages only."""
    out: dict[str, dict[str, list[str]]] = {}
    for a, targets in self.edges.items():
      for b, where in targets.items():
        pa, pb = self.package(a), self.package(b)
        if pa and pb and pa != pb:
          out.setdefault(pa, {}).setdefault(pb, []).extend(f"{w} ({a} -> {b})" for w in where)
    return out

  def packages(self) -> set[str]:
    return {p for p in map(self.package, self.modules) if p}


def _module_names(root: pathlib.Path, scanned) -> dict[str, pathlib.Path]:
  modules = {}
  for top in scanned:
    for path in sorted((root / top).rglob("*.py")):
      parts = list(path.relative_to(root).with_suffix("").parts)
      if parts[-1] == "__init__":
        parts.pop()
      modules[".".join(parts)] = path
  return modules


def _imported_names(module: str, path: pathlib.Path, node: ast.AST) -> list[str]:
  """The dotted names one import statement (or import_module("...") call) brings in; for
  `from base import a, b` both base.a and base (the caller keeps what exists)."""
  if isinstance(node, ast.Import):
    return [a.name for a in node.names]
  if isinstance(node, ast.ImportFrom):
    base = node.module or ""
    if node.level:
      package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
      package = package[:len(package) - (node.level - 1)]
      base = ".".join(package + ([base] if base else []))
    return [f"{base}.{a.name}" for a in node.names] + [base]
  if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
      and isinstance(node.args[0].value, str)
      and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module",
                                                                       "__import__")):
    return [node.args[0].value]
  return []


def scan(root: pathlib.Path, scanned=SCANNED, split: str = SPLIT,
         forbidden=FORBIDDEN) -> ImportGraph:
  """The ImportGraph of the packages `scanned` under `root` (see the module docstring)."""
  modules = _module_names(root, scanned)
  graph = ImportGraph(root, split, modules, {}, [])
  for module, path in modules.items():
    if module == split:
      continue  # the split package's __init__.py counts as nothing
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
      names = _imported_names(module, path, node)
      where = f"{path.relative_to(root)}:{node.lineno}" if names else ""
      from_names = isinstance(node, ast.ImportFrom)
      for name in names[:-1] if from_names else names:
        if name.split(".")[0] in forbidden:
          graph.forbidden.append((module, name, where))
          continue
        if from_names and name not in modules:
          name = names[-1]  # `from base import attribute`: the import is of base
        while name and name not in modules:
          name = name.rpartition(".")[0]  # `import a.b.attr` reads the module a.b
        if name and name != module and name != split:
          targets = graph.edges.setdefault(module, {})
          if where not in targets.setdefault(name, []):
            targets[name].append(where)
  return graph


def cycles(edges: dict[str, dict[str, list[str]]]) -> list[list[str]]:
  """The strongly connected components of more than one node, each sorted, in sorted order."""
  nodes = set(edges) | {b for targets in edges.values() for b in targets}
  reach = {}
  for v in nodes:
    seen, stack = set(), [v]
    while stack:
      for w in edges.get(stack.pop(), ()):
        if w not in seen:
          seen.add(w)
          stack.append(w)
    reach[v] = seen
  comps = {tuple(sorted(w for w in reach[v] if v in reach[w])) for v in nodes if v in reach[v]}
  return sorted(list(c) for c in comps if len(c) > 1)


def describe_cycle(component, edges) -> str:
  """The cycle's members and every import line that joins two of them."""
  lines = [" <-> ".join(component)]
  for a in component:
    for b, where in sorted(edges.get(a, {}).items()):
      if b in component:
        lines += [f"    {a} -> {b}: {w}" for w in where]
  return "\n".join(lines)


def layer_of(layers) -> dict[str, int]:
  return {p: i for i, layer in enumerate(layers) for p in layer}


def upward_imports(graph: ImportGraph, layers, package: str | None = None) -> list[str]:
  """The imports (of `package`, or of all) that reach a package of the same or a higher layer
  in `layers`, or an undeclared package."""
  rank, out = layer_of(layers), []
  for a, targets in sorted(graph.package_edges().items()):
    if package is not None and a != package:
      continue
    for b, where in sorted(targets.items()):
      if a not in rank or b not in rank:
        out += [f"undeclared package: {w}" for w in where]
      elif rank[b] >= rank[a]:
        side = "its own layer" if rank[b] == rank[a] else f"layer {rank[b]}"
        out += [f"{a} (layer {rank[a]}) imports {b} ({side}): {w}" for w in where]
  return out


# --- the helpers find what they should, in a tiny package -----------------------------------

def _write(root: pathlib.Path, files: dict[str, str]) -> None:
  for name, text in files.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def tiny(tmp_path):
  """lib.a.x and lib.b.y import each other (one of them relatively, inside a function),
  lib.a.x imports configs, lib.top and lib/__init__.py import lib.a."""
  _write(tmp_path, {
      "lib/__init__.py": "from lib.a import x\n",
      "lib/a/__init__.py": "",
      "lib/a/x.py": "import os\nfrom lib.b import y\n\ndef f():\n  from configs import base\n",
      "lib/b/__init__.py": "",
      "lib/b/y.py": "import numpy\n\ndef g():\n  from ..a import x\n  return x\n",
      "lib/b/z.py": "from . import y\nfrom lib.b.y import g\n",
      "lib/top.py": "import lib.a.x\nfrom lib import b\n",
      "other/__init__.py": "from lib import top\n",
  })
  return scan(tmp_path, scanned=("lib", "other"), split="lib")


def test_scan_resolves_imports(tiny):
  assert set(tiny.modules) == {"lib", "lib.a", "lib.a.x", "lib.b", "lib.b.y", "lib.b.z",
                               "lib.top", "other"}
  assert tiny.edges["lib.b.y"] == {"lib.a.x": ["lib/b/y.py:4"]}  # relative, in a function
  assert tiny.edges["lib.b.z"] == {"lib.b.y": ["lib/b/z.py:1", "lib/b/z.py:2"]}
  assert tiny.edges["lib.top"] == {"lib.a.x": ["lib/top.py:1"], "lib.b": ["lib/top.py:2"]}
  assert tiny.edges["other"] == {"lib.top": ["other/__init__.py:1"]}
  # lib/__init__.py counts as nothing: neither its imports nor imports of it are edges.
  assert "lib" not in tiny.edges and "lib" not in {b for t in tiny.edges.values() for b in t}
  assert tiny.packages() == {"lib.a", "lib.b", "lib.top", "other"}


def test_helpers_report_a_configs_import(tiny):
  assert tiny.forbidden == [("lib.a.x", "configs.base", "lib/a/x.py:5")]


def test_helpers_report_cycles(tiny):
  assert cycles(tiny.edges) == [["lib.a.x", "lib.b.y"]]
  message = describe_cycle(["lib.a.x", "lib.b.y"], tiny.edges)
  assert "lib.a.x -> lib.b.y: lib/a/x.py:2" in message
  assert "lib.b.y -> lib.a.x: lib/b/y.py:4" in message
  packages = tiny.package_edges()
  assert cycles(packages) == [["lib.a", "lib.b"]]
  assert "lib/b/y.py:4 (lib.b.y -> lib.a.x)" in describe_cycle(["lib.a", "lib.b"], packages)
  assert cycles({"a": {"b": []}, "b": {"c": []}, "c": {}}) == []


def test_helpers_report_upward_imports(tiny):
  layers = (("lib.b",), ("lib.a",), ("lib.top",), ("other",))
  assert upward_imports(tiny, layers) == [
      "lib.b (layer 0) imports lib.a (layer 1): lib/b/y.py:4 (lib.b.y -> lib.a.x)"]
  assert upward_imports(tiny, layers, "lib.a") == []
  same = upward_imports(tiny, (("lib.a", "lib.b"), ("lib.top", "other")))
  assert len(same) == 3 and all("its own layer" in s for s in same)
  undeclared = upward_imports(tiny, (("lib.a",), ("lib.b",)), "lib.top")
  assert undeclared == ["undeclared package: lib/top.py:1 (lib.top -> lib.a.x)",
                        "undeclared package: lib/top.py:2 (lib.top -> lib.b)"]


# --- the real tree -------------------------------------------------------------------------

# Marks for (check, package) pairs that are known to fail; empty: every check passes.
PENDING: dict = {}
DECLARED = [p for layer in LAYERS for p in layer]


def _params(check: str):
  return [pytest.param(p, marks=pytest.mark.xfail(strict=False, reason=PENDING[check, p]))
          if (check, p) in PENDING else p for p in DECLARED]


@pytest.fixture(scope="module")
def tree() -> ImportGraph:
  return scan(ROOT)


def test_every_package_is_declared_once(tree):
  assert len(DECLARED) == len(set(DECLARED)), "a package is named twice in LAYERS"
  assert tree.packages() == set(DECLARED), (
      f"undeclared: {sorted(tree.packages() - set(DECLARED))}; "
      f"declared but missing: {sorted(set(DECLARED) - tree.packages())}; place every package "
      "in LAYERS")


@pytest.mark.parametrize("package", _params("configs"))
def test_no_configs_imports(tree, package):
  found = [f"{w}: {a} imports {name}" for a, name, w in tree.forbidden
           if tree.package(a) == package]
  assert not found, "library code imports configs:\n" + "\n".join(found)


@pytest.mark.parametrize("package", _params("module cycles"))
def test_no_module_cycles(tree, package):
  found = [c for c in cycles(tree.edges) if any(tree.package(m) == package for m in c)]
  assert not found, "module cycles:\n" + "\n".join(describe_cycle(c, tree.edges) for c in found)


@pytest.mark.parametrize("package", _params("package cycles"))
def test_no_package_cycles(tree, package):
  edges = tree.package_edges()
  found = [c for c in cycles(edges) if package in c]
  assert not found, "package cycles:\n" + "\n".join(describe_cycle(c, edges) for c in found)


@pytest.mark.parametrize("package", _params("layers"))
def test_imports_go_down_the_layers(tree, package):
  found = upward_imports(tree, LAYERS, package)
  assert not found, "imports against LAYERS:\n" + "\n".join(found)
