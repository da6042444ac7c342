"""The walkthrough notebook is stored executed, on Fashion-MNIST, and runs top to bottom
(executed with nbclient, so it cannot rot) without writing into the folder it runs in."""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


def check_outputs(notebook) -> str:
    """Assert the executed ``notebook`` trained both models, drew the STN's pictures and compared
    the runs, with no error; return what it printed."""
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "stn test accuracy" in printed and "cnn test accuracy" in printed
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # stn, stn_epochs, confusion matrix, Grad-CAM
    markdown = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert markdown and "| model=stn |" in markdown[0] and "| model=cnn |" in markdown[0]
    return printed


def test_walkthrough_is_stored_executed_on_fashion_mnist():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    # Every cell ran, once, in order, in one kernel.
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    printed = check_outputs(notebook)
    assert "data: data=fashion_mnist_distorted\n" in printed


@pytest.mark.slow
def test_walkthrough_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the kernel's working folder
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3").execute()
    check_outputs(notebook)
    # The data stays in the data folder and the runs go to a temporary folder: nothing (no
    # data/ or logs/) lands where the notebook runs, so none can land in notebooks/ either.
    assert sorted(p.name for p in tmp_path.iterdir()) == []
