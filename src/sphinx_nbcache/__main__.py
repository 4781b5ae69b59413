"""``python -m sphinx_nbcache``: the ``nbcache`` command."""

import sys

from sphinx_nbcache.cli.main import main

sys.exit(main())
