"""Give the pip distribution the version of package.xml, the ROS package manifest.

Everything else about the distribution is in pyproject.toml; the version is kept in one place.
"""

import xml.etree.ElementTree as ElementTree
from pathlib import Path

from setuptools import setup

MANIFEST = Path(__file__).resolve().with_name("package.xml")

setup(version=ElementTree.parse(MANIFEST).getroot().findtext("version").strip())
