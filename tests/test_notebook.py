"""Executes notebooks/quickstart.ipynb end to end with a 2-step training budget."""
import os

import nbclient
import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
  monkeypatch.setenv("GCM_NOTEBOOK_STEPS", "2")
  monkeypatch.setenv("GCM_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  notebook = nbformat.read(os.path.join(REPO, "notebooks", "quickstart.ipynb"), as_version=4)
  nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                          resources={"metadata": {"path": os.path.join(REPO, "notebooks")}}
                          ).execute()
  outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                    for o in cell.get("outputs", []))
  assert "trained to step 2" in outputs
  assert (tmp_path / "run" / "quickstart.mp4").stat().st_size > 1000
