"""The ``nbcache`` command, on top of the pipeline; Sphinx only where it reads conf.py."""
