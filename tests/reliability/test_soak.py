"""Several builds at once on one cache, round after round of random edits: no failure, no
lost entry, no stale page, no kernel left behind.

In the suite it runs a few rounds; ``nox -s soak`` runs it at full length
(``NBCACHE_SOAK_ROUNDS``).
"""

from __future__ import annotations

import os
import random

from helpers import Build, ProjectFactory, code, ipynb

ROUNDS = int(os.environ.get("NBCACHE_SOAK_ROUNDS", "2"))
NOTEBOOKS = 6
BUILDS = (("a", ()), ("b", ("-j", "2")), ("c", ()))
"""Three builds at once, one with parallel readers, each with its own output folder."""


def notebook(number: int, version: int) -> str:
    return ipynb(code(f"print('nb{number} version {version}')"))


def test_concurrent_builds_on_one_cache_lose_nothing(make_project: ProjectFactory) -> None:
    versions = dict.fromkeys(range(NOTEBOOKS), 0)
    project = make_project({f"nb{n}.ipynb": notebook(n, 0) for n in versions})
    rng = random.Random(20261204)
    for round_number in range(ROUNDS):
        edited = rng.sample(sorted(versions), k=rng.randint(1, NOTEBOOKS // 2))
        for number in edited:
            versions[number] += 1
            project.write(f"nb{number}.ipynb", notebook(number, versions[number]))
        started = [(name, project.start(*args, out=f"_build/{name}")) for name, args in BUILDS]
        executed = []
        for name, process in started:
            stdout, stderr = process.communicate(timeout=600)
            build = Build(process.returncode, stdout, stderr, project.root / "_build" / name)
            assert build.returncode == 0, f"round {round_number}, build {name}: {stderr}"
            assert build.warnings == [], f"round {round_number}, build {name}"
            executed += build.executed
            for number, version in versions.items():
                page = build.html(f"nb{number}")
                assert f"nb{number} version {version}" in page, (round_number, name, number)
        new = versions if round_number == 0 else edited  # each new code version once
        assert sorted(executed) == sorted(f"nb{n}.ipynb" for n in new), round_number
        assert project.kernels() == [], f"round {round_number}: kernels left behind"
        after = project.build(out="_build/check")
        assert after.returncode == 0, after.stderr
        assert after.executed == [], f"round {round_number}: an entry was lost"
