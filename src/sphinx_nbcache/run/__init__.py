"""Running notebooks: the adaptive pool, kernels (launch, fork server, preload, reaper), the
nbclient driver, and the local and Dask executors. No Sphinx, no cache: jobs in, results out."""
