"""The model and train packages do not depend on the data package.

Keypoint geometry (mouth region, control maps) and other data-specific features are batch
features made by the input pipeline; the only edges are the local imports of
`gcm_jax.data.pipeline` in `trainer.train` and `train_autoencoder.train_and_evaluate`.
"""
import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("gcm_jax/models", "gcm_jax/train")
# (file, function) pairs allowed to import gcm_jax.data inside the function.
ALLOWED = {("gcm_jax/train/trainer.py", "train"),
           ("gcm_jax/train/train_autoencoder.py", "train_and_evaluate")}


def _data_imports(path: str) -> list[tuple[str, int]]:
  """(enclosing function or '<module>', line) of each `gcm_jax.data` import in `path`."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read())
  found = []

  def visit(node, scope):
    for child in ast.iter_child_nodes(node):
      inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else scope
      names = []
      if isinstance(child, ast.Import):
        names = [alias.name for alias in child.names]
      elif isinstance(child, ast.ImportFrom) and child.module:
        names = [child.module] + [f"{child.module}.{alias.name}" for alias in child.names]
      if any(n == "gcm_jax.data" or n.startswith("gcm_jax.data.") for n in names):
        found.append((scope, child.lineno))
      visit(child, inner)

  visit(tree, "<module>")
  return found


def test_no_data_imports_in_models_and_train():
  offenders = []
  for package in PACKAGES:  # Subpackages too (models/pretrained).
    for root, _, names in os.walk(os.path.join(REPO, package)):
      for name in sorted(n for n in names if n.endswith(".py")):
        rel = os.path.relpath(os.path.join(root, name), REPO)
        offenders += [f"{rel}:{line} ({scope})" for scope, line in
                      _data_imports(os.path.join(REPO, rel)) if (rel, scope) not in ALLOWED]
  assert not offenders, offenders
  # The scan sees the allowed edge, so it would see others.
  assert _data_imports(os.path.join(REPO, "gcm_jax/train/trainer.py")) != []


def test_importing_the_models_and_the_step_loads_no_data_module():
  modules = [os.path.relpath(os.path.join(root, n), REPO)[:-3].replace(os.sep, ".")
             for root, _, names in os.walk(os.path.join(REPO, "gcm_jax/models"))
             for n in names if n.endswith(".py") and n != "__init__.py"]
  modules += ["gcm_jax.train.step", "gcm_jax.train.control", "gcm_jax.train.state",
              "gcm_jax.train.checkpoint", "gcm_jax.train.metrics"]
  code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
          "print(sorted(m for m in sys.modules if m.startswith('gcm_jax.')))")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  loaded = ast.literal_eval(result.stdout)
  assert "gcm_jax.models.pretrained.whisper" in loaded
  assert "gcm_jax.models.controlnet" in loaded and "gcm_jax.train.step" in loaded
  assert not [m for m in loaded if m.startswith("gcm_jax.data")], loaded
