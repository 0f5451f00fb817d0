"""The documentation: every gallery example runs, the Sphinx build has no warnings,
and no file of the project names a path outside it."""

import os
import pathlib
import re
import runpy
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("plot_*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_gallery_example_runs(path, monkeypatch, capsys):
    monkeypatch.chdir(path.parent)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = runpy.run_path(str(path), run_name="__main__")
    # every example ends with the figure it shows, and says what it found
    assert type(namespace["figure"]).__name__ == "Figure"
    assert capsys.readouterr().out.strip()


def _project_files():
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return [ROOT / name for name in listed.stdout.split() if (ROOT / name).is_file()]


def test_no_file_names_a_path_outside_the_project():
    pattern = re.compile(r"\.\./shared|\bSPEC(\.md)?\b")
    offenders = []
    for path in _project_files():
        if path.suffix not in {".py", ".md", ".rst", ".txt", ".toml", ".cfg", ".hpp", ".cpp", ".pyx", ".pyi", ""}:
            continue
        if path == pathlib.Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:80]}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("numpydoc")
    pytest.importorskip("sphinx_gallery")
    pytest.importorskip("myst_parser")
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    # the examples run in test_gallery_example_runs: here the build only renders them
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
               "-D", "sphinx_gallery_conf.plot_gallery=0", "-d", str(tmp_path / "doctrees"),
               str(ROOT / "docs"), str(tmp_path / "html")]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]
