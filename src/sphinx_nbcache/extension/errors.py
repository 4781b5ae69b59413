"""How the extension stops a build on bad configuration: every problem on its own line,
then one short message, as ``sphinx-build`` users expect of a mistake in conf.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

from sphinx.errors import ConfigError

from sphinx_nbcache.log import Subtype, report_error


def fail_config(problems: list[str]) -> NoReturn:
    """Report each problem, then stop: ``sphinx-build`` exits with status 2, a program
    using Sphinx's API gets a :class:`~sphinx.errors.ConfigError`."""
    for problem in problems:
        report_error(problem, Subtype.config)
    message = f"{len(problems)} invalid nbcache configuration value(s), listed above"
    if run_by_sphinx_build():
        # Sphinx 9 prints any exception with its versions, a traceback and a request to
        # report it to Sphinx: a mistake in conf.py deserves the lines above and no more
        print(f"\nConfiguration error:\n{message}", file=sys.stderr)
        raise SystemExit(2)
    raise ConfigError(message)


def run_by_sphinx_build() -> bool:
    """Whether this process is the ``sphinx-build`` command (or ``python -m sphinx``),
    rather than a program using Sphinx's API, which expects an exception."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    main = getattr(spec, "name", "")
    return Path(sys.argv[0]).name == "sphinx-build" or main in ("sphinx", "sphinx.__main__")
