"""Fixtures that build real projects with real sphinx-build runs and real kernels; the
helpers they use are in helpers.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from helpers import BASE_CONF, Project, ProjectFactory


@pytest.fixture
def make_project(tmp_path: Path) -> ProjectFactory:
    """``make_project(files, conf_extra="")`` writes a project with an index toctree."""

    def factory(files: dict[str, str], conf_extra: str = "", name: str = "project") -> Project:
        project = Project(tmp_path / name)
        project.write("conf.py", BASE_CONF + textwrap.dedent(conf_extra))
        docs = sorted({Path(n).with_suffix("").as_posix() for n in files})
        project.write("index.md", "# Index\n\n```{toctree}\n" + "\n".join(docs) + "\n```\n")
        for file_name, text in files.items():
            project.write(file_name, text)
        return project

    return factory
