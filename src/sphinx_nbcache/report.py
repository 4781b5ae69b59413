"""Execution reports: how each notebook ended, when, how long it and its cells took, and
whether its outputs came from the cache; as JSON, as JUnit XML for CI systems, and as the
table of the ``nbcache-report`` directive.

The records behind them live in the Sphinx environment (one per notebook document), so a
report covers every notebook of the project, also those an incremental build did not read.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Set
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.errors import NoUri
from sphinx.util.docutils import SphinxDirective

from sphinx_nbcache.model import STATUS_LABELS, Status

REPORT_SCHEMA = 1
"""``status`` values of a record, and how the table shows them."""
ENV_REPORT_DOCS = "nbcache_report_docs"
DEFAULT_SLOWEST = 3

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
"""ECMA-48 escape sequences: CSI (colours, cursor), OSC (titles, hyperlinks), the rest."""
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def plain_text(text: str) -> str:
    """Kernel tracebacks are coloured with ANSI codes; reports want the text only."""
    return _NOT_XML.sub("", _ANSI.sub("", text))


def build_report(
    records: Mapping[str, Mapping[str, Any]], read_docs: Set[str], project: str
) -> dict[str, Any]:
    """The JSON report: a summary and one entry per notebook document, sorted by name."""
    notebooks = []
    for docname in sorted(records):
        record = records[docname]
        error = record["error"]
        inherited, parent, seen = 0.0, record.get("inherits"), {docname}
        while isinstance(parent, str) and parent in records and parent not in seen:
            seen.add(parent)
            inherited += records[parent]["runtime"]
            parent = records[parent].get("inherits")
        notebooks.append(
            {
                "docname": docname,
                "source": record["source"],
                "status": record["status"],
                "origin": record["origin"],
                "this_build": docname in read_docs,
                "runtime": record["runtime"],
                "finished": record["finished"],
                "worker": record.get("worker", ""),
                "inherits": record.get("inherits"),
                "inherited_seconds": round(inherited, 3),
                "resumed_from": record.get("resumed_from"),
                "resumed_seconds": record.get("resumed_seconds", 0.0),
                "checkpoints": record.get("checkpoints", []),
                "error": None
                if error is None
                else {**error, "traceback": plain_text(error["traceback"])},
                "cells": record["cells"],
            }
        )
    return {
        "schema": REPORT_SCHEMA,
        "project": project,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "summary": summarise([n for n in notebooks if n["this_build"]]),
        "notebooks": notebooks,
    }


def summarise(notebooks: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and seconds over the notebooks this build read. Time saved is that of the
    successful results taken from the cache: a failure's runtime is how long it took to
    fail (a timeout's, its limit), not what a working run would cost. Time inherited is
    that of the parents (and their parents) of the notebooks that executed from a parent's
    final state, each counted once per such notebook; time resumed, that of the cells a
    notebook resumed after (their outputs came from its previous run); checkpoints, what
    keeping the kernel states of the executed notebooks cost."""
    executed = [n for n in notebooks if n["origin"] == "executed"]
    cached = [n for n in notebooks if n["origin"] == "cache"]
    reused = [n for n in cached if n["status"] == Status.succeeded]
    return {
        "notebooks": len(notebooks),
        "executed": len(executed),
        "from_cache": len(cached),
        "failed": sum(n["status"] != Status.succeeded for n in notebooks),
        "timed_out": sum(n["status"] == Status.timeout for n in notebooks),
        "execution_seconds": round(sum(n["runtime"] for n in executed), 3),
        "saved_seconds": round(sum(n["runtime"] for n in reused), 3),
        "inherited_seconds": round(
            sum(n["inherited_seconds"] for n in executed if n["status"] == Status.succeeded), 3
        ),
        "resumed": sum(n["resumed_from"] is not None for n in executed),
        "resumed_seconds": round(sum(n["resumed_seconds"] for n in executed), 3),
        "checkpoint_seconds": round(
            sum(c["seconds"] for n in executed for c in n["checkpoints"]), 3
        ),
        "checkpoint_bytes": sum(c["bytes"] for n in executed for c in n["checkpoints"]),
    }


def summary_line(summary: Mapping[str, Any], cache_path: Path) -> str:
    timed_out = f" ({summary['timed_out']} timed out)" if summary["timed_out"] else ""
    return (
        f"nbcache: {summary['notebooks']} notebook(s): {summary['executed']} executed, "
        f"{summary['from_cache']} from cache, {summary['failed']} failed{timed_out}; "
        f"{summary['execution_seconds']:.1f} s executing, "
        f"{summary['saved_seconds']:.1f} s saved by the cache"
        + (
            f", {summary['inherited_seconds']:.1f} s by inheriting kernel state"
            if summary.get("inherited_seconds")
            else ""
        )
        + (
            f", {summary['resumed_seconds']:.1f} s by resuming {summary['resumed']} from "
            "checkpoints"
            if summary.get("resumed")
            else ""
        )
        + f" (cache: {cache_path})"
    )


