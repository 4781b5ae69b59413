"""The Sphinx extension: setup and events, the parser hand-off to myst-nb, the
environment collector."""
