"""The cache: the key of a notebook, the store of results (the only diskcache user), the
parsed-notebook store, signatures."""
