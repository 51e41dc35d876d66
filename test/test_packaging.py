"""Packaging facts: one version, package data that exists, the model library's dependencies."""

import ast
import importlib.metadata
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (ROS 2 Humble): the same parser, packaged
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _package_xml_version() -> str:
    return ElementTree.parse(ROOT / "package.xml").getroot().findtext("version").strip()


def test_the_version_is_defined_once_in_package_xml():
    assert "version" not in PYPROJECT["project"]
    assert "version" in PYPROJECT["project"]["dynamic"]
    # The installed distribution's metadata (setup.py reads package.xml at build time).
    assert importlib.metadata.version("showme") == _package_xml_version()


def test_package_data_patterns_match_files():
    for package, patterns in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        for pattern in patterns:
            assert any(p.is_file() for p in (ROOT / package).glob(pattern)), (package, pattern)


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_model_library_imports_neither_training_nor_ros():
    for path in (ROOT / "showme_model").rglob("*.py"):
        forbidden = _imported_modules(path) & {"training", "showme_ros", "rclpy"}
        assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}"
