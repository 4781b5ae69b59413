#!/usr/bin/env python3
"""Time myst-nb's own ``cache`` mode against sphinx-nbcache on generated books.

Run by ``nox -s bench`` (or ``python bench/run.py``). Each number is the wall-clock time of
one ``python -m sphinx -q -b html SRC OUT`` subprocess of this interpreter, so interpreter
start-up, kernels and HTML writing all count, as they do for a user.

A. ``--notebooks`` notebooks with ``--work`` seconds of kernel work each, one copy of the book
   per tool: *cold* (empty cache, fresh ``_build``; myst-nb also with ``-j 2``), *warm*
   (cache kept, fresh ``_build``) and *edit* (one notebook's code changed, incremental
   rebuild of the warm ``_build``).
B. ``--big`` notebooks with little work: *cold* builds, where kernel start-up is all the
   cost (myst-nb, sphinx-nbcache, sphinx-nbcache with normal kernels); sphinx-nbcache
   *warm* against myst-nb with ``nb_execution_mode = "off"``, i.e. what serving everything
   from the cache costs; *no-op* rebuilds of both tools; the sphinx-build process's peak
   memory for each.
   With ``--instructions``, the warm, off and no-op builds of B are also counted in CPU
   instructions under valgrind's callgrind, which the machine's other work does not move:
   the ratios that timings on a noisy machine cannot resolve to a few percent.
C. Discovery: the executor alone, with and without recording what each notebook reads.
D. ``--plots`` notebooks importing numpy, pandas and matplotlib and drawing one plot, cold:
   myst-nb, sphinx-nbcache with normal and with forked kernels, and with those modules
   preloaded.
E. The A book executed on a local Dask cluster (``LocalCluster`` of 2 worker processes,
   one thread each) against the local pool: the overhead of going through Dask.
F. ``--instances`` notebook instances of one ``--work``-second template notebook, cold:
   sphinx-nbcache (a page per instance) against the recipe it replaces, papermill's
   ``execute_notebook`` in a ``multiprocessing.Pool(2)`` writing the executed notebooks;
   then sphinx-nbcache warm, which must execute nothing.
G. Kernel state inheritance: a parent notebook with 10 s of CPU work and four chapters of
   0.5 s that start from its final state, cold, against the same chapters each repeating
   the parent's code (sphinx-nbcache, and myst-nb); then a chapter's prose and its code
   edited, incremental builds.
H. Resume from the first changed cell: one notebook of 10 cells of 2 s of CPU work each,
   cold with ``nbcache_resume`` on (checkpoints of the kernel state kept as it runs) and
   off, then its last cell edited, incremental builds: what the checkpoints cost cold,
   and what resuming from the last one saves.

Every build's return code is checked and every page is checked for the outputs it must (or,
with execution off, must not) show, so a silently failed notebook cannot pass for a fast one.
The tables go to stdout and to ``bench/_books/results.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from make_book import code_cells, loop_steps, make_book, write_ipynb

HERE = Path(__file__).resolve().parent
BOOKS = HERE / "_books"
RESULTS = BOOKS / "results.md"
FORMATS = ("ipynb", "md")
CELLS = 4
"""Work cells per notebook in A (make_book's default)."""
BIG_WORK = 0.05
"""Seconds of kernel work per notebook in B: enough to execute, too little to matter."""
BIG_CELLS = 2
BUILD_TIMEOUT = 3600
"""Seconds before a hung build counts as failed (a kernel that never answers, say)."""
NOOP_ROUNDS = 5
"""No-op rebuilds take a second, so a few more rounds cost little and steady the ratio."""
EDIT_BASE = 1000
"""Edits set notebook 0's constant to ``EDIT_BASE + repetition``: a new value each time, so
every edit is a real cache miss for both tools."""
SPEEDUP_TARGET = 3.0
SERIAL_TARGET = 4.0
PARALLEL_TARGET = 2.0
WARM_OVERHEAD_TARGET = 1.10
WARM_SCALE_TARGET = 1.05
TINY_TARGET = 3.0
WARM_PATH_TARGET_MS = 2.0
PRELOAD_TARGET = 2.0
PLOT_MODULES = ["numpy", "pandas", "matplotlib.pyplot"]
VERSIONS = ("sphinx", "myst-nb", "myst-parser", "jupyter-cache", "nbclient", "ipykernel")


class BenchError(Exception):
    """A build failed or produced wrong pages: the numbers would mean nothing."""


@dataclasses.dataclass
class Book:
    """One generated book, and the constant each notebook's first cell currently prints."""

    label: str
    src: Path
    constants: dict[str, int]
    executes: bool
    """False for ``nb_execution_mode = "off"``: pages must then show no outputs."""
    build_args: tuple[str, ...] = ()
    """Extra ``sphinx-build`` options, such as ``-j 2``."""
    peak_mb: dict[str, float] = dataclasses.field(default_factory=dict)
    """Highest resident memory of the sphinx-build process (not its kernels), per kind
    of build."""
    images: bool = False
    """Pages must also show a plot."""

    @property
    def build_dir(self) -> Path:
        return self.src / "_build"

    @property
    def html_dir(self) -> Path:
        return self.build_dir / "html"

    def wipe_build(self) -> None:
        """Drop HTML, doctrees (``html/.doctrees``) and myst-nb's ``jupyter_execute``."""
        shutil.rmtree(self.build_dir, ignore_errors=True)

    def wipe_caches(self) -> None:
        """Drop both tools' caches and the build, for a cold start."""
        self.wipe_build()
        for name in (".jupyter_cache", ".nbcache"):
            shutil.rmtree(self.src / name, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class Size:
    """How big a book is: notebooks, seconds of kernel work each, work cells each, and
    the steps of each cell's CPU loop when they are counted rather than timed."""

    notebooks: int
    work: float
    cells: int
    steps: int | None = None


def generate(
    label: str,
    src: Path,
    size: Size,
    *,
    extension: str,
    mode: str,
    extra_conf: Sequence[str] = (),
    formats: Sequence[str] = FORMATS,
) -> Book:
    """Write a book whose myst-nb cache lives beside conf.py, outside ``_build``.

    Then deleting ``_build`` keeps both tools' caches, and "warm" means the same for both.
    """
    names = make_book(
        src,
        notebooks=size.notebooks,
        work=size.work,
        cells=size.cells,
        steps=size.steps,
        extension=extension,
        mode=mode,
        formats=formats,
    )
    lines = [f"nb_execution_cache_path = {str(src / '.jupyter_cache')!r}", *extra_conf]
    with (src / "conf.py").open("a") as conf:
        conf.write("\n".join(lines) + "\n")
    return Book(label, src, {name: index for index, name in enumerate(names)}, mode != "off")


def plot_book(
    label: str, src: Path, notebooks: int, *, extension: str, extra_conf: Sequence[str] = ()
) -> Book:
    """Notebooks that import numpy, pandas and matplotlib, make a DataFrame and draw one
    plot: what many docs notebooks do, and where kernel start-up is mostly imports."""
    book = generate(
        label,
        src,
        Size(notebooks, 0, 0),
        extension=extension,
        mode="cache",
        extra_conf=extra_conf,
        formats=("ipynb",),
    )
    for name, i in book.constants.items():
        cells = [
            "import matplotlib.pyplot as plt\nimport numpy as np\nimport pandas as pd",
            f"N{i} = {i}\nx = np.linspace(0, 2 * np.pi, 200)\n"
            f"frame = pd.DataFrame({{'x': x, 'y': np.sin(x + N{i})}})\nframe.describe()",
            "frame.plot(x='x', y='y')\nplt.show()",
            f"{{'notebook': N{i}, 'squares': [k * k for k in range(5)]}}",
        ]
        write_ipynb(src / f"{name}.ipynb", i, cells)
    book.images = True
    return book


def outputs_book(executed: Book, src: Path) -> Book:
    """The executed notebooks that ``executed`` wrote to ``jupyter_execute``, as a book that
    myst-nb renders with execution off: the cost of rendering those outputs with no cache."""
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for name in executed.constants:
        shutil.copy(executed.build_dir / "jupyter_execute" / f"{name}.ipynb", src)
    shutil.copy(executed.src / "index.md", src)
    conf = [
        "project = 'bench'",
        "extensions = ['myst_nb']",
        "nb_execution_mode = 'off'",
        "exclude_patterns = ['_build', 'jupyter_execute', '.*']",
    ]
    (src / "conf.py").write_text("\n".join(conf) + "\n", encoding="utf-8")
    return Book("big floor", src, dict(executed.constants), executes=True)


def sphinx_arguments(book: Book, quiet: bool = True) -> list[str]:
    return [
        *(["-q"] if quiet else []),
        "-b",
        "html",
        *book.build_args,
        str(book.src),
        str(book.html_dir),
    ]


def sphinx_build(book: Book, what: str) -> float:
    """Seconds of one checked ``sphinx-build -q -b html`` run; raises on any failure."""
    return sphinx_run(book, what)[0]


def sphinx_run(
    book: Book, what: str, *, env: Mapping[str, str] | None = None, quiet: bool = True
) -> tuple[float, str]:
    """Seconds of one checked ``sphinx-build -b html`` run (``-q`` unless not ``quiet``),
    with ``env`` as its environment (None: this process's), and its standard output:
    Sphinx's log, empty when quiet. Raises on any failure."""
    command = [sys.executable, "-c", PEAK_WRAPPER, *sphinx_arguments(book, quiet)]
    print(f"  {book.label:<14} {what:<6} ...", end=" ", flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            timeout=BUILD_TIMEOUT,
            env=None if env is None else dict(env),
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{' '.join(command)} still running after {exc.timeout} s") from exc
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(
            f"{' '.join(command)} exited with {proc.returncode}\n"
            f"--- stdout\n{_tail(proc.stdout)}\n--- stderr\n{_tail(proc.stderr)}"
        )
    check_pages(book, proc.stderr)
    peaks = [
        float(line.split()[1]) / 1024 for line in proc.stderr.splitlines() if line.startswith(PEAK)
    ]
    if peaks:
        book.peak_mb[what] = max(book.peak_mb.get(what, 0.0), peaks[-1])
    warnings = sphinx_warnings(proc.stderr)
    note = f"  ({len(warnings)} Sphinx warning(s), first: {warnings[0]})" if warnings else ""
    print(f"{seconds:7.2f} s{note}", flush=True)
    return seconds, proc.stdout


COLLECTED = re.compile(r"^==\d+== Collected : (\d+)$", re.M)


def count_instructions(book: Book, what: str, prepare: Callable[[], None]) -> int:
    """CPU instructions of one checked ``sphinx-build -q -b html`` run under callgrind.

    Only the build process counts (kernels are its children, not traced), with a fixed
    hash seed, so the same build gives the same count to a fraction of a percent.
    """
    prepare()
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "sphinx",
        *sphinx_arguments(book),
    ]
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        timeout=BUILD_TIMEOUT,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = COLLECTED.search(proc.stderr)
    if proc.returncode != 0 or found is None:
        raise BenchError(f"{' '.join(command)} exited with {proc.returncode}\n{_tail(proc.stderr)}")
    check_pages(book, proc.stderr)
    count = int(found.group(1))
    print(f"  {book.label:<14} {what:<6} ... {count / 1e9:7.2f} G instructions", flush=True)
    return count


def counted(chains: Sequence[Sequence[Run]], cpus: int) -> list[list[int]]:
    """Instruction counts of each chain of builds; chains run side by side (a count does not
    depend on what runs beside it), the builds of one chain one after another."""

    def run_chain(chain: Sequence[Run]) -> list[int]:
        return [count_instructions(book, what, prepare) for book, what, prepare in chain]

    with concurrent.futures.ThreadPoolExecutor(max_workers=cpus) as workers:
        return list(workers.map(run_chain, chains))


PEAK = "nbcache-bench-peak-kb"
PEAK_WRAPPER = (
    "import resource, sys\n"
    "from sphinx.cmd.build import main\n"
    "code = main(sys.argv[1:])\n"
    f"print('{PEAK}', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)
"""``python -m sphinx`` that also prints its own peak resident memory (Linux: KiB)."""


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def sphinx_warnings(stderr: str) -> list[str]:
    """Sphinx's own warnings; kernels' ``[IPKernelApp] WARNING |`` chatter is not one."""
    return [line for line in stderr.splitlines() if "WARNING:" in line or "ERROR:" in line]


def check_pages(book: Book, stderr: str) -> None:
    """Every page shows its notebook's last output for the current code, or none if off.

    A notebook that failed to execute is only a warning for both tools: without this check
    it would look like a fast build.
    """
    for name, constant in book.constants.items():
        page = book.html_dir / f"{name}.html"
        if not page.is_file():
            raise BenchError(f"{book.label}: {page} was not written\n{_tail(stderr)}")
        last_output = f"{{'notebook': {constant}, 'squares': [0, 1, 4, 9, 16]}}"
        html = page.read_text(encoding="utf-8")
        shows = f"</span>{last_output}" in html
        if shows != book.executes:
            expected = f"the last cell's output {last_output}" if book.executes else "no outputs"
            raise BenchError(f"{book.label}: {page} does not show {expected}\n{_tail(stderr)}")
        if book.images and "<img " not in html:
            raise BenchError(f"{book.label}: {page} shows no plot\n{_tail(stderr)}")


def edit_constant(book: Book, name: str, value: int) -> None:
    """Change the constant in ``name``'s first code cell: its code, hence its key, changes."""
    (path,) = (p for p in book.src.glob(f"{name}.*") if p.suffix in {".ipynb", ".md"})
    index = int(name.removeprefix("nb"))
    text = path.read_text(encoding="utf-8")
    pattern = rf"N{index} = {book.constants[name]}(?!\d)"
    new_text, count = re.subn(pattern, f"N{index} = {value}", text)
    if count != 1:
        raise BenchError(f"{path}: expected one match of {pattern!r}, found {count}")
    path.write_text(new_text, encoding="utf-8")
    book.constants[name] = value


Run = tuple[Book, str, Callable[[], None]]
"""One build to time: the book, what kind of build it is, and what to do before it."""


def interleaved(repeat: int, runs: Sequence[Run]) -> list[float]:
    """The minimum over ``repeat`` runs of each build (the least disturbed by whatever else
    the machine did), taken in rounds that run every build once in turn, so that the
    machine's drift during the bench hits the builds compared alike."""
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeat):
        for found, (book, what, prepare) in zip(times, runs, strict=True):
            prepare()
            found.append(sphinx_build(book, what))
    return [min(found) for found in times]


def unchanged() -> None:
    """Before a no-op rebuild: nothing."""


def cold_runs(*books: Book) -> list[Run]:
    return [(book, "cold", book.wipe_caches) for book in books]


def cold_times(repeat: int, *books: Book) -> dict[str, float]:
    """Cold builds (empty caches and ``_build``) of ``books``, interleaved, by label."""
    times = interleaved(repeat, cold_runs(*books))
    return {book.label: seconds for book, seconds in zip(books, times, strict=True)}


@dataclasses.dataclass(frozen=True)
class ToolTimes:
    warm: float
    edit: float


def warm_and_edit(book: Book, repeat: int) -> ToolTimes:
    """warm (fresh ``_build``, caches kept) each followed by one edit and incremental rebuild."""
    warm_times, edit_times = [], []
    edited = next(iter(book.constants))
    for rep in range(repeat):
        book.wipe_build()
        warm_times.append(sphinx_build(book, "warm"))
        edit_constant(book, edited, EDIT_BASE + rep)
        edit_times.append(sphinx_build(book, "edit"))
    return ToolTimes(min(warm_times), min(edit_times))


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if denominator > 0 else "n/a"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table, padded so that it also reads well as plain text."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            f":{'-' * (w + 1)}" if i == 0 else f"{'-' * (w + 1)}:" for i, w in enumerate(widths)
        )
        + "|"
    )
    return [line(header), rule, *(line(row) for row in rows)]


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def nbcache_pool(setting: int | None) -> str:
    """How many kernels sphinx-nbcache runs at once, as its build log says it."""
    from sphinx_nbcache.run.pool import describe_pool, make_pool

    return describe_pool(make_pool(setting))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notebooks", type=int, help="notebooks in A (default 12, quick 4)")
    parser.add_argument("--work", type=float, help="seconds of work per notebook in A (1, 0.3)")
    parser.add_argument("--big", type=int, help="notebooks in B (default 200, quick 20)")
    parser.add_argument("--plots", type=int, help="notebooks in D (default 20, quick 4)")
    parser.add_argument(
        "--instances", type=int, help="notebook instances in F (default 24, quick 6)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; min is kept")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument(
        "--sections",
        default="ABCDEFGH",
        help="which sections to run, e.g. B (default: ABCDEFGH, all of them)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count B's warm, off and no-op builds in instructions (needs valgrind; slow)",
    )
    parser.add_argument(
        "--nbcache-workers",
        type=int,
        help="set nbcache_workers in conf.py (default: unset, i.e. adapt to the machine)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.notebooks = args.notebooks if args.notebooks is not None else (4 if quick else 12)
    args.work = args.work if args.work is not None else (0.3 if quick else 1.0)
    args.big = args.big if args.big is not None else (20 if quick else 200)
    args.plots = args.plots if args.plots is not None else (4 if quick else 20)
    args.instances = args.instances if args.instances is not None else (6 if quick else 24)
    for name in ("notebooks", "big", "plots", "instances", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.work < 0:
        parser.error("--work must not be negative")
    if args.nbcache_workers is not None and args.nbcache_workers < 1:
        parser.error("--nbcache-workers must be at least 1")
    args.sections = args.sections.upper()
    if not args.sections or set(args.sections) - set("ABCDEFGH"):
        parser.error("--sections takes letters among A, B, C, D, E, F, G and H")
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind on PATH")
    return args


def run(args: argparse.Namespace) -> list[str]:
    """Generate the books, time every build, and return the report's lines."""
    shutil.rmtree(BOOKS, ignore_errors=True)
    BOOKS.mkdir(parents=True)
    load_before = os.getloadavg()[0]
    extra = [] if args.nbcache_workers is None else [f"nbcache_workers = {args.nbcache_workers}"]
    pool = nbcache_pool(args.nbcache_workers)
    cpus = os.cpu_count() or 1

    sections: dict[str, tuple[str, Callable[[], list[str]]]] = {
        "A": (
            f"A: {args.notebooks} notebooks x {args.work:g} s of work, best of {args.repeat}",
            lambda: section_a(args, extra, cpus),
        ),
        "B": (
            f"B: {args.big} notebooks x {BIG_WORK:g} s of work, best of {args.repeat}",
            lambda: section_b(args, extra, cpus),
        ),
        "C": (
            f"C: {DISCOVERY_NOTEBOOKS} notebooks of each kind, without and with discovery",
            lambda: section_c(args),
        ),
        "D": (
            f"D: {args.plots} plotting notebooks, best of {args.repeat}",
            lambda: section_d(args, extra),
        ),
        "E": (
            f"E: {args.notebooks} notebooks on a local Dask cluster, best of {args.repeat}",
            lambda: section_e(args, extra),
        ),
        "F": (
            f"F: {args.instances} instances of a {args.work:g}-s notebook, best of {args.repeat}",
            lambda: section_f(args, extra),
        ),
        "G": (
            f"G: {CHILDREN} chapters inheriting a parent's state, best of {args.repeat}",
            lambda: section_g(args, extra),
        ),
        "H": (
            f"H: a notebook of {RESUME_CELLS} cells x {RESUME_WORK:g} s, its last cell edited,"
            f" best of {args.repeat}",
            lambda: section_h(args, extra),
        ),
    }
    lines: list[str] = []
    for letter in sorted(set(args.sections)):
        announce, section = sections[letter]
        print(announce)
        lines += ["", *section()]
    load_after = os.getloadavg()[0]
    versions = ", ".join(f"{name} {package_version(name)}" for name in VERSIONS)
    pool_why = "nbcache_workers set" if args.nbcache_workers else "the default"
    return [
        "# sphinx-nbcache benchmark",
        "",
        f"- machine: Python {platform.python_version()}, {cpus} CPU(s), 1-minute load"
        f" average {load_before:.2f} before and {load_after:.2f} after (other work skews it all)",
        f"- versions: {versions}, sphinx-nbcache {package_version('sphinx-nbcache')}",
        f"- sphinx-nbcache ran {pool} ({pool_why})",
        f"- each number: wall-clock seconds of `sphinx-build -q -b html`, best of {args.repeat};"
        " memory: the highest resident memory of the sphinx-build process itself (kernels are"
        " processes of their own)",
        *lines,
    ]


def section_c(args: argparse.Namespace) -> list[str]:
    """What recording each notebook's reads costs the executor, on light notebooks and on
    notebooks whose imports open a thousand files (the audit hook's worst case)."""
    rows, ratios = [], []
    for kind in DISCOVERY_KINDS:
        plain, discovering = discovery_overhead(kind, args.work, args.repeat)
        cpu = discovering.cpu / plain.cpu
        ratios.append(cpu)
        for label, run in (("without discovery", plain), ("with discovery", discovering)):
            rows.append(
                [
                    f"{kind}, {label}",
                    f"{run.seconds:.2f}",
                    f"{run.cpu:.3f}",
                    ratio(run.cpu, plain.cpu),
                ]
            )
    worst = max(ratios)
    return [
        f"## C. Discovery: {DISCOVERY_NOTEBOOKS} notebooks of each kind, each reading a data"
        " file, executed one at a time by sphinx-nbcache's pool",
        "",
        *table(["notebooks", "seconds", "kernel CPU per notebook (s)", "CPU ratio"], rows),
        "",
        "Kernel CPU: each kernel's own CPU time from its start to the end of its last cell"
        " (the mean over the notebooks, best of the rounds), which the machine's other work"
        f" does not inflate. With / without, at worst = {worst:.3f}"
        f" (target <= {DISCOVERY_TARGET:.2f}): " + verdict(worst <= DISCOVERY_TARGET) + ".",
    ]


def timed_row(what: str, seconds: float, versus: str) -> list[str]:
    return [what, f"{seconds:.2f}", versus]


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


UNFROZEN = ("-D", "nbcache_gc_freeze=0")
"""sphinx-build options that leave the garbage collector as it is without sphinx-nbcache."""
NORMAL = "nbcache_fork_kernels = False"
"""conf.py line that starts every kernel as a new interpreter instead of forking it."""


def nbcache_book(label: str, src: Path, size: Size, extra_conf: Sequence[str]) -> Book:
    return generate(
        label, src, size, extension="sphinx_nbcache", mode="cache", extra_conf=extra_conf
    )


def section_a(args: argparse.Namespace, extra: list[str], cpus: int) -> list[str]:
    """Notebooks with real work: myst-nb serial and ``-j 2`` against sphinx-nbcache."""
    size = Size(args.notebooks, args.work, CELLS)
    mystnb = generate("myst-nb", BOOKS / "a-mystnb", size, extension="myst_nb", mode="cache")
    nbcache = nbcache_book("nbcache", BOOKS / "a-nbcache", size, extra)
    fixed = nbcache_book(
        f"nbcache x{cpus}", BOOKS / "a-nbcache-fixed", size, [f"nbcache_workers = {cpus}"]
    )
    normal = nbcache_book("nbcache normal", BOOKS / "a-nbcache-normal", size, [*extra, NORMAL])
    parallel = dataclasses.replace(mystnb, label="myst-nb -j 2", build_args=("-j", "2"))
    counted = dataclasses.replace(size, steps=loop_steps(args.work / CELLS / 2))
    mystnb_c = generate(
        "myst-nb steps", BOOKS / "a-mystnb-steps", counted, extension="myst_nb", mode="cache"
    )
    parallel_c = dataclasses.replace(mystnb_c, label="myst-nb steps -j 2", build_args=("-j", "2"))
    nbcache_c = nbcache_book("nbcache steps", BOOKS / "a-nbcache-steps", counted, extra)
    cold_m, cold_j2, *colds, cold_mc, cold_j2c, cold_c = interleaved(
        args.repeat,
        cold_runs(mystnb, parallel, nbcache, normal, fixed, mystnb_c, parallel_c, nbcache_c),
    )
    times_m = warm_and_edit(mystnb, args.repeat)
    times = [warm_and_edit(book, args.repeat) for book in (nbcache, normal, fixed)]
    default, spawned = colds[0], colds[1]
    cpu_work = args.notebooks * args.work / 2  # half of each notebook's work is a sleep
    lower = max(cpu_work / cpus, args.work) + times[0].warm
    serial_c, against_j2_c = cold_mc / cold_c, cold_j2c / cold_c

    def row(what: str, baseline: float, ours: list[float]) -> list[str]:
        cells = [what, f"{baseline:.2f}"]
        for seconds in ours:
            cells += [f"{seconds:.2f}", ratio(baseline, seconds)]
        return cells

    rows = [
        row("cold (empty cache, fresh _build)", cold_m, colds),
        row("cold, myst-nb with -j 2", cold_j2, colds),
        row("warm (cache kept, fresh _build)", times_m.warm, [t.warm for t in times]),
        row("edit (1 notebook changed, incremental)", times_m.edit, [t.edit for t in times]),
    ]
    serial, against_j2 = cold_m / default, cold_j2 / default
    return [
        f"## A. {args.notebooks} notebooks x {args.work:g} s of work ({', '.join(FORMATS)})",
        "",
        *table(
            [
                "build",
                "myst-nb cache (s)",
                "nbcache (s)",
                "ratio",
                "nbcache, normal kernels (s)",
                "ratio",
                f"nbcache, fixed {cpus} workers (s)",
                "ratio",
            ],
            rows,
        ),
        "",
        "Ratios are myst-nb / sphinx-nbcache; *normal kernels* is `nbcache_fork_kernels ="
        f" False`. Cold, by default: {serial:.2f}x myst-nb serial and {against_j2:.2f}x"
        f" myst-nb -j 2; with normal kernels: {cold_m / spawned:.2f}x and"
        f" {cold_j2 / spawned:.2f}x. Targets: >="
        f" {SPEEDUP_TARGET:g}x serial ({verdict(serial >= SPEEDUP_TARGET)}), at scale >="
        f" {SERIAL_TARGET:g}x serial ({verdict(serial >= SERIAL_TARGET)}) and >="
        f" {PARALLEL_TARGET:g}x -j 2 ({verdict(against_j2 >= PARALLEL_TARGET)})."
        f" Lower bound {lower:.2f} s: the notebooks' CPU work ({cpu_work:g} s) over {cpus}"
        f" CPUs, or one notebook's {args.work:g} s if longer, plus the warm build. The CPU"
        " loops run for a set time, so when notebooks share a CPU each does less arithmetic"
        " in it, and a build running more at once than CPUs can come under that bound.",
        "",
        "The same notebooks with each cell's loop counted instead of timed: a fixed number"
        f" of steps, which takes {args.work / CELLS / 2:g} s on an idle CPU of this machine"
        " as the timed loop does. The arithmetic is then the same however many notebooks"
        " share the CPUs, and the lower bound holds.",
        "",
        *table(
            ["build", "myst-nb cache (s)", "nbcache (s)", "ratio"],
            [
                [
                    "cold (empty cache, fresh _build)",
                    f"{cold_mc:.2f}",
                    f"{cold_c:.2f}",
                    f"{serial_c:.2f}",
                ],
                [
                    "cold, myst-nb with -j 2",
                    f"{cold_j2c:.2f}",
                    f"{cold_c:.2f}",
                    f"{against_j2_c:.2f}",
                ],
            ],
        ),
        "",
        f"With loops of fixed steps: {serial_c:.2f}x myst-nb serial"
        f" ({verdict(serial_c >= SERIAL_TARGET)} at >= {SERIAL_TARGET:g}x) and"
        f" {against_j2_c:.2f}x myst-nb -j 2"
        f" ({verdict(against_j2_c >= PARALLEL_TARGET)} at >= {PARALLEL_TARGET:g}x).",
    ]


def section_b(args: argparse.Namespace, extra: list[str], cpus: int) -> list[str]:
    """Many tiny notebooks: kernel start-up cold, and the cost of the cache when warm."""
    size = Size(args.big, BIG_WORK, BIG_CELLS)
    mystnb = generate("tiny myst-nb", BOOKS / "b-mystnb", size, extension="myst_nb", mode="cache")
    big = nbcache_book("tiny nbcache", BOOKS / "b-nbcache", size, extra)
    normal = nbcache_book("tiny normal", BOOKS / "b-normal", size, [*extra, NORMAL])
    off = generate("tiny off", BOOKS / "b-off", size, extension="myst_nb", mode="off")
    cold_m, cold_n, cold_s = interleaved(args.repeat, cold_runs(mystnb, big, normal))
    floor = outputs_book(big, BOOKS / "b-floor")
    unfrozen = dataclasses.replace(
        big, label="tiny nbcache unfrozen", build_args=UNFROZEN, peak_mb={}
    )
    warm, off_time, floor_time, unfrozen_warm = interleaved(
        args.repeat,
        [
            (book, what, book.wipe_build)
            for book, what in ((big, "warm"), (off, "off"), (floor, "floor"), (unfrozen, "warm"))
        ],
    )
    noop_m, noop_n = interleaved(
        max(NOOP_ROUNDS, args.repeat), [(mystnb, "no-op", unchanged), (big, "no-op", unchanged)]
    )
    per_notebook = warm_path(big)
    instructions = (
        instruction_lines(
            counted(
                [
                    [(mystnb, "no-op", unchanged)],
                    [(big, "no-op", unchanged), (big, "warm", big.wipe_build)],
                    [(off, "off", off.wipe_build)],
                    [(floor, "floor", floor.wipe_build)],
                ],
                cpus,
            )
        )
        if args.instructions
        else []
    )

    def memory(book: Book, what: str) -> str:
        return f"{book.peak_mb[what]:.0f}" if what in book.peak_mb else "n/a"

    rows = [
        ["myst-nb cache, cold", f"{cold_m:.2f}", ratio(cold_m, off_time), memory(mystnb, "cold")],
        ["sphinx-nbcache cold", f"{cold_n:.2f}", ratio(cold_n, off_time), memory(big, "cold")],
        [
            "sphinx-nbcache cold, normal kernels (nbcache_fork_kernels = False)",
            f"{cold_s:.2f}",
            ratio(cold_s, off_time),
            memory(normal, "cold"),
        ],
        [
            "sphinx-nbcache warm (fresh _build)",
            f"{warm:.2f}",
            ratio(warm, off_time),
            memory(big, "warm"),
        ],
        [
            "sphinx-nbcache warm, nbcache_gc_freeze = False",
            f"{unfrozen_warm:.2f}",
            ratio(unfrozen_warm, off_time),
            memory(unfrozen, "warm"),
        ],
        ['myst-nb nb_execution_mode = "off"', f"{off_time:.2f}", "1.00", memory(off, "off")],
        [
            "myst-nb off, outputs in the files",
            f"{floor_time:.2f}",
            ratio(floor_time, off_time),
            memory(floor, "floor"),
        ],
        [
            "myst-nb cache, no-op rebuild",
            f"{noop_m:.2f}",
            ratio(noop_m, off_time),
            memory(mystnb, "no-op"),
        ],
        [
            "sphinx-nbcache no-op rebuild",
            f"{noop_n:.2f}",
            ratio(noop_n, off_time),
            memory(big, "no-op"),
        ],
    ]
    overhead = warm / off_time
    cold_speedup = cold_m / cold_n
    noop = noop_n / noop_m
    lower = args.big * BIG_WORK / 2 / cpus + warm
    return [
        f"## B. {args.big} notebooks x {BIG_WORK:g} s of work ({BIG_CELLS} cells each)",
        "",
        *table(["build", "seconds", "ratio to off", "memory (MB)"], rows),
        "",
        f"Cold: {cold_speedup:.2f}x myst-nb, {cold_m / cold_s:.2f}x with normal kernels"
        f" (target >= {TINY_TARGET:g}x: {verdict(cold_speedup >= TINY_TARGET)})."
        f" Lower bound {lower:.2f} s (the notebooks' CPU work over {cpus} CPUs plus the warm"
        f" build). Warm / off = {overhead:.2f} (target <= {WARM_OVERHEAD_TARGET:.2f}:"
        f" {verdict(overhead <= WARM_OVERHEAD_TARGET)}; at scale <= {WARM_SCALE_TARGET:.2f}:"
        f" {verdict(overhead <= WARM_SCALE_TARGET)})."
        f" Warm / outputs in the files = {warm / floor_time:.2f}. Without freezing the garbage"
        " collector's objects (nbcache_gc_freeze = False), which myst-nb alone does not do:"
        f" warm / off = {unfrozen_warm / off_time:.2f}, and warm / outputs in the files ="
        f" {unfrozen_warm / floor_time:.2f}, which is what the cache itself costs, since pages"
        " with outputs take longer to write than pages without. No-op rebuild /"
        f" myst-nb's = {noop:.2f} (target <= {WARM_SCALE_TARGET:.2f}: "
        + verdict(noop <= WARM_SCALE_TARGET)
        + "). Reading, keying and looking up one notebook, median: "
        + ", ".join(f"{ms:.2f} ms ({suffix})" for suffix, ms in per_notebook.items())
        + f" (target < {WARM_PATH_TARGET_MS:g} ms: "
        + verdict(max(per_notebook.values()) < WARM_PATH_TARGET_MS)
        + ").",
        *instructions,
    ]


def instruction_lines(counts: list[list[int]]) -> list[str]:
    """B's warm, off and no-op builds in instructions, as :func:`counted` returns them."""
    [noop_m], [noop_n, warm], [off], [floor] = counts
    rows = [
        ["sphinx-nbcache warm (fresh _build)", f"{warm / 1e9:.2f}", ratio(warm, off)],
        ['myst-nb nb_execution_mode = "off"', f"{off / 1e9:.2f}", "1.00"],
        ["myst-nb off, outputs in the files", f"{floor / 1e9:.2f}", ratio(floor, off)],
        ["myst-nb cache, no-op rebuild", f"{noop_m / 1e9:.2f}", ratio(noop_m, off)],
        ["sphinx-nbcache no-op rebuild", f"{noop_n / 1e9:.2f}", ratio(noop_n, off)],
    ]
    return [
        "",
        "The same builds counted in CPU instructions (valgrind's callgrind, one run each,"
        " the build process only), which other work on the machine does not change:",
        "",
        *table(["build", "instructions (billions)", "ratio to off"], rows),
        "",
        f"In instructions: warm / off = {warm / off:.3f} (target <= {WARM_OVERHEAD_TARGET:.2f}:"
        f" {verdict(warm / off <= WARM_OVERHEAD_TARGET)}; at scale <= {WARM_SCALE_TARGET:.2f}:"
        f" {verdict(warm / off <= WARM_SCALE_TARGET)}). Warm / outputs in the files ="
        f" {warm / floor:.3f}. No-op rebuild / myst-nb's = {noop_n / noop_m:.3f} (target <="
        f" {WARM_SCALE_TARGET:.2f}: {verdict(noop_n / noop_m <= WARM_SCALE_TARGET)}).",
    ]


def warm_path(book: Book) -> dict[str, float]:
    """Median milliseconds to read one notebook of ``book``, compute its key and look it up
    in the warm cache, by format: what a warm build pays per notebook before rendering,
    timed in this process without Sphinx around it."""
    import statistics

    from myst_nb.core.config import NbParserConfig
    from myst_parser.config.main import MdParserConfig

    from sphinx_nbcache.cache.parsed import ParsedStore
    from sphinx_nbcache.cache.signing import machine_secret
    from sphinx_nbcache.cache.store import Store
    from sphinx_nbcache.config import build_settings
    from sphinx_nbcache.notebook.read import read_notebook
    from sphinx_nbcache.pipeline import Pipeline
    from sphinx_nbcache.plan import declared_inputs, plan

    # the books set nb_execution_cache_path for myst-nb, so the cache lives under it
    settings = build_settings({}, book.src, book.src, book.src / ".jupyter_cache")
    pipeline = Pipeline(settings, Store(settings.cache_path), lambda *args: None)
    parsed = ParsedStore(settings.cache_path, book.src, machine_secret())
    md_config = MdParserConfig()
    nb_config = NbParserConfig(execution_mode="cache", execution_timeout=300)
    times: dict[str, list[float]] = {}
    for path in sorted(book.src.glob("nb*.*")):
        begin = time.perf_counter()
        text = path.read_text(encoding="utf-8")
        notebook = read_notebook(path, text, md_config, nb_config, parsed)
        if notebook is None:
            raise BenchError(f"{path} is not a notebook")
        metadata = dict(notebook.notebook.metadata)
        declared, files = declared_inputs(
            settings, book.src, path.name, metadata, pipeline.warn, pipeline.digests
        )
        found = pipeline.lookup(plan(path.name, notebook, declared, files))
        elapsed = time.perf_counter() - begin
        if found is None:
            raise BenchError(f"{path}: no usable cache entry for the warm-path timing")
        times.setdefault(path.suffix, []).append(elapsed * 1000)
    pipeline.store.close()
    return {suffix: statistics.median(found) for suffix, found in sorted(times.items())}


def section_d(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """Notebooks whose start-up is mostly imports: normal and forked kernels against
    preloaded ones."""
    mystnb = plot_book("plots myst-nb", BOOKS / "d-mystnb", args.plots, extension="myst_nb")
    spawned = plot_book(
        "plots normal",
        BOOKS / "d-normal",
        args.plots,
        extension="sphinx_nbcache",
        extra_conf=[*extra, NORMAL],
    )
    forked = plot_book(
        "plots nbcache",
        BOOKS / "d-nbcache",
        args.plots,
        extension="sphinx_nbcache",
        extra_conf=extra,
    )
    preloaded = plot_book(
        "plots preload",
        BOOKS / "d-preload",
        args.plots,
        extension="sphinx_nbcache",
        extra_conf=[*extra, f"nbcache_kernel_preload = {PLOT_MODULES!r}"],
    )
    cold = cold_times(args.repeat, mystnb, spawned, forked, preloaded)
    gain = cold[forked.label] / cold[preloaded.label]
    rows = [
        ["myst-nb cache", f"{cold[mystnb.label]:.2f}", "1.00"],
        *(
            timed_row(what, cold[book.label], ratio(cold[mystnb.label], cold[book.label]))
            for what, book in (
                ("sphinx-nbcache, normal kernels (nbcache_fork_kernels = False)", spawned),
                ("sphinx-nbcache (forked kernels, nothing preloaded)", forked),
                (f"sphinx-nbcache, nbcache_kernel_preload = {PLOT_MODULES}", preloaded),
            )
        ),
    ]
    return [
        f"## D. {args.plots} notebooks importing numpy, pandas and matplotlib, one plot each"
        " (cold)",
        "",
        *table(["build", "seconds", "speed-up over myst-nb"], rows),
        "",
        f"Preloaded / without preload (forked kernels, the default): {gain:.2f}x faster"
        f" (target >= {PRELOAD_TARGET:g}x: {verdict(gain >= PRELOAD_TARGET)}); preloaded /"
        f" normally started kernels: {cold[spawned.label] / cold[preloaded.label]:.2f}x.",
    ]


DASK_WORKERS = 2


def section_e(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """The A book through Dask: a local cluster, as a real one but without the network."""
    from distributed import LocalCluster

    size = Size(args.notebooks, args.work, CELLS)
    same = [f"nbcache_workers = {DASK_WORKERS}", NORMAL]
    local = nbcache_book("e local", BOOKS / "e-local", size, extra)
    matched = nbcache_book("e local matched", BOOKS / "e-local-matched", size, same)
    with LocalCluster(
        n_workers=DASK_WORKERS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        dask_conf = [
            'nbcache_executor = "dask"',
            f'nbcache_dask_scheduler = "{cluster.scheduler_address}"',
        ]
        on_dask = nbcache_book("e dask", BOOKS / "e-dask", size, dask_conf)
        cold = cold_times(args.repeat, local, matched, on_dask)
    overhead = cold[on_dask.label] / cold[matched.label]
    rows = [
        timed_row(what, cold[book.label], ratio(cold[book.label], cold[local.label]))
        for what, book in (
            ("local pool (the default)", local),
            (f"local pool, {DASK_WORKERS} at a time, normal kernels", matched),
            (f"Dask LocalCluster, {DASK_WORKERS} workers x 1 thread", on_dask),
        )
    ]
    return [
        f"## E. {args.notebooks} notebooks x {args.work:g} s of work on a local Dask cluster"
        " (cold)",
        "",
        *table(["executor", "seconds", "ratio to the default"], rows),
        "",
        f"Dask / local pool with the same {DASK_WORKERS} notebooks at a time and normally"
        f" started kernels: {overhead:.2f}, what going through Dask costs. The default"
        " local pool also forks its kernels and runs more notebooks at once while CPUs are"
        " idle.",
    ]


INSTANCES_TARGET = 3.0
PAPERMILL_PROCESSES = 2
PAPERMILL_RECIPE = """\
import multiprocessing, sys
import papermill

def run(k):
    papermill.execute_notebook(
        "template.ipynb", f"executed/i{k}.ipynb", parameters={"instance": k},
        kernel_name="python3", progress_bar=False,
    )

if __name__ == "__main__":
    with multiprocessing.Pool(PROCESSES) as pool:
        pool.map(run, range(int(sys.argv[1])))
""".replace("PROCESSES", str(PAPERMILL_PROCESSES))
"""The seed recipe: papermill in a process pool, each executed notebook written out."""


def instances_book(label: str, src: Path, instances: int, work: float, extra: list[str]) -> Book:
    """One template notebook (``instance = -1`` in its ``parameters`` cell, then ``work``
    seconds of work) and ``instances`` instances of it declared in conf.py."""
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    cells = code_cells(0, CELLS, work)[1:-1]
    cells.append("{'notebook': instance, 'squares': [k * k for k in range(5)]}")
    write_ipynb(src / "template.ipynb", 0, ["instance = -1", "import time, math", *cells])
    notebook = json.loads((src / "template.ipynb").read_text())
    notebook["cells"][1]["metadata"]["tags"] = ["parameters"]
    (src / "template.ipynb").write_text(json.dumps(notebook, indent=1))
    conf = [
        "project = 'bench'",
        "extensions = ['sphinx_nbcache']",
        "nb_execution_mode = 'cache'",
        "exclude_patterns = ['_build', 'jupyter_execute', '.*', 'executed']",
        "nbcache_instances = {'template': {f'i{k}': {'instance': k} for k in range("
        + str(instances)
        + ")}}",
        *extra,
    ]
    (src / "conf.py").write_text("\n".join(conf) + "\n", encoding="utf-8")
    toc = "```{toctree}\n:glob:\ntemplate\ntemplate/*\n```\n"
    (src / "index.md").write_text(f"# Instances\n\n{toc}", encoding="utf-8")
    constants = {"template": -1, **{f"template/i{k}": k for k in range(instances)}}
    return Book(label, src, constants, executes=True)


def papermill_run(src: Path, instances: int) -> float:
    """Seconds of the papermill recipe on ``src``'s template, its outputs checked."""
    shutil.rmtree(src / "executed", ignore_errors=True)
    (src / "executed").mkdir()
    (src / "recipe.py").write_text(PAPERMILL_RECIPE, encoding="utf-8")
    print(f"  {'papermill':<14} {'cold':<6} ...", end=" ", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "recipe.py", str(instances)],
        cwd=src,
        capture_output=True,
        text=True,
        check=False,
        timeout=BUILD_TIMEOUT,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"papermill recipe exited with {proc.returncode}\n{_tail(proc.stderr)}")
    for k in range(instances):
        executed = json.loads((src / "executed" / f"i{k}.ipynb").read_text())
        shown = json.dumps(executed["cells"][-1]["outputs"])
        if f"'notebook': {k}," not in shown:
            raise BenchError(f"papermill: instance {k} does not show its last output")
    print(f"{seconds:7.2f} s", flush=True)
    return seconds


EXECUTED = re.compile(r"nbcache: (\d+) notebook\(s\): (\d+) executed")


def executions(book: Book) -> int:
    """How many notebooks a (logged, not timed) build of ``book`` executes."""
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", str(book.src), str(book.html_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=BUILD_TIMEOUT,
    )
    found = EXECUTED.search(proc.stdout)
    if proc.returncode != 0 or found is None:
        raise BenchError(f"{book.label}: build failed\n{_tail(proc.stdout + proc.stderr)}")
    check_pages(book, proc.stderr)
    return int(found.group(2))


def section_f(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """Notebook instances against papermill in a process pool, the recipe they replace."""
    nbcache = instances_book("nbcache", BOOKS / "f-instances", args.instances, args.work, extra)
    papermill_src = BOOKS / "f-papermill"
    instances_book("papermill", papermill_src, args.instances, args.work, [])
    cold, recipe = [], []
    for _ in range(args.repeat):
        nbcache.wipe_caches()
        cold.append(sphinx_build(nbcache, "cold"))
        recipe.append(papermill_run(papermill_src, args.instances))
    nbcache.wipe_build()
    warm = sphinx_build(nbcache, "warm")
    nbcache.wipe_build()
    warm_executed = executions(nbcache)
    speedup = min(recipe) / min(cold)
    rows = [
        timed_row(
            f"papermill + multiprocessing.Pool({PAPERMILL_PROCESSES}), {args.instances}"
            " executed notebooks",
            min(recipe),
            "1.00",
        ),
        timed_row(
            f"sphinx-nbcache cold, {args.instances} instance pages + the template's",
            min(cold),
            ratio(min(cold), min(recipe)),
        ),
        timed_row("sphinx-nbcache warm (fresh _build, cache kept)", warm, ratio(warm, min(recipe))),
    ]
    return [
        f"## F. {args.instances} notebook instances of one notebook with {args.work:g} s of work",
        "",
        *table(["run", "seconds", "ratio to papermill"], rows),
        "",
        f"papermill / sphinx-nbcache cold = {speedup:.2f} (target >= {INSTANCES_TARGET:.0f}): "
        + verdict(speedup >= INSTANCES_TARGET)
        + f". sphinx-nbcache also executes the template itself and writes every page."
        f" A warm build executed {warm_executed} notebook(s) (target 0): "
        + verdict(warm_executed == 0)
        + ". papermill has no cache: every run executes every instance again.",
    ]


DISCOVERY_NOTEBOOKS = 8
DISCOVERY_TARGET = 1.05


class _Quiet:
    """A watcher that only counts failures: section C times the executor alone."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def started(self, job: Any, clock: Any) -> None:
        pass

    def finished(self, result: Any) -> None:
        if not result.succeeded:
            self.failed.append(f"{result.source}: {result.error}")

    def tick(self, at_once: int) -> None:
        pass


@dataclasses.dataclass
class Executed:
    seconds: float
    """Wall clock of the whole run."""
    cpu: float
    """Mean kernel CPU seconds per notebook, to the end of its last cell."""


DISCOVERY_KINDS = ("1 s of work", "numpy, pandas and matplotlib imported, one plot")
KERNEL_CPU = "print('kernel cpu', __import__('time').process_time())"
"""The last cell of every notebook of section C: a forked kernel's CPU since it was forked."""


def discovery_overhead(kind: str, work: float, repeat: int) -> tuple[Executed, Executed]:
    """The same notebooks executed through sphinx-nbcache's executor without and with
    discovery of what they read (best of ``repeat``, interleaved), one at a time: kernels
    sharing CPUs would spin their timed loops on less CPU, and move the CPU measured."""
    import nbformat

    from sphinx_nbcache.model import ExecutionJob
    from sphinx_nbcache.run.local import LocalExecutor
    from sphinx_nbcache.run.pool import make_pool

    folder = BOOKS / "c-discovery"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.txt").write_text("read by every notebook\n")

    def cells(i: int) -> list[str]:
        if kind == DISCOVERY_KINDS[0]:
            return code_cells(i, CELLS, work)
        return [
            "import matplotlib.pyplot as plt\nimport numpy as np\nimport pandas as pd",
            f"x = np.linspace(0, 2 * np.pi, 200)\nframe = pd.DataFrame({{'y': np.sin(x + {i})}})",
            "frame.plot()\nplt.show()",
        ]

    def jobs(discover: bool, run: int) -> list[ExecutionJob]:
        made = []
        for i in range(DISCOVERY_NOTEBOOKS):
            sources = ["print(open('data.txt').read())", *cells(i), KERNEL_CPU]
            notebook = nbformat.v4.new_notebook(
                cells=[nbformat.v4.new_code_cell(source) for source in sources],
                metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
            )
            made.append(
                ExecutionJob(
                    key=f"{kind}-{discover}-{run}-{i}",
                    source=f"nb{i}.ipynb",
                    notebook_json=nbformat.writes(notebook),
                    cwd=str(folder),
                    timeout=BUILD_TIMEOUT,
                    allow_errors=False,
                    discover_root=str(folder) if discover else None,
                )
            )
        return made

    def kernel_cpu(result: Any) -> float:
        text = "".join(output.get("text", "") for output in result.outputs[-1])
        return float(text.split()[-1])

    LocalExecutor(make_pool(1), ()).run(jobs(False, -1), _Quiet())  # warm up the disk cache
    runs: dict[bool, list[Executed]] = {False: [], True: []}
    for run in range(repeat):
        for discover in (False, True) if run % 2 == 0 else (True, False):
            watcher = _Quiet()
            begin = time.perf_counter()
            results = LocalExecutor(make_pool(1), ()).run(jobs(discover, run), watcher)
            seconds = time.perf_counter() - begin
            if watcher.failed:
                raise BenchError("discovery run failed: " + "; ".join(watcher.failed))
            if discover and not all(r.dependencies.get("data.txt") for r in results):
                raise BenchError("discovery did not record data.txt")
            cpu = sum(map(kernel_cpu, results)) / len(results)
            runs[discover].append(Executed(seconds, cpu))

    def best(found: list[Executed]) -> Executed:
        return Executed(min(r.seconds for r in found), min(r.cpu for r in found))

    return best(runs[False]), best(runs[True])


INHERIT_TARGET = 3.0
INHERIT_EDIT_OVERHEAD = 1.0
"""Seconds a child-only edit may cost beyond the child's own work and a rebuild that
executes nothing."""
PARENT_WORK = 10.0
CHILD_WORK = 0.5
CHILDREN = 4
PARENT_CELLS = 4


def inherit_books(extra: list[str]) -> tuple[Book, Book, Book]:
    """The same four chapters three ways: each starting from the parent's final state
    (sphinx-nbcache), and each repeating the parent's code first (sphinx-nbcache, and
    myst-nb, which has no other way). Every cell's loop is a fixed number of steps: CPU work
    that takes as long however many kernels share the CPUs, as a parent's slow cells do."""
    parent_steps = loop_steps(PARENT_WORK / PARENT_CELLS)
    child_steps = loop_steps(CHILD_WORK)
    parent = [
        "import math\nBASE = 0\nx = 0.0",
        *(
            f"for _ in range({parent_steps}):\n    x += math.sqrt(x + {c})"
            for c in range(PARENT_CELLS)
        ),
        "model = {'fitted': x > 0}",
    ]

    def chapter(i: int) -> list[str]:
        return [
            f"N{i} = {i}",
            f"y = 0.0\nfor _ in range({child_steps}):\n    y += math.sqrt(y + {i})",
            "assert model['fitted']",
            f"{{'notebook': BASE + N{i}, 'squares': [k * k for k in range(5)]}}",
        ]

    books = []
    for label, folder, extension, inherit in (
        ("inherit", "g-inherit", "sphinx_nbcache", True),
        ("repeat", "g-repeat", "sphinx_nbcache", False),
        ("myst-nb repeat", "g-mystnb", "myst_nb", False),
    ):
        src = BOOKS / folder
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir(parents=True)
        write_ipynb(
            src / "parent.ipynb",
            100,
            [*parent, "{'notebook': 100 + BASE, 'squares': [k * k for k in range(5)]}"],
        )
        for i in range(CHILDREN):
            cells = chapter(i) if inherit else [*parent, *chapter(i)]
            write_ipynb(src / f"chapter{i}.ipynb", i, cells)
            if inherit:
                path = src / f"chapter{i}.ipynb"
                notebook = json.loads(path.read_text())
                notebook["metadata"]["nbcache"] = {"inherit": "parent.ipynb"}
                path.write_text(json.dumps(notebook, indent=1))
        conf = [
            "project = 'bench'",
            f"extensions = [{extension!r}]",
            "nb_execution_mode = 'cache'",
            "nb_execution_timeout = 600",
            f"nb_execution_cache_path = {str(src / '.jupyter_cache')!r}",
            "exclude_patterns = ['_build', 'jupyter_execute', '.*']",
            *(extra if extension == "sphinx_nbcache" else []),
        ]
        (src / "conf.py").write_text("\n".join(conf) + "\n", encoding="utf-8")
        toc = "\n".join(["parent", *(f"chapter{i}" for i in range(CHILDREN))])
        (src / "index.md").write_text(f"# Chapters\n\n```{{toctree}}\n{toc}\n```\n")
        constants = {"parent": 100, **{f"chapter{i}": i for i in range(CHILDREN)}}
        books.append(Book(label, src, constants, executes=True))
    return books[0], books[1], books[2]


def edit_chapter(book: Book, value: int, code: bool) -> None:
    """Chapter 0 edited: its constant (code, so it executes) or its title (prose)."""
    path = book.src / "chapter0.ipynb"
    notebook = json.loads(path.read_text())
    if code:
        notebook["cells"][1]["source"] = f"N0 = {value}"
        book.constants["chapter0"] = value
    else:
        notebook["cells"][0]["source"] = f"# Chapter 0, take {value}\n\nSome prose."
    path.write_text(json.dumps(notebook, indent=1))


def section_g(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """Chapters that start from a parent's final state, against chapters that repeat the
    parent's code; then what a child-only edit costs."""
    inherit, repeat, mystnb = inherit_books(extra)
    cold_inherit, cold_repeat, cold_mystnb = interleaved(
        args.repeat, cold_runs(inherit, repeat, mystnb)
    )
    prose, code = [], []
    for rep in range(args.repeat):
        edit_chapter(inherit, EDIT_BASE + rep, code=False)
        prose.append(sphinx_build(inherit, "prose"))
        edit_chapter(inherit, EDIT_BASE + rep, code=True)
        code.append(sphinx_build(inherit, "edit"))
    inherit.wipe_build()
    edits = executions(inherit)  # a fresh _build, the cache and snapshots kept
    speedup, against_mystnb = cold_repeat / cold_inherit, cold_mystnb / cold_inherit
    extra_cost = min(code) - min(prose) - CHILD_WORK
    rows = [
        timed_row(
            "myst-nb cache, each chapter repeats the parent's code",
            cold_mystnb,
            ratio(cold_mystnb, cold_inherit),
        ),
        timed_row(
            "sphinx-nbcache, each chapter repeats the parent's code",
            cold_repeat,
            ratio(cold_repeat, cold_inherit),
        ),
        timed_row("sphinx-nbcache, each chapter inherits the parent's state", cold_inherit, "1.00"),
        timed_row("inherit: a chapter's prose edited (executes nothing)", min(prose), ""),
        timed_row("inherit: a chapter's code edited (executes it alone)", min(code), ""),
    ]
    return [
        f"## G. A parent with {PARENT_WORK:g} s of CPU work and {CHILDREN} chapters of"
        f" {CHILD_WORK:g} s each",
        "",
        *table(["cold build (or edit)", "seconds", "ratio to inheriting"], rows),
        "",
        f"Cold, inheriting against repeating the parent's code: {speedup:.2f}x with"
        f" sphinx-nbcache (target >= {INHERIT_TARGET:g}: {verdict(speedup >= INHERIT_TARGET)}),"
        f" {against_mystnb:.2f}x against myst-nb. sphinx-nbcache runs the repeating chapters"
        f" side by side, so on {os.cpu_count()} CPUs their {CHILDREN + 1} copies of the parent's"
        f" work take {(CHILDREN + 1) * PARENT_WORK / (os.cpu_count() or 1):g} s at best, against"
        f" one copy when inheriting. A chapter's code edit cost {extra_cost:+.2f} s beyond"
        f" its own {CHILD_WORK:g} s of work and a rebuild that executes nothing (target under"
        f" {INHERIT_EDIT_OVERHEAD:g} s: {verdict(extra_cost < INHERIT_EDIT_OVERHEAD)}), from the"
        f" kept snapshot. A warm build executed {edits} notebook(s).",
    ]


RESUME_CELLS = 10
RESUME_WORK = 2.0
"""Seconds of CPU work of each of H's cells (a loop of a fixed number of steps)."""
RESUME_CHECKPOINT_AFTER = 5.0
"""``nbcache_checkpoint_after``'s default, which H leaves as it is."""
RESUME_OVERHEAD_TARGET = 0.10
"""What keeping checkpoints may add to H's cold build, as a fraction of it."""
RESUME_EDIT_TARGET = 2.0
"""Seconds an edit of H's last cell may take beyond that cell's own time."""
CELL_TIME = re.compile(r"cell (\d+) took ([0-9.]+) s")
RESUMED = re.compile(r"nbcache: nb0\.ipynb: Cached executed notebook \(executed (.*?)in ")
RESUMED_FROM = re.compile(r"from code cell (\d+) on, ")


def resume_books(extra: list[str]) -> tuple[Book, Book]:
    """The same notebook, ``nb0``, in a book with ``nbcache_resume`` on and one with it off:
    ten cells of CPU work, each adding to a list and to the rows of a numpy array (state
    that a checkpoint carries) and printing its own time, the last also the constant
    ``N0`` that an edit changes."""
    steps = loop_steps(RESUME_WORK)

    def cell(c: int) -> str:
        return (
            ("t = time.perf_counter()\n" if c else "")
            + f"x = 0.0\nfor _ in range({steps}):\n    x += math.sqrt(x + {c})\n"
            "state.append(x)\nrows = np.vstack([rows, np.full(8, x)])\n"
            f"assert len(state) == {c + 1} and rows.shape == ({c + 1}, 8)\n"
            f"print(f'cell {c + 1} took {{time.perf_counter() - t:.3f}} s')"
        )

    cells = [cell(c) for c in range(RESUME_CELLS)]
    cells[0] = (
        "import math, time\nt = time.perf_counter()\nimport numpy as np\n"
        f"state = []\nrows = np.zeros((0, 8))\n{cells[0]}"
    )
    cells[-1] += "\nN0 = 0\n{'notebook': N0, 'squares': [k * k for k in range(5)]}"
    books = []
    for label, folder, resume in (("resume", "h-resume", True), ("no resume", "h-plain", False)):
        src = BOOKS / folder
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir(parents=True)
        write_ipynb(src / "nb0.ipynb", 0, cells)
        conf = [
            "project = 'bench'",
            "extensions = ['sphinx_nbcache']",
            "nb_execution_mode = 'cache'",
            "nb_execution_timeout = 600",
            "exclude_patterns = ['_build', 'jupyter_execute', '.*']",
            f"nbcache_resume = {resume}",
            *extra,
        ]
        (src / "conf.py").write_text("\n".join(conf) + "\n", encoding="utf-8")
        (src / "index.md").write_text("# Resume\n\n```{toctree}\nnb0\n```\n")
        books.append(Book(label, src, {"nb0": 0}, executes=True))
    return books[0], books[1]


def cell_times(book: Book) -> dict[int, float]:
    """The time each code cell (from 1) of ``nb0`` printed, as its page shows it."""
    html = (book.html_dir / "nb0.html").read_text(encoding="utf-8")
    found = {int(cell): float(seconds) for cell, seconds in CELL_TIME.findall(html)}
    if sorted(found) != list(range(1, RESUME_CELLS + 1)):
        raise BenchError(f"{book.label}: nb0.html shows the times of cells {sorted(found)}")
    return found


def checkpoint_cells(times: dict[int, float]) -> list[int]:
    """The cells after which ``nbcache_checkpoint_after``'s rule keeps a checkpoint, for
    cells that took ``times`` (as they printed them: a little less than the executor's)."""
    kept, since = [], 0.0
    for cell in sorted(times):
        since += times[cell]
        if since >= RESUME_CHECKPOINT_AFTER:
            kept.append(cell)
            since = 0.0
    return kept


@dataclasses.dataclass
class ResumeRun:
    """One round of H for one book: a cold build, then the last cell edited, then (with
    resume) the notebook's prose edited; what the log and the page say about them."""

    cold: float
    cold_cells: dict[int, float]
    """The time each cell of the cold build printed."""
    checkpoints: int
    """Checkpoints kept by the cold build (files in its fresh state folder)."""
    edit: float
    edit_cells: dict[int, float]
    resumed_from: int
    """The code cell the edit executed from (1: the whole notebook)."""
    prose: float | None
    """The prose edit's build, which executes nothing (None: not timed)."""

    @property
    def edit_executed(self) -> float:
        """Seconds of the cells the edit executed, as they printed them."""
        return sum(t for cell, t in self.edit_cells.items() if cell >= self.resumed_from)


def edit_title(book: Book, value: int) -> None:
    """``nb0``'s markdown cell edited: its page changes, its code (and key) does not."""
    path = book.src / "nb0.ipynb"
    notebook = json.loads(path.read_text())
    notebook["cells"][0]["source"] = f"# Notebook 0, take {value}\n\nSome prose."
    path.write_text(json.dumps(notebook, indent=1))


def resume_round(book: Book, state: Path, value: int, prose: bool) -> ResumeRun:
    """A cold build of ``book`` (empty caches and a fresh ``XDG_STATE_HOME``, so that no
    checkpoint comes from elsewhere and none goes to the user's), then its last cell edited
    and an incremental build, then (if ``prose``) its title edited and one more. The builds
    log (no ``-q``), which shows where each edit executed from."""
    book.wipe_caches()
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    env = {**os.environ, "XDG_STATE_HOME": str(state)}
    cold, log = sphinx_run(book, "cold", env=env, quiet=False)
    if RESUMED.search(log) is None:
        raise BenchError(f"{book.label}: the cold build did not execute nb0\n{_tail(log)}")
    cold_cells = cell_times(book)
    checkpoints = len(list(state.glob("sphinx-nbcache/snapshots/*.state")))
    edit_constant(book, "nb0", value)
    edit, log = sphinx_run(book, "edit", env=env, quiet=False)
    found = RESUMED.search(log)
    if found is None:
        raise BenchError(f"{book.label}: the edit did not execute nb0\n{_tail(log)}")
    start = RESUMED_FROM.search(found.group(1))
    edit_cells = cell_times(book)
    prose_time = None
    if prose:
        edit_title(book, value)
        prose_time, log = sphinx_run(book, "prose", env=env, quiet=False)
        if RESUMED.search(log) is not None:
            raise BenchError(f"{book.label}: a prose edit executed nb0\n{_tail(log)}")
    resumed_from = 1 if start is None else int(start.group(1))
    return ResumeRun(cold, cold_cells, checkpoints, edit, edit_cells, resumed_from, prose_time)


def section_h(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """A notebook's last cell edited: executed from the last checkpoint against from its
    first cell; and what keeping the checkpoints costs the cold build."""
    resume, plain = resume_books(extra)
    runs: dict[str, list[ResumeRun]] = {resume.label: [], plain.label: []}
    with tempfile.TemporaryDirectory(prefix="nbcache-bench-state-") as states:
        for rep in range(args.repeat):
            for book in (resume, plain) if rep % 2 == 0 else (plain, resume):
                state = Path(states) / book.src.name
                found = resume_round(book, state, EDIT_BASE + rep, prose=book is resume)
                runs[book.label].append(found)
    ours, theirs = runs[resume.label], runs[plain.label]
    if any(run.resumed_from == 1 for run in ours):
        raise BenchError("resume: an edit of the last cell executed the whole notebook")
    if any(run.resumed_from != 1 or run.checkpoints for run in theirs):
        raise BenchError("no resume: a build kept checkpoints, or an edit resumed")
    cold_ours, cold_theirs = min(r.cold for r in ours), min(r.cold for r in theirs)
    overhead = (cold_ours - cold_theirs) / cold_theirs
    # outside the cells' own time, which the machine's other work moves most
    outside_ours = min(r.cold - sum(r.cold_cells.values()) for r in ours)
    outside_theirs = min(r.cold - sum(r.cold_cells.values()) for r in theirs)
    edit = min(ours, key=lambda r: r.edit)
    edit_theirs = min(r.edit for r in theirs)
    prose = min(r.prose for r in ours if r.prose is not None)
    last_cell = edit.edit_cells[RESUME_CELLS]
    beyond = edit.edit - last_cell
    kept = "/".join(str(n) for n in sorted({r.checkpoints for r in ours}))
    where = "; ".join(
        f"after cells {', '.join(map(str, checkpoint_cells(r.cold_cells)))}, the edit from"
        f" {r.resumed_from}"
        for r in ours
    )
    mean_cell = sum(sum(r.cold_cells.values()) for r in ours + theirs) / (
        RESUME_CELLS * len(ours + theirs)
    )
    rows = [
        timed_row("cold, nbcache_resume = False", cold_theirs, "1.00"),
        timed_row(
            f"cold, nbcache_resume = True ({kept} checkpoints kept)",
            cold_ours,
            ratio(cold_ours, cold_theirs),
        ),
        timed_row(
            f"last cell edited, nbcache_resume = False (executes all {RESUME_CELLS} cells)",
            edit_theirs,
            "1.00",
        ),
        timed_row(
            "last cell edited, nbcache_resume = True"
            f" (executes from code cell {edit.resumed_from} on)",
            edit.edit,
            ratio(edit.edit, edit_theirs),
        ),
        timed_row("resume: the notebook's prose edited (executes nothing)", prose, ""),
    ]
    return [
        f"## H. A notebook of {RESUME_CELLS} cells of {RESUME_WORK:g} s of CPU work each,"
        " its last cell edited",
        "",
        *table(["build", "seconds", "ratio to no resume"], rows),
        "",
        f"Checkpoint overhead on the cold build: {overhead:+.1%} (target under"
        f" {RESUME_OVERHEAD_TARGET:.0%}: {verdict(overhead < RESUME_OVERHEAD_TARGET)});"
        f" outside the cells' own printed time, which the machine's other work moves most,"
        f" the cold builds took {outside_ours:.2f} s with resume and {outside_theirs:.2f} s"
        f" without ({outside_ours - outside_theirs:+.2f} s,"
        f" {(outside_ours - outside_theirs) / cold_theirs:+.1%} of the cold build)."
        f" Edit rebuild {edit.edit:.2f} s; target: within {RESUME_EDIT_TARGET:g} s plus that"
        f" cell's time ({last_cell:.2f} s), i.e. {beyond:.2f} s beyond it:"
        f" {verdict(beyond <= RESUME_EDIT_TARGET)}; {edit.edit - edit.edit_executed:.2f} s"
        f" beyond the {RESUME_CELLS + 1 - edit.resumed_from} cell(s) it executed"
        f" ({edit.edit_executed:.2f} s); {edit_theirs / edit.edit:.2f}x faster than executing"
        f" the whole notebook again ({edit_theirs:.2f} s). Cells took {mean_cell:.2f} s on"
        f" average; checkpoints (from the cells' printed times) and resumed edits: {where}."
        " (These builds run without -q: their log says where an edit executed from.)",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except BenchError as exc:
        print(f"\nbenchmark FAILED: {exc}", file=sys.stderr)
        return 1
    text = "\n".join(report) + "\n"
    print("\n" + text, end="")
    RESULTS.write_text(text, encoding="utf-8")
    print(f"(also written to {RESULTS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
