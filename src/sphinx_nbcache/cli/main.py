"""The ``nbcache`` command: see, execute, merge and manage the cache outside a Sphinx build.

Commands that need the project's settings load its ``conf.py`` through a real (never
built) Sphinx application, so they see exactly the notebooks, settings and cache that
``sphinx-build`` sees; the lookups and executions go through the same pipeline and store.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sphinx_nbcache import __version__
from sphinx_nbcache.cli.commands import (
    cmd_clear,
    cmd_execute,
    cmd_import_jupyter_cache,
    cmd_info,
    cmd_merge,
    cmd_prune,
    cmd_show,
    cmd_status,
    cmd_verify,
)
from sphinx_nbcache.cli.project import CliError
from sphinx_nbcache.cli.sizes import parse_age, parse_size
from sphinx_nbcache.config import EXECUTORS

if TYPE_CHECKING:
    pass

USAGE_ERROR = 2
"""Exit status for bad input: no project, a path that is not a notebook, a bad value."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbcache",
        description="See, execute, merge and manage sphinx-nbcache's cache outside a build.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    project_help = (
        "folder with conf.py (default: the current folder or the nearest parent with one)"
    )
    parser.add_argument("--project", metavar="DIR", help=project_help)
    # the same option after the command; SUPPRESS keeps a value given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project", metavar="DIR", default=argparse.SUPPRESS, help=project_help)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, json_flag: bool = False) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, parents=[common])
        if json_flag:
            sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        return sub

    info = command("info", "Where the cache is, how many entries it holds and its size.", True)
    info.set_defaults(run=cmd_info)
    status = command(
        "status",
        "Each notebook's state; exit status 1 if a build would execute any of them.",
        True,
    )
    status.add_argument("paths", nargs="*", metavar="PATH", help="notebooks (default: all)")
    status.set_defaults(run=cmd_status)
    execute = command(
        "execute",
        "Execute the notebooks a build would execute; exit status 1 if any of them fails.",
    )
    execute.add_argument("paths", nargs="*", metavar="PATH", help="notebooks (default: all)")
    parameter(execute, "execute PATH as an ad-hoc instance with parameter NAME = VALUE")
    execute.add_argument("--force", action="store_true", help="execute even up-to-date ones")
    execute.add_argument("--workers", type=int, metavar="N", help="notebooks at once")
    execute.add_argument("--timeout", type=int, metavar="SECONDS", help="seconds per cell")
    execute.add_argument(
        "--executor", choices=EXECUTORS, help="where notebooks run (nbcache_executor)"
    )
    execute.add_argument(
        "--scheduler", metavar="ADDRESS", help="Dask scheduler address (nbcache_dask_scheduler)"
    )
    execute.set_defaults(run=cmd_execute)
    verify = command(
        "verify",
        "Execute the notebooks whose cached outputs come from resuming at a checkpoint from "
        "their first cell, and list those whose outputs differ; exit status 1 if any do.",
    )
    verify.add_argument("paths", nargs="*", metavar="PATH", help="notebooks (default: all)")
    verify.set_defaults(run=cmd_verify)
    show = command("show", "One notebook's cache entry: key, when, runtimes, error.", True)
    show.add_argument("path", metavar="PATH")
    show.set_defaults(run=cmd_show)
    merge = command("merge", "Write a notebook with its cached outputs as .ipynb.")
    merge.add_argument("path", metavar="PATH")
    merge.add_argument("-o", "--output", metavar="OUT.ipynb", help="file (default: stdout)")
    merge.add_argument("--instance", metavar="NAME", help="the notebook's instance NAME")
    parameter(merge, "the ad-hoc instance with parameter NAME = VALUE (as executed with -p)")
    merge.set_defaults(run=cmd_merge)
    clear = command("clear", "Remove the entries of the given notebooks, or all entries.")
    clear.add_argument("paths", nargs="*", metavar="PATH", help="notebooks (default: all)")
    clear.set_defaults(run=cmd_clear)
    prune = command(
        "prune", "Remove entries that are unused, old, or beyond a size, keeping what is used."
    )
    prune.add_argument(
        "--max-size", type=parse_size, metavar="SIZE", help="keep the cache under SIZE (500M, 2G)"
    )
    prune.add_argument(
        "--older-than", type=parse_age, metavar="AGE", help="executed longer ago (30d, 12h, 2w)"
    )
    prune.add_argument(
        "--unused", action="store_true", help="entries no notebook of the project has now"
    )
    prune.set_defaults(run=cmd_prune)
    migrate = command(
        "import-jupyter-cache",
        "Import the notebooks myst-nb's cache mode executed whose code is unchanged.",
    )
    migrate.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="jupyter-cache folder (default: nb_execution_cache_path, else _build/.jupyter_cache)",
    )
    migrate.set_defaults(run=cmd_import_jupyter_cache)
    return parser


def parameter(command: argparse.ArgumentParser, help: str) -> None:
    """papermill's ``-p NAME VALUE``, the value read as a YAML scalar (``100``, ``0.5``,
    ``true``, ``null``, text)."""
    command.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        dest="parameters",
        help=help,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "workers", None) is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        return int(args.run(args))
    except CliError as exc:
        print(f"nbcache: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("nbcache: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"nbcache: {where}{exc.strerror or exc}", file=sys.stderr)
        return USAGE_ERROR