def write_json(report: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


ERROR_STATUSES = frozenset(
    {Status.timeout, Status.kernel_error, Status.read_error, Status.extension_error}
)
"""JUnit's errors (the notebook could not run to the end); a cell error is a failure."""


def write_junit(report: Mapping[str, Any], path: Path) -> None:
    """One test case per notebook read this build; a cell error is a failure, a timeout, a
    lost kernel or an error of sphinx-nbcache an error, each with the traceback as its text;
    a notebook not executed because its parent failed is skipped."""
    cases = [n for n in report["notebooks"] if n["this_build"]]
    counts = {
        "tests": str(len(cases)),
        "failures": str(sum(n["status"] == Status.cell_error for n in cases)),
        "errors": str(sum(n["status"] in ERROR_STATUSES for n in cases)),
        "skipped": str(sum(n["status"] == Status.not_executed for n in cases)),
        "time": f"{sum(n['runtime'] for n in cases if n['origin'] == 'executed'):.3f}",
    }
    root = ET.Element("testsuites", {"name": "sphinx-nbcache", **counts})
    suite = ET.SubElement(
        root,
        "testsuite",
        {"name": report["project"], **counts, "timestamp": report["generated"]},
    )
    for notebook in cases:
        ran = notebook["origin"] == "executed"
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "name": notebook["docname"],
                "classname": "notebooks",
                "file": notebook["source"],
                "time": f"{notebook['runtime'] if ran else 0:.3f}",
            },
        )
        error = notebook["error"]
        if notebook["status"] == Status.not_executed:
            ET.SubElement(case, "skipped", {"message": plain_text(error["value"])})
        elif error is not None:
            tag = "failure" if notebook["status"] == Status.cell_error else "error"
            where = "" if error["cell"] is None else f" (code cell {error['cell']})"
            problem = ET.SubElement(
                case,
                tag,
                {
                    "message": plain_text(f"{error['name']}: {error['value']}{where}"),
                    "type": error["name"],
                },
            )
            problem.text = error["traceback"]
        ET.SubElement(case, "system-out").text = {
            "executed": "executed",
            "cache": f"outputs from the cache, executed {notebook['finished']}",
        }.get(notebook["origin"], "not executed")
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


class report_placeholder(nodes.General, nodes.Element):
    """Where a report table goes once every notebook has been read."""


class NbCacheReport(SphinxDirective):
    """``nbcache-report``: a table of every notebook's execution, filled in at write time."""

    option_spec = {"slowest": directives.nonnegative_int}  # noqa: RUF012 (docutils API)

    def run(self) -> list[nodes.Node]:
        note_table_doc(self.env, self.env.docname)
        node = report_placeholder()
        node["slowest"] = self.options.get("slowest", DEFAULT_SLOWEST)
        self.set_source_info(node)
        return [node]


def note_table_doc(env: BuildEnvironment, docname: str) -> None:
    """``docname`` has a table filled from every notebook's record at write time."""
    docs: set[str] = getattr(env, ENV_REPORT_DOCS, set())
    docs.add(docname)
    setattr(env, ENV_REPORT_DOCS, docs)


def docs_to_rewrite(app: Sphinx, env: BuildEnvironment) -> list[str]:
    """Pages with a report or instances table show other pages' records, so each build
    writes them again."""
    return sorted(getattr(env, ENV_REPORT_DOCS, set()))


def forget_report_doc(env: BuildEnvironment, docname: str) -> None:
    getattr(env, ENV_REPORT_DOCS, set()).discard(docname)


def merge_report_docs(env: BuildEnvironment, docnames: Set[str], other: BuildEnvironment) -> None:
    theirs: set[str] = getattr(other, ENV_REPORT_DOCS, set())
    ours: set[str] = getattr(env, ENV_REPORT_DOCS, set())
    ours.update(theirs & set(docnames))
    setattr(env, ENV_REPORT_DOCS, ours)


def fill_report_tables(
    app: Sphinx, doctree: nodes.document, docname: str, records: Mapping[str, Mapping[str, Any]]
) -> None:
    for placeholder in list(doctree.findall(report_placeholder)):
        placeholder.replace_self(_table(app, docname, records, placeholder["slowest"]))


HEADERS = ("Notebook", "Status", "Runtime (s)", "Cache hit", "Slowest cells", "Executed")


def _table(
    app: Sphinx, fromdoc: str, records: Mapping[str, Mapping[str, Any]], slowest: int
) -> nodes.table:
    table = nodes.table(classes=["nbcache-report"])
    group = nodes.tgroup(cols=len(HEADERS))
    table += group
    group.extend(nodes.colspec(colwidth=1) for _ in HEADERS)
    head = nodes.thead()
    head += table_row([nodes.Text(h) for h in HEADERS])
    body = nodes.tbody()
    for docname in sorted(records):
        record = records[docname]
        body += table_row(
            [
                page_link(app, fromdoc, docname),
                nodes.Text(STATUS_LABELS.get(record["status"], record["status"])),
                nodes.Text(f"{record['runtime']:.2f}"),
                nodes.Text("yes" if record["origin"] == "cache" else "no"),
                nodes.Text(_slowest(record["cells"], slowest)),
                nodes.Text(record["finished"].replace("T", " ").replace("+00:00", " UTC")),
            ]
        )
    group += head
    group += body
    return table


def table_row(cells: list[nodes.Node]) -> nodes.row:
    row = nodes.row()
    for content in cells:
        entry = nodes.entry()
        entry += nodes.paragraph("", "", content)
        row += entry
    return row


def page_link(app: Sphinx, fromdoc: str, docname: str) -> nodes.Node:
    title = app.env.titles.get(docname)
    text = title.astext() if title is not None else docname
    try:
        uri = app.builder.get_relative_uri(fromdoc, docname)
    except NoUri:
        return nodes.Text(text)
    return nodes.reference("", text, internal=True, refuri=uri)


def _slowest(cells: list[dict[str, Any]], count: int) -> str:
    timed = sorted((c for c in cells if c["seconds"] is not None), key=lambda c: -c["seconds"])
    return ", ".join(f"code cell {c['cell']}: {c['seconds']:.2f} s" for c in timed[:count])
