"""The environment collector: per-document records kept in Sphinx's environment, and
which unchanged documents must be read again (entry gone, variable or packages changed)."""

from __future__ import annotations

from collections.abc import Set
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.environment.collectors import EnvironmentCollector

from sphinx_nbcache.cache.key import env_digests
from sphinx_nbcache.extension.state import ENV_VALUES_ATTRIBUTE, build_state, doc_records
from sphinx_nbcache.model import Status
from sphinx_nbcache.report import forget_report_doc, merge_report_docs


class NbCacheCollector(EnvironmentCollector):
    """Keeps per-document cache records in the env, merged across ``-j`` readers."""

    def clear_doc(self, app: Sphinx, env: BuildEnvironment, docname: str) -> None:
        doc_records(env).pop(docname, None)
        forget_report_doc(env, docname)

    def merge_other(
        self, app: Sphinx, env: BuildEnvironment, docnames: Set[str], other: BuildEnvironment
    ) -> None:
        ours, theirs = doc_records(env), doc_records(other)
        ours.update({name: theirs[name] for name in docnames if name in theirs})
        merge_report_docs(env, docnames, other)

    def process_doc(self, app: Sphinx, doctree: nodes.document) -> None:
        """Records are written during parsing, where the outputs are known."""

    def get_outdated_docs(
        self,
        app: Sphinx,
        env: BuildEnvironment,
        added: Set[str],
        changed: Set[str],
        removed: Set[str],
    ) -> list[str]:
        """Unchanged documents must be read (and maybe executed) again when their cache
        entry is gone, when a declared environment variable has another value, or when
        something was installed or upgraded where their kernel runs (the lookup then
        tells whether a package the notebook imported is at another version). A failure
        is read again on every build, from the cache: its warning and the exit status
        under ``nb_execution_raise_on_error`` must not vanish because nothing changed."""
        state = build_state(app)
        values = env_digests(state.settings.env_vars)
        before = getattr(env, ENV_VALUES_ATTRIBUTE, values)
        setattr(env, ENV_VALUES_ATTRIBUTE, values)
        store = state.pipeline.store

        def installed_since(record: dict[str, Any]) -> bool:
            mark = record.get("environment")
            if not mark:
                return False
            interpreter, fingerprint = mark
            now = state.pipeline.environments.fingerprint(interpreter, fingerprint or "")
            return now is not None and bool(now != fingerprint)

        return sorted(
            docname
            for docname, record in doc_records(env).items()
            if docname not in changed
            and docname not in removed
            and (
                before != values
                or record["status"] != Status.succeeded
                or record["key"] not in store
                or installed_since(record)
            )
        )


def forget_kept(app: Sphinx, env: BuildEnvironment) -> list[str]:
    """Every page is read: results kept for them are no longer needed."""
    build_state(app).pipeline.forget_kept()
    return []
