"""Executes the notebooks (quickstart, your_videos) end to end with a 2-step training budget
(the quick start on 64 clips)."""
import os

import nbclient
import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_notebook(name: str, tmp_path, monkeypatch) -> str:
  """Executes notebooks/<name> with a 2-step budget; returns its code cells' text output."""
  monkeypatch.setenv("GCM_NOTEBOOK_STEPS", "2")
  monkeypatch.setenv("GCM_NOTEBOOK_CLIPS", "64")
  monkeypatch.setenv("GCM_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  notebook = nbformat.read(os.path.join(REPO, "notebooks", name), as_version=4)
  nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                          resources={"metadata": {"path": os.path.join(REPO, "notebooks")}}
                          ).execute()
  return "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                 for o in cell.get("outputs", []))


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
  outputs = _run_notebook("quickstart.ipynb", tmp_path, monkeypatch)
  assert "trained to step 2" in outputs
  assert (tmp_path / "run" / "quickstart.mp4").stat().st_size > 1000


def test_your_videos_notebook_runs(tmp_path, monkeypatch):
  """Demo videos -> video_folder clips with reference frames -> 2 training steps of a dubbing
  run -> one of the videos dubbed with a new voice."""
  outputs = _run_notebook("your_videos.ipynb", tmp_path, monkeypatch)
  assert "clips: train 24" in outputs and "trained to step 2" in outputs
  assert "the source's frame times" in outputs
  assert (tmp_path / "run" / "your_videos.mp4").stat().st_size > 1000
