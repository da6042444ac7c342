"""The layers' import rules, read from the source with ``ast`` (nothing is imported to check them).

``geometry/`` is pure maths and imports nothing else of stn_lab; ``ops/`` builds only on
``geometry/``; ``data/`` never imports ``models/``; ``models/`` are plain ``nn.Module``s that never
import the training loop (``stn_lab.module``) or Lightning. Imports inside functions count too.
Every source file has a docstring and at most 500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric")


def module_name(path: Path, root: Path = SRC) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, root: Path = SRC) -> set[str]:
    """The dotted names a file under ``root`` imports: ``import a.b`` gives ``a.b``,
    ``from a import b`` gives ``a.b``; relative imports are made absolute."""
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def within(name: str, prefixes) -> bool:
    """Whether ``name`` is one of the modules ``prefixes`` or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def layer_imports(layer: str) -> dict[str, set[str]]:
    files = sorted((SRC / "stn_lab" / layer).rglob("*.py"))
    assert files, f"no source files in stn_lab/{layer}"
    return {module_name(path): imported_names(path) for path in files}


def offences(layer: str, forbidden, allowed=()) -> list[str]:
    """``module imports name`` for each import of ``layer`` within ``forbidden`` but not within
    ``allowed``."""
    return [
        f"{module} imports {name}"
        for module, names in layer_imports(layer).items()
        for name in sorted(names)
        if within(name, forbidden) and not within(name, allowed)
    ]


def test_the_parser_sees_absolute_relative_and_local_imports(tmp_path):
    package = tmp_path / "stn_lab" / "models"
    package.mkdir(parents=True)
    (package / "stn.py").write_text(
        "import torch.nn\nfrom . import shapes\nfrom ..geometry.grids import grid_points\n"
        "def later():\n    from lightning import Trainer\n"
    )
    assert imported_names(package / "stn.py", root=tmp_path) == {
        "torch.nn", "stn_lab.models.shapes", "stn_lab.geometry.grids.grid_points",
        "lightning.Trainer",
    }  # fmt: skip
    # And on the real tree: the distortions build on geometry, the STN on its cache.
    assert "stn_lab.geometry.tps.tps_grid" in layer_imports("data")["stn_lab.data.distortions"]
    assert "stn_lab.geometry.cache.cached" in layer_imports("models")["stn_lab.models.stn"]


def test_geometry_imports_nothing_else_of_stn_lab():
    assert offences("geometry", ["stn_lab"], allowed=["stn_lab.geometry"]) == []


def test_ops_build_only_on_geometry():
    assert offences("ops", ["stn_lab"], allowed=["stn_lab.geometry", "stn_lab.ops"]) == []


def test_data_never_imports_models():
    assert offences("data", ["stn_lab.models"]) == []


def test_models_never_import_the_training_loop_or_lightning():
    assert offences("models", ["stn_lab.module", *LIGHTNING]) == []


def test_every_source_file_says_what_it_is_for_and_stays_under_500_lines():
    texts = {str(f.relative_to(SRC)): f.read_text() for f in sorted(SRC.rglob("*.py"))}
    assert len(texts) > 50, "the source tree moved"
    lines = {name: len(text.splitlines()) for name, text in texts.items()}
    assert {name: n for name, n in lines.items() if n > 500} == {}
    assert [name for name, text in texts.items() if not ast.get_docstring(ast.parse(text))] == []
