#!/usr/bin/env python3
"""Generate a synthetic Sphinx book of executable notebooks, for benchmarks.

    make_book.py OUTDIR [--notebooks N] [--work SECONDS] [--cells C]
                        [--extension NAME] [--mode MODE] [--formats ipynb,md,py]

Each notebook has C code cells that together keep the kernel busy for SECONDS: half a CPU
loop, half a sleep, so that both parallelism across kernels and kernel start-up cost show.
Notebooks rotate through the given formats: .ipynb, MyST markdown notebooks (.md) and
jupytext percent scripts (.py). conf.py loads --extension with nb_execution_mode = --mode.

A copy of shared/tools/make_book.py, kept here so that the benchmark is self-contained;
``bench/run.py`` imports :func:`make_book`. One difference: a MyST notebook's kernelspec
names its language, as jupytext writes it and as the other two formats do. Without it,
myst-nb with execution off finds no lexer for the code cells of a MyST notebook: it warns
once per cell and leaves them unhighlighted, a cheaper build than any user keeps. And
:func:`make_book` can also write loops of a fixed number of steps (``steps``).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import time
from collections.abc import Callable, Sequence


def code_cells(i: int, cells: int, work: float, steps: int | None = None) -> list[str]:
    """Sources of notebook ``i``'s code cells; the first sets the constant ``N{i} = {i}``.

    A cell's CPU loop runs for half its share of ``work``, or ``steps`` times when given:
    the same arithmetic however many kernels share the CPUs (see :func:`loop_steps`)."""
    per = work / max(cells, 1)
    src = [f"import time, math\nN{i} = {i}\nprint('notebook', N{i})"]
    for c in range(cells):
        loop = (
            f"t = time.time()\nx = 0.0\nwhile time.time() - t < {per / 2:.3f}:"
            if steps is None
            else f"x = 0.0\nfor _ in range({steps}):"
        )
        src.append(
            f"{loop}\n    x += math.sqrt(x + {c})\n"
            f"time.sleep({per / 2:.3f})\nprint('cell {c}', x >= 0)"
        )
    src.append(f"{{'notebook': N{i}, 'squares': [k * k for k in range(5)]}}")
    return src


def write_ipynb(path: pathlib.Path, i: int, srcs: list[str]) -> None:
    cells: list[dict[str, object]] = [
        {"cell_type": "markdown", "metadata": {}, "source": f"# Notebook {i}\n\nSome prose."}
    ]
    cells += [
        {"cell_type": "code", "metadata": {}, "source": s, "outputs": [], "execution_count": None}
        for s in srcs
    ]
    nb = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 4,
    }
    path.write_text(json.dumps(nb, indent=1))


def write_md(path: pathlib.Path, i: int, srcs: list[str]) -> None:
    head = (
        "---\nfile_format: mystnb\nkernelspec:\n  name: python3\n  display_name: Python 3\n"
        "  language: python\n---\n\n"
        f"# Notebook {i}\n\nSome prose.\n\n"
    )
    path.write_text(head + "\n\n".join(f"```{{code-cell}} ipython3\n{s}\n```" for s in srcs) + "\n")


def write_py(path: pathlib.Path, i: int, srcs: list[str]) -> None:
    head = (
        "# ---\n# jupyter:\n#   kernelspec:\n#     display_name: Python 3\n"
        "#     language: python\n"
        f"#     name: python3\n# ---\n\n# %% [markdown]\n# # Notebook {i}\n#\n# Some prose.\n\n"
    )
    path.write_text(head + "\n\n".join(f"# %%\n{s}" for s in srcs) + "\n")


WRITERS: dict[str, Callable[[pathlib.Path, int, list[str]], None]] = {
    "ipynb": write_ipynb,
    "md": write_md,
    "py": write_py,
}


def make_book(
    out: pathlib.Path,
    *,
    notebooks: int = 12,
    work: float = 1.0,
    cells: int = 4,
    steps: int | None = None,
    extension: str = "myst_nb",
    mode: str = "cache",
    formats: Sequence[str] = ("ipynb", "md"),
) -> list[str]:
    """Write the book into ``out``; returns the notebooks' docnames (``nb000``, ...)."""
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(notebooks):
        fmt = formats[i % len(formats)]
        name = f"nb{i:03d}"
        names.append(name)
        WRITERS[fmt](out / f"{name}.{fmt}", i, code_cells(i, cells, work, steps))
    (out / "index.md").write_text("# Bench book\n\n```{toctree}\n" + "\n".join(names) + "\n```\n")
    conf = [
        "project = 'bench'",
        f"extensions = [{extension!r}]",
        f"nb_execution_mode = {mode!r}",
        "nb_execution_timeout = 300",
        "exclude_patterns = ['_build', 'jupyter_execute', '.*', 'conf.py']",
    ]
    if "py" in formats:
        conf.append("nb_custom_formats = {'.py': ['jupytext.reads', {'fmt': 'py:percent'}]}")
    (out / "conf.py").write_text("\n".join(conf) + "\n")
    return names


def loop_steps(seconds: float, trials: int = 5) -> int:
    """Steps of a cell's CPU loop that take ``seconds`` on one idle CPU of this machine,
    run as a kernel runs a cell: module-level code in a fresh namespace. The fastest of a
    few trials, as the least disturbed by other work."""
    probe = 200_000
    code = compile(f"for _ in range({probe}):\n    x += math.sqrt(x + 1)", "<cell>", "exec")
    fastest = math.inf
    for _ in range(trials):
        namespace = {"math": math, "x": 0.0}
        start = time.perf_counter()
        exec(code, namespace)
        fastest = min(fastest, time.perf_counter() - start)
    return max(1, round(seconds / fastest * probe))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("out")
    p.add_argument("--notebooks", type=int, default=12)
    p.add_argument("--work", type=float, default=1.0, help="seconds of kernel work per notebook")
    p.add_argument("--cells", type=int, default=4)
    p.add_argument("--extension", default="myst_nb")
    p.add_argument("--mode", default="cache")
    p.add_argument("--formats", default="ipynb,md")
    a = p.parse_args()
    formats = a.formats.split(",")
    out = pathlib.Path(a.out)
    make_book(
        out,
        notebooks=a.notebooks,
        work=a.work,
        cells=a.cells,
        extension=a.extension,
        mode=a.mode,
        formats=formats,
    )
    print(f"wrote {a.notebooks} notebooks ({','.join(formats)}) to {out}")


if __name__ == "__main__":
    main()
