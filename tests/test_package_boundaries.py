"""The layer order of gcm_jax (README, "Architecture"): each module imports only its own layer
or the layers below it, imports are at module level, and no two modules import each other
through any chain.

  1  diffusion/ parallel/ runs/ configs/ weights wav_io video_io image_quality config_rules
  2  models/ latents frozen_encoders sampling
  3  data/
  4  alignment/
  5  train/
  6  entry points: config_validation generate evaluate launch, every __main__
"""
import ast
import os
import subprocess
import sys
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Module name or package prefix -> layer. A module takes the layer of its longest match.
LAYERS = {
    "gcm_jax.diffusion": 1, "gcm_jax.parallel": 1, "gcm_jax.runs": 1, "gcm_jax.weights": 1,
    "gcm_jax.wav_io": 1, "gcm_jax.video_io": 1, "gcm_jax.image_quality": 1,
    "gcm_jax.config_rules": 1, "gcm_jax.configs": 1,
    "gcm_jax.models": 2, "gcm_jax.latents": 2, "gcm_jax.frozen_encoders": 2,
    "gcm_jax.sampling": 2,
    "gcm_jax.data": 3,
    "gcm_jax.alignment": 4,
    "gcm_jax.train": 5,
    "gcm_jax.config_validation": 6, "gcm_jax.generate": 6, "gcm_jax.evaluate": 6,
    "gcm_jax.launch": 6,
}
ENTRY_POINT = 6  # Every `__main__` module is an entry point.


def modules(root: str, package: str = "gcm_jax") -> dict[str, str]:
  """{dotted module name: file path} of every module of `package` under `root`."""
  found = {}
  for folder, _, names in os.walk(os.path.join(root, package)):
    for name in names:
      if name.endswith(".py"):
        dotted = os.path.relpath(os.path.join(folder, name), root)[:-3].replace(os.sep, ".")
        found[dotted.removesuffix(".__init__")] = os.path.join(folder, name)
  return found


def layer_of(module: str) -> Optional[int]:
  if "." not in module:  # The package's own __init__ (imports nothing).
    return 1
  if module.rpartition(".")[2] == "__main__":
    return ENTRY_POINT
  prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
  return LAYERS[max(prefixes, key=len)] if prefixes else None


