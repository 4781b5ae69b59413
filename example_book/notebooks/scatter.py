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
# # A scatter plot from a jupytext script
#
# This page is a Python script in jupytext's "percent" format: `# %%` starts a code cell and
# `# %% [markdown]` a markdown cell. `conf.py` registers the format with
# `nb_custom_formats`, so the script runs like any other notebook, and stays importable,
# lintable Python.

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import numpy as np

rng = np.random.default_rng(seed=7)
x = rng.uniform(0, 10, 80)
y = 0.8 * x + rng.normal(0, 1.2, x.size)

# %% [markdown]
# A least-squares line through the points:

# %%
slope, intercept = np.polyfit(x, y, deg=1)
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.scatter(x, y, s=12, alpha=0.7)
ax.plot([0, 10], [intercept, intercept + 10 * slope], color="tab:red")
ax.set_xlabel("x")
ax.set_ylabel("y")
print(f"fit: y = {slope:.2f} x + {intercept:.2f}")
