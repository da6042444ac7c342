"""The README's Python examples run as written (the run folder filled in with a real run), and its
table of config groups names every option and the default first."""

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


def group_table() -> dict[str, list[str]]:
    """``{group: options}`` from the README's table of config groups (rows that name a folder of
    conf/), in the order listed."""
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", README.read_text(), flags=re.M)
    return {group: re.findall(r"`(\w+)`|(none)", options) for group, options in rows
            if (README.parent / "conf" / group).is_dir()}  # fmt: skip


def test_the_group_table_lists_every_option_and_the_default_first():
    table = {g: [a or b for a, b in options] for g, options in group_table().items()}
    assert len(table) >= 15, sorted(table)
    choices = compose_config([], return_hydra_config=True).hydra.runtime.choices
    conf = README.parent / "conf"
    for group, options in table.items():
        assert options and len(set(options)) == len(options), group
        on_disk = {f.stem for f in (conf / group).glob("*.yaml")}
        assert set(options) | {"none"} == on_disk | {"none"}, group  # none: a file or no choice
        if group in ("debug", "experiment"):  # nothing by default: the table lists options only
            assert choices[group] is None
        elif group == "distortion":  # the data option chooses: RTS under mnist_distorted
            assert (choices[group], options[0]) == ("RTS", "none")
            assert (
                compose_config(["data=mnist"], return_hydra_config=True).hydra.runtime.choices[
                    group
                ]
                == "none"
            )
        else:
            assert (choices[group] or "none") == options[0], group