def imports(path: str, module: str, known: dict[str, str]) -> list[tuple[str, int, bool]]:
  """(imported project module, line, inside a function) for each project import of the file.

  `from a.b import c` names module a.b.c when that is a module, else a.b; a relative import is
  resolved against the file's package."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read())
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  root = next(iter(known)).split(".")[0]
  found = []

  def visit(node: ast.AST, in_function: bool) -> None:
    for child in ast.iter_child_nodes(node):
      local = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
      names = []
      if isinstance(child, ast.Import):
        names = [a.name for a in child.names]
      elif isinstance(child, ast.ImportFrom):
        base = child.module or ""
        if child.level:
          parts = package.split(".")[:len(package.split(".")) - child.level + 1]
          base = ".".join(parts + ([child.module] if child.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                 for a in child.names]
      for name in names:
        while name and name not in known and name.split(".")[0] == root:
          name = name.rpartition(".")[0]
        if name in known and name != module:
          found.append((name, child.lineno, local))
      visit(child, local)

  visit(tree, False)
  return found


def problems(root: str, package: str = "gcm_jax") -> list[str]:
  """Every module without a layer, upward import, function-local import and import cycle."""
  known = modules(root, package)
  found, edges = [], {m: set() for m in known}
  for module, path in sorted(known.items()):
    if layer_of(module) is None:
      found.append(f"{module} has no layer (add it to LAYERS and to the README's Architecture)")
      continue
    for target, line, local in imports(path, module, known):
      edges[module].add(target)
      where = f"{os.path.relpath(path, root)}:{line}"
      if local:
        found.append(f"{where}: function-local import of {target} (import at module level)")
      if layer_of(target) is not None and layer_of(target) > layer_of(module):
        found.append(f"{where}: {module} (layer {layer_of(module)}) imports {target} "
                     f"(layer {layer_of(target)})")
  return found + [f"import cycle: {' -> '.join(c)}" for c in cycles(edges)]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
  """One cycle (as a path back to its start) per strongly connected component of > 1 module."""
  index, low, stack, on_stack, components = {}, {}, [], set(), []

  def connect(v: str) -> None:  # Tarjan's algorithm.
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(edges[v]):
      if w not in index:
        connect(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while not component or component[-1] != v:
        component.append(stack.pop())
        on_stack.discard(component[-1])
      if len(component) > 1:
        components.append(set(component))

  sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges)))
  for v in sorted(edges):
    if v not in index:
      connect(v)
  found = []
  for component in components:
    path = [min(component)]
    while len(path) == 1 or path[-1] != path[0]:
      path.append(min(w for w in edges[path[-1]] if w in component
                      and (w == path[0] or w not in path)))
    found.append(path)
  return found


def test_every_module_keeps_the_layer_order():
  assert problems(REPO) == []
  # The scan sees real edges, so it would see wrong ones: the loop imports the data pipeline.
  known = modules(REPO)
  assert ("gcm_jax.data.pipeline" in
          {t for t, _, _ in imports(known["gcm_jax.train.trainer"], "gcm_jax.train.trainer",
                                    known)})


def _write(root, files: dict[str, str]) -> str:
  for name, text in files.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  return str(root)


def test_the_check_finds_upward_local_and_cyclic_imports(tmp_path):
  """A made-up package with one of each defect: every one is reported, with its line."""
  root = _write(tmp_path, {
      "gcm_jax/__init__.py": "",
      "gcm_jax/models/__init__.py": "",
      "gcm_jax/models/net.py": "from gcm_jax.train import loop\n",  # 2 -> 5
      "gcm_jax/train/__init__.py": "",
      "gcm_jax/train/loop.py": "def f():\n  from gcm_jax.models import net\n",
      "gcm_jax/train/a.py": "from . import b\n",  # a -> b -> a, relative
      "gcm_jax/train/b.py": "import gcm_jax.train.a\n",
      "gcm_jax/unplaced.py": "",
  })
  found = problems(root)
  assert "gcm_jax.unplaced has no layer (add it to LAYERS and to the README's Architecture)" \
      in found
  assert (f"gcm_jax{os.sep}models{os.sep}net.py:1: gcm_jax.models.net (layer 2) imports "
          f"gcm_jax.train.loop (layer 5)") in found
  assert (f"gcm_jax{os.sep}train{os.sep}loop.py:2: function-local import of "
          f"gcm_jax.models.net (import at module level)") in found
  assert "import cycle: gcm_jax.train.a -> gcm_jax.train.b -> gcm_jax.train.a" in found
  assert ("import cycle: gcm_jax.models.net -> gcm_jax.train.loop -> gcm_jax.models.net"
          in found)
  assert len(found) == 5, found


def test_importing_the_lower_layers_loads_nothing_above_them():
  """What Python actually loads (package __init__ re-exports included) for every module of
  layers 1-2 (the networks and loaders that inference and data caches use)."""
  lower = sorted(m for m in modules(REPO) if layer_of(m) <= 2)
  code = (f"import importlib, sys\nfor m in {lower!r}: importlib.import_module(m)\n"
          "print(sorted(m for m in sys.modules if m.startswith('gcm_jax.')))")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  loaded = ast.literal_eval(result.stdout.strip().splitlines()[-1])
  assert "gcm_jax.models.pretrained.whisper" in loaded and "gcm_jax.runs.checkpoint" in loaded
  assert [m for m in loaded if layer_of(m) is not None and layer_of(m) > 2] == []


def readme_rows() -> list[tuple[int, str, str]]:
  """(layer, folder, modules cell) of each row of the README's Architecture table."""
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    section = f.read().split("## Architecture", 1)[1].split("\n## ", 1)[0]
  rows = []
  for line in section.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 3 and cells[0].isdigit():
      rows.append((int(cells[0]), cells[1].strip("`"), cells[2]))
  return rows


def test_the_readme_lists_every_module_in_its_layer():
  """Each module file is named in the README's Architecture row of its folder and layer (a
  `__main__`, an entry point, in its package's row), so a newcomer finds every module there
  and a new one cannot be added silently."""
  rows = readme_rows()
  missing = []
  for module, path in modules(REPO).items():
    name = os.path.basename(path)
    if name == "__init__.py":
      continue
    folder = os.path.relpath(os.path.dirname(path), os.path.join(REPO, "gcm_jax"))
    folder = "gcm_jax/" if folder == "." else folder.replace(os.sep, "/") + "/"
    if not any(folder == f and f"`{name}`" in cell
               and (layer == layer_of(module) or name == "__main__.py")
               for layer, f, cell in rows):
      missing.append(f"{folder}{name} (layer {layer_of(module)})")
  assert not missing, f"not in the README's Architecture table: {missing}"
