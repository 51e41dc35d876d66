"""Point the CMake exports of the ROS 2 PyPI wheels at this interpreter.

The wheels' exported CMake files name the include folders of the interpreter they were built
with (``/opt/python/cpXY-cpXY/...``), which do not exist here, so building a package that
generates Python interfaces fails with "includes non-existent path". This rewrites those
folders, in ``<prefix>/share/**/*.cmake``, to this interpreter's Python and numpy include
folders. Idempotent; prints how many files it changed.
"""

import re
import sys
import sysconfig
from pathlib import Path

import numpy

BUILDER_PYTHON_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")
BUILDER_NUMPY_INCLUDE = re.compile(
    r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/(?:_core|core)/include"
)


def patch_file(path: Path, python_include: str, numpy_include: str) -> bool:
    """Rewrite one CMake file in place; return whether it changed."""
    text = path.read_text()
    patched = BUILDER_NUMPY_INCLUDE.sub(numpy_include, text)
    patched = BUILDER_PYTHON_INCLUDE.sub(python_include, patched)
    if patched == text:
        return False
    path.write_text(patched)
    return True


def main() -> None:
    """Patch every exported CMake file under the prefix given on the command line."""
    prefix = Path(sys.argv[1] if len(sys.argv) > 1 else sys.prefix)
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    changed = sum(
        patch_file(path, python_include, numpy_include)
        for path in (prefix / "share").rglob("*.cmake")
    )
    print(f"patched {changed} CMake files under {prefix / 'share'}")


if __name__ == "__main__":
    main()
