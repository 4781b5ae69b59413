"""Notebooks as data: read through myst-nb's reader, checked, merged with stored outputs,
and the cell helpers every layer uses."""
