"""The walkthrough notebook runs top to bottom (executed with nbclient, so it cannot rot)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


@pytest.mark.slow
def test_walkthrough_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.chdir(tmp_path)  # the notebook's data root (data/) lands in the temp folder
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3").execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "stn test accuracy" in printed and "cnn test accuracy" in printed
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # stn, stn_epochs, confusion matrix, Grad-CAM
    markdown = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert markdown and "| model=stn |" in markdown[0] and "| model=cnn |" in markdown[0]
