"""Notebook instances: one template notebook, a page per parameter set, each executed and
cached on its own, with papermill's conventions in the executed notebook."""

from __future__ import annotations

import json
import re
import subprocess

from helpers import BASE_CONF, Project, ProjectFactory, code, ipynb, markdown, nbcache

TEMPLATE = ipynb(
    markdown("# Explore"),
    code("n = 2\nlabel = 'default'", tags=["parameters"]),
    code(
        "from IPython.display import SVG, display\n"
        "from myst_nb import glue\n"
        "glue('total', sum(range(n)))\n"
        "print(f'{label}: {n} rows')\n"
        "display(SVG(f'<svg xmlns=\"http://www.w3.org/2000/svg\"><text>{n}</text></svg>'))"
    ),
)

INSTANCES = """
nbcache_instances = {
    "explore": {
        "small": {"n": 3},
        "big": {"n": 30, "label": "big one"},
        "named": {"parameters": {"n": 7, "colour": "red"}, "title": "Seven rows"},
    }
}
"""

INDEX = """\
# Index

```{toctree}
:glob:
explore
explore/*
```

```{nbcache-instances} explore
:glue: total, missing
```
"""


def make(make_project: ProjectFactory) -> Project:
    project = make_project({"explore.ipynb": TEMPLATE}, INSTANCES)
    project.write("index.md", INDEX)
    project.write(".gitignore", "_build/\n.nbcache/\n")
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "project"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *command],
            cwd=project.root,
            check=True,
        )
    return project


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_instances_are_pages_executed_and_cached_each_on_its_own(
    make_project: ProjectFactory,
) -> None:
    project = make(make_project)
    first = project.build("-j", "2")
    assert first.returncode == 0, first.stderr
    assert first.executed == [
        "explore.ipynb",
        "explore/big.ipynb",
        "explore/named.ipynb",
        "explore/small.ipynb",
    ]
    small, big, named = (text_of(first.html(f"explore/{n}")) for n in ("small", "big", "named"))
    assert "Explore (small)" in small and "default: 3 rows" in small
    assert "Explore (big)" in big and "big one: 30 rows" in big
    assert "Seven rows" in named and "default: 7 rows" in named
    assert "Instance small of Explore with n=3." in small
    template = text_of(first.html("explore"))
    assert "default: 2 rows" in template and "Instance" not in template
    # each page its own figure, and its executed notebook, a papermill output, to download
    figures = {
        re.search(r'<img[^>]+src="([^"]+\.svg)"', first.html(f"explore/{n}"))[1]  # type: ignore[index]
        for n in ("small", "big", "named")
    }
    assert len(figures) == 3
    # its source beside the others, under its own name, with the template's suffix
    assert (first.outdir / "_sources" / "explore" / "big.ipynb.txt").is_file()
    link = re.search(r'href="([^"]*_downloads/[^"]+/big\.ipynb)"', first.html("explore/big"))
    assert link is not None
    executed = json.loads((first.outdir / "explore" / link[1]).resolve().read_text())
    assert executed["metadata"]["papermill"]["parameters"] == {"n": 30, "label": "big one"}
    injected = executed["cells"][2]
    assert injected["metadata"]["tags"] == ["injected-parameters"]
    assert "".join(injected["source"]) == "# Parameters\nn = 30\nlabel = 'big one'\n"
    # papermill's warning for a parameter the notebook does not define
    [unknown] = [w for w in first.warnings if "colour" in w]
    assert "explore.ipynb" in unknown and "parameter(s) 'colour' not defined" in unknown
    # the instances table: a row per instance with its parameters and glued values
    table = text_of(first.html("index"))
    assert "Instance n label colour total missing" in table
    assert "Explore (small) 3 3" in table
    assert "Explore (big) 30 'big one' 435" in table
    assert "Seven rows 7 'red' 21" in table
    missing = [w for w in first.warnings if "glued no 'missing'" in w]
    assert len(missing) == 3 and all("index.md" in w for w in missing)
    assert project.build().executed == []

    project.edit("conf.py", '"big": {"n": 30', '"big": {"n": 40')
    changed = project.build()
    assert changed.executed == ["explore/big.ipynb"]
    assert "0 added, 1 changed, 0 removed" in changed.stdout  # only that page is read
    assert "big one: 40 rows" in text_of(changed.html("explore/big"))
    assert "Explore (big) 40 'big one' 780" in text_of(changed.html("index"))

    project.edit("explore.ipynb", "rows", "lines")
    edited = project.build()
    assert len(edited.executed) == 4
    assert "default: 3 lines" in text_of(edited.html("explore/small"))
    # the template's code cells, highlighted once for all pages, shown alike on each
    pages = ("explore", "explore/small", "explore/big", "explore/named")
    shown = {n: re.findall(r"<pre>.*?</pre>", edited.html(n), re.S) for n in pages}
    [glue] = {block for blocks in shown.values() for block in blocks if "glue" in block}
    assert '<span class="n">glue</span>' in glue
    assert all(glue in shown[n] for n in pages)
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=project.root, capture_output=True, text=True
    )
    assert status.stdout.splitlines() == [" M conf.py", " M explore.ipynb"]


