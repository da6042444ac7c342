"""The README's Python examples run as written (the run folder filled in with a real run)."""

from __future__ import annotations

import re
from pathlib import Path

from stn_lab.config_path import compose_config
from stn_lab.train import train

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_stn_in_front_of_your_own_classifier():
    namespace: dict = {}
    exec(python_blocks()[0], namespace)  # noqa: S102 (the README's own example)
    assert namespace["logits"].shape == (8, 10)


def test_load_a_run_and_predict_from_another_folder(tmp_path, monkeypatch, tiny_run):
    run = tmp_path / "run"
    overrides = [*tiny_run, "trainer.max_epochs=1"]
    train(compose_config(overrides), run, {"model": "stn"}, overrides)
    monkeypatch.chdir(tmp_path)  # anywhere but the run folder
    namespace: dict = {}
    exec(python_blocks()[1].replace("<run>", str(run)), namespace)  # noqa: S102
    classes = namespace["classes"]
    assert classes.shape == (4,) and all(c in range(10) for c in classes.tolist())
