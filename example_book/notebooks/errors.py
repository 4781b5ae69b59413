# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # An expected error
#
# Sometimes the point of a cell is the exception it raises. Tagging the cell
# `raises-exception` tells the kernel client that this error is expected: the traceback is
# shown as the cell's output, the cells after it still run, and the build reports no
# warning. The tag is part of the cache key, since it changes how an error counts.


# %%
def mean(values):
    """The arithmetic mean of a non-empty sequence."""
    if not values:
        raise ValueError("mean() of an empty sequence")
    return sum(values) / len(values)


mean([3, 4, 8])

# %% tags=["raises-exception"]
mean([])

# %% [markdown]
# Execution went on after the error:

# %%
print("still running; mean of 1..10 =", mean(range(1, 11)))