MYST_TEMPLATE = """\
---
file_format: mystnb
kernelspec:
  name: python3
  display_name: Python 3
nbcache:
  instances:
    one: {divisor: 1}
    zero: {divisor: 0}
---
# Divide

```{code-cell} ipython3
:tags: [parameters]
divisor = 2
```

(divide-result)=
## The result

Back to {doc}`index`.

```{code-cell} ipython3
print(10 / divisor)
```
"""


def test_instances_declared_in_the_notebook_and_a_failing_one(
    make_project: ProjectFactory,
) -> None:
    project = make_project({"divide.md": MYST_TEMPLATE})
    project.write("index.md", "# Index\n\n```{toctree}\n:glob:\ndivide\ndivide/*\n```\n")
    build = project.build()
    assert build.returncode == 0, build.stderr
    assert build.executed == ["divide.md", "divide/one.md", "divide/zero.md"]
    assert "10.0" in text_of(build.html("divide/one"))
    [failure] = [w for w in build.warnings if "ZeroDivisionError" in w]
    # located at the template's line of the failing cell, on the instance's page
    expected = "divide.md:24: WARNING: Executing notebook failed in code cell 3 of instance 'zero'"
    assert expected in failure
    assert "ZeroDivisionError" in text_of(build.html("divide/zero"))
    # the template's label stays the template's, relative references stay relative to it
    assert not [w for w in build.warnings if "duplicate label" in w or "unknown doc" in w]
    assert 'href="../index.html"' in build.html("divide/one")
    assert "10.0" in text_of(build.html("divide/one"))


def test_bad_instances_are_configuration_errors(make_project: ProjectFactory) -> None:
    project = make_project({"explore.ipynb": TEMPLATE, "explore/real.md": "# Real\n"})
    project.write(
        "conf.py",
        BASE_CONF
        + "nbcache_instances = {'explore': {'bad name': {'n': 1}, 'ok': {'n': {1, 2}}}}\n",
    )
    shapes = project.build()
    assert shapes.returncode == 2
    assert [w for w in shapes.stderr.splitlines() if "ERROR" in w] == [
        "ERROR: nbcache_instances template 'explore', instance 'bad name': the name must be "
        "letters, digits, '_', '-' or '.' (it names a page), starting with a letter or digit "
        "[nbcache.config]",
        "ERROR: nbcache_instances template 'explore', instance 'ok': parameter values must be "
        "JSON values (str, int, float, bool, None, and lists and dicts of them), not "
        "{'n': {1, 2}} [nbcache.config]",
    ]
    project.write(
        "conf.py",
        BASE_CONF + "nbcache_instances = {'nope': {'a': {}}, 'index': {'b': {}}, "
        "'explore.ipynb': {'c': {}}, "
        "'explore': {'real': {}}}\n",
    )
    project_level = project.build()
    assert project_level.returncode == 2
    assert [w for w in project_level.stderr.splitlines() if "ERROR" in w] == [
        "ERROR: nbcache_instances template 'nope' is not a document of the project "
        "[nbcache.config]",
        "ERROR: nbcache_instances template 'index' is not a notebook (index.md) [nbcache.config]",
        "ERROR: nbcache_instances template 'explore.ipynb' is not a document of the project "
        "(a docname has no suffix: 'explore') [nbcache.config]",
        "ERROR: nbcache_instances instance 'explore/real' has the name of a document of the "
        "project (explore/real.md); rename one of them [nbcache.config]",
    ]


def test_the_command_line_executes_lists_and_merges_instances(
    make_project: ProjectFactory,
) -> None:
    project = make_project(
        {"explore.ipynb": TEMPLATE}, "nbcache_instances = {'explore': {'small': {'n': 3}}}\n"
    )
    project.write("index.md", "# Index\n\n```{toctree}\n:glob:\nexplore\nexplore/*\n```\n")
    # papermill's -p: values read as YAML scalars; an ad-hoc instance is executed and cached
    adhoc = nbcache(project, "execute", "explore.ipynb", "-p", "n", "3", "-p", "label", "x y")
    assert adhoc.returncode == 0, adhoc.stderr
    assert "explore.ipynb (n=3, label='x y') executed" in adhoc.stdout
    merged = nbcache(project, "merge", "explore.ipynb", "-p", "n", "3", "-p", "label", "x y")
    assert merged.returncode == 0, merged.stderr
    outputs = json.loads(merged.stdout)["cells"][3]["outputs"]
    assert ["x y: 3 rows\n"] in [o.get("text") for o in outputs]
    # the declared instance with the same parameters as an ad-hoc run reuses its result
    project.edit("conf.py", "{'n': 3}}", "{'n': 3, 'label': 'x y'}}")
    status = nbcache(project, "status")
    assert re.search(r"explore/small\.ipynb +cached, up to date", status.stdout), status.stdout
    assert re.search(r"explore\.ipynb +never executed", status.stdout)
    build = project.build()
    assert build.executed == ["explore.ipynb"]
    out = project.root / "small.ipynb"
    written = nbcache(project, "merge", "explore.ipynb", "--instance", "small", "-o", str(out))
    assert written.returncode == 0, written.stderr
    executed = json.loads(out.read_text())
    assert executed["metadata"]["papermill"]["parameters"] == {"n": 3, "label": "x y"}
    assert "source_map" not in executed["metadata"]
    unknown = nbcache(project, "merge", "explore.ipynb", "--instance", "big")
    assert unknown.returncode == 2
    assert unknown.stderr == "nbcache: explore.ipynb: no instance 'big' (its instances: small)\n"
