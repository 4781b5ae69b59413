"""Developer sessions; dependencies come from pyproject.toml's dependency groups."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

import nox
from packaging.requirements import Requirement

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


def install(session: nox.Session, *groups: str, editable: bool = False) -> None:
    session.install("-e", ".") if editable else session.install(".")
    requirements = nox.project.dependency_groups(PYPROJECT, *groups)
    if requirements:
        session.install(*requirements)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite: real kernels, real caches, real sphinx-build runs."""
    install(session, "test")
    session.run("pytest", *session.posargs)


OLDEST = ("sphinx", "docutils", "myst-parser", "myst-nb")
"""What ``tests_oldest`` installs at its lower bound in pyproject.toml (the newest release
of that minor), so that the bounds say what is tested; ``tests`` gets the newest."""
OLDEST_TESTS = [
    "tests/sphinx/test_build.py",
    "tests/sphinx/test_failures.py",
    "tests/sphinx/test_settings.py",
    "tests/sphinx/test_reports.py",
    # instances add documents through Sphinx's project internals, which differ in 7.4
    "tests/sphinx/test_instances.py",
    # inheritance resolves paths to documents and notes dependencies on other documents
    "tests/sphinx/test_inherit.py",
    # resuming drives nbclient cell by cell
    "tests/sphinx/test_resume.py::test_an_edit_executes_from_the_first_changed_cell",
    "tests/cli/test_cli.py::test_status_execute_then_build_executes_nothing",
    "tests/cli/test_cli.py::test_show_lists_the_files_variables_and_packages_the_entry_depends_on",
    "tests/reliability/test_malformed.py::test_unreadable_notebook_gets_one_readable_warning",
    "tests/reliability/test_malformed.py::"
    "test_undecodable_page_that_is_no_notebook_is_shown_with_replacement_characters",
]
"""The build-level tests: what reaches Sphinx, myst-parser and myst-nb (builds, failures,
settings, reports, the command line's Sphinx application, source decoding)."""


def oldest_supported() -> list[str]:
    pins = []
    for text in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(text)
        if requirement.name in OLDEST:
            (lower,) = (s.version for s in requirement.specifier if s.operator == ">=")
            pins.append(f"{requirement.name}=={lower}.*")
    return pins


@nox.session
def tests_oldest(session: nox.Session) -> None:
    """The build-level tests on the oldest supported Sphinx, docutils, myst-parser and
    myst-nb (``nox -s tests`` runs everything on the newest)."""
    requirements = nox.project.dependency_groups(PYPROJECT, "test")
    session.install(".", *oldest_supported(), *requirements)
    session.run("pytest", *(session.posargs or OLDEST_TESTS))
    if not session.posargs:
        # myst-nb 1.1 alone matches nb_custom_formats by the last suffix (see _compat.py)
        session.install("myst-nb==1.1.*")
        session.run("pytest", "tests/sphinx/test_build.py::test_cold_build_renders_every_format")


@nox.session
def jb1(session: nox.Session) -> None:
    """``jupyter-book build`` (Jupyter Book 1) of tests/data/jb1_book through
    sphinx-nbcache, with the Sphinx, myst-parser and myst-nb that jupyter-book<2 picks."""
    session.install(".", *nox.project.dependency_groups(PYPROJECT, "jb1"))
    session.run("pytest", "tests/jb1", *session.posargs)


SOAK = {"NBCACHE_SOAK_ROUNDS": "10", "NBCACHE_SOAK_KILLS": "20", "NBCACHE_SOAK_EXAMPLES": "5000"}
"""The reliability suite's bounds at full length; ``nox -s tests`` runs it short."""


