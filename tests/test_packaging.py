"""The source distribution carries what a user needs: the licence, the whole test suite, the docs."""

import pathlib
import subprocess
import sys
import tarfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_sdist_has_licence_tests_and_docs(tmp_path):
    if not (ROOT / "setup.py").exists():
        pytest.skip("not a source checkout")
    result = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (archive,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        info = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith("/PKG-INFO")
                                    and m.name.count("/") == 1)).read().decode()
    tests_here = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py")}
    assert tests_here <= names, sorted(tests_here - names)
    assert {"LICENSE", "README.md", "docs/conf.py", "docs/theory.md", "pyproject.toml"} <= names
    # the licence in its SPDX form (the table form is deprecated)
    assert "License-Expression: BSD-3-Clause" in info