@nox.session
def soak(session: nox.Session) -> None:
    """tests/reliability at full length: more rounds of concurrent builds, more kills,
    more generated notebooks. Long; not part of ``nox -s tests``."""
    install(session, "test")
    session.run("pytest", "tests/reliability", *session.posargs, env=SOAK)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and mypy --strict."""
    install(session, "lint", editable=True)
    session.run("ruff", "check", "src", "tests", "noxfile.py", "bench")
    session.run("ruff", "format", "--check", "src", "tests", "noxfile.py", "bench")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation, built with the extension itself; warnings are errors."""
    install(session, "docs")
    out = ROOT / "docs" / "_build" / "html"
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", str(out))
    session.log(f"documentation: {out / 'index.html'}")


@nox.session
def example(session: nox.Session) -> None:
    """Build example_book/ with its notebooks executed through sphinx-nbcache."""
    install(session, "example")
    out = ROOT / "example_book" / "_build" / "html"
    session.run("sphinx-build", "-b", "html", "example_book", str(out), *session.posargs)
    session.log(f"example book: {out / 'index.html'}")


@nox.session
def nbcache(session: nox.Session) -> None:
    """The ``nbcache`` command, with the example book's packages, without installing
    anything yourself: ``nox -s nbcache -- --project example_book status``."""
    install(session, "example")
    session.run("nbcache", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Time myst-nb's cache mode against sphinx-nbcache on generated books."""
    install(session, "bench")
    session.run("python", "bench/run.py", *session.posargs)


@nox.session(venv_backend="none")
def clean(session: nox.Session) -> None:
    """Remove build outputs and caches of the docs and the example book."""
    for folder in ("docs", "example_book"):
        for name in ("_build", ".nbcache", "jupyter_execute"):
            shutil.rmtree(ROOT / folder / name, ignore_errors=True)


DIST = ROOT / "dist"


@nox.session
def build(session: nox.Session) -> None:
    """The sdist and, built from it, the wheel, checked as the package index will
    (``twine check --strict``) and for what they must carry (the sdist: every tracked
    file but the repository's dot-files, CI settings and the like); then the wheel,
    installed alone, builds the sdist's example book."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "build"))
    shutil.rmtree(DIST, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(DIST))
    (sdist,), (wheel,) = DIST.glob("*.tar.gz"), DIST.glob("*.whl")
    session.run("twine", "check", "--strict", str(sdist), str(wheel))

    with zipfile.ZipFile(wheel) as opened:
        in_wheel = set(opened.namelist())
    schemas = [f"sphinx_nbcache/schemas/{p.name}" for p in (ROOT / "src").glob("*/schemas/*.json")]
    missing = {"sphinx_nbcache/py.typed", *schemas} - in_wheel
    if missing or not schemas:
        session.error(f"{wheel.name} lacks {sorted(missing) or 'schemas/*.json'}")

    top = sdist.name.removesuffix(".tar.gz")
    with tarfile.open(sdist) as opened:
        in_sdist = {name.removeprefix(f"{top}/") for name in opened.getnames()}
    tracked = str(session.run("git", "ls-files", external=True, silent=True)).splitlines()
    missing = {name for name in tracked if not name.startswith(".")} - in_sdist
    if missing:
        session.error(f"{sdist.name} lacks {sorted(missing)}")
    built = {"_build", ".nbcache", "jupyter_execute", "__pycache__"}
    stray = sorted(name for name in in_sdist if built & set(name.split("/")))
    if stray:
        session.error(f"{sdist.name} holds build output: {stray}")

    session.install(str(wheel), *nox.project.dependency_groups(PYPROJECT, "example"))
    # this wheel, even over an earlier one of the same version
    session.install("--no-deps", "--force-reinstall", str(wheel))
    session.run("nbcache", "--version")
    unpacked = Path(session.create_tmp()) / "sdist"
    shutil.rmtree(unpacked, ignore_errors=True)
    with tarfile.open(sdist) as opened:
        opened.extractall(unpacked, filter="data")
    book = unpacked / top / "example_book"
    session.run("sphinx-build", "-q", "-b", "html", str(book), str(book / "_build" / "html"))
    session.log(f"built {sdist.name} and {wheel.name} in {DIST}")
