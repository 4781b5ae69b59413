"""Notebook instances as pages: each ``<template>/<instance>`` docname joins Sphinx's project
as another name for the template's file, so Sphinx reads, links, searches and rebuilds it
like any page while the source tree stays as it is; the parser injects the parameters."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, cast

import nbformat
from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.addnodes import download_reference, pending_xref
from sphinx.application import Sphinx
from sphinx.environment import CONFIG_OK, BuildEnvironment
from sphinx.util import docname_join
from sphinx.util.docutils import SphinxDirective

from sphinx_nbcache.cache.parsed import ParsedStore
from sphinx_nbcache.extension.errors import fail_config
from sphinx_nbcache.extension.source import read_source
from sphinx_nbcache.extension.state import build_state
from sphinx_nbcache.instances import InstanceSpec, parse_instances
from sphinx_nbcache.log import Subtype, warn
from sphinx_nbcache.notebook.read import NotebookReadError
from sphinx_nbcache.report import note_table_doc, page_link, table_row

ENV_INSTANCES = "nbcache_instances"
"""The build's instances by docname, kept in the env (and so in ``-j`` readers)."""

ENV_SCANNED = "nbcache_instance_scan"
"""Instances declared in notebooks, by docname of the notebook, with the file's mtime:
a notebook is read for them again only when it changed."""


@dataclasses.dataclass(frozen=True)
class Instance:
    """The page ``<template>/<name>``: the template notebook with ``spec``'s parameters."""

    template: str
    spec: InstanceSpec

    @property
    def docname(self) -> str:
        return f"{self.template}/{self.spec.name}"


def instances_of(env: BuildEnvironment) -> dict[str, Instance]:
    return cast(dict[str, Instance], getattr(env, ENV_INSTANCES, {}))


def virtual_source(env: BuildEnvironment, docname: str, instance: Instance) -> str:
    """How an instance is named in messages, reports and the cache's listing: its docname
    with the template's suffix (``analysis/explore/titanic.ipynb``)."""
    template = str(env.doc2path(instance.template, False))
    suffix = template[len(instance.template) :] if template.startswith(instance.template) else ""
    return f"{docname}{suffix or Path(template).suffix}"


def described(parameters: dict[str, Any]) -> str:
    """Parameters as messages show them: ``n=3, data='x.csv'``."""
    return ", ".join(f"{name}={value!r}" for name, value in parameters.items())


def register(app: Sphinx, env: BuildEnvironment) -> dict[str, Instance]:
    """Make the project's instances documents of the project, each another name of its
    template's file; what a build or the command line does once it found the files."""
    found = declare(app, env)
    setattr(env, ENV_INSTANCES, found)
    project = env.project
    paths = project._docname_to_path  # no public API adds a document
    for docname, instance in found.items():
        project.docnames.add(docname)
        paths[docname] = paths[instance.template]
    return found


def on_env_get_outdated(
    app: Sphinx, env: BuildEnvironment, added: set[str], changed: set[str], removed: set[str]
) -> list[str]:
    """Make the instances documents of the project; Sphinx then reads the new ones and
    those whose template changed, and this returns those whose parameters or title did."""
    before: dict[str, Instance] = instances_of(env)
    found = register(app, env)
    if not found:
        return []
    removed.difference_update(found)
    if env.config_status == CONFIG_OK:  # otherwise ``added`` is every document already
        new, outdated, _ = env.get_outdated_files(False)
        added.update(new & found.keys())
        changed.update(outdated & found.keys())
    return sorted(
        docname
        for docname, instance in found.items()
        if docname in before and _canonical(before[docname]) != _canonical(instance)
    )


def _canonical(instance: Instance) -> str:
    """What makes an instance's page read again when it changes: its parameters as JSON
    (where ``1``, ``1.0`` and ``True`` differ, as they do to the notebook) and its title."""
    spec = instance.spec
    return json.dumps([spec.parameters, spec.title], sort_keys=True, ensure_ascii=False)


def on_html_page_context(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """Sphinx takes a page's source suffix from its file's name past the docname, which
    for an instance is no suffix at all: the copied source (``_sources/``) and the themes'
    source and edit links get the template's suffix under the instance's name."""
    instance = instances_of(app.env).get(pagename)
    if instance is None:
        return
    suffix = virtual_source(app.env, pagename, instance)[len(pagename) :]
    context["page_source_suffix"] = suffix
    if context.get("sourcename"):
        link = app.config.html_sourcelink_suffix
        context["sourcename"] = pagename + suffix + (link if suffix != link else "")


def declare(app: Sphinx, env: BuildEnvironment) -> dict[str, Instance]:
    """Every instance the project declares, in conf.py and in notebooks' metadata; a
    configuration problem stops the build (one line each), a notebook's is a warning."""
    state = build_state(app)
    docs = env.found_docs
    problems: list[str] = []
    declared: dict[str, tuple[str, InstanceSpec]] = {}
    templates: dict[str, list[InstanceSpec]] = {}
    for template, value in app.config.nbcache_instances.items():
        at = f"nbcache_instances template {template!r}"
        if template not in docs:
            stem = env.path2doc(template)
            hint = f" (a docname has no suffix: {stem!r})" if stem in docs else ""
            problems.append(f"{at} is not a document of the project{hint}")
            continue
        path = Path(env.doc2path(template))
        try:
            text = path.read_text(encoding=env.config.source_encoding)
            notebook = read_source(env, path, text, state.parsed)
        except (NotebookReadError, OSError, UnicodeDecodeError) as exc:
            problems.append(f"{at}: its notebook {path.name} cannot be read: {exc}")
            continue
        if notebook is None:
            problems.append(f"{at} is not a notebook ({path.name})")
            continue
        templates[template] = parse_instances(value, at)[0]  # checked at config-inited
    for template, specs in _from_notebooks(env, state.parsed).items():
        configured = {spec.name for spec in templates.get(template, [])}
        for spec in specs:
            if spec.name in configured:
                problems.append(
                    f"nbcache_instances template {template!r}, instance {spec.name!r} is also "
                    "declared in the notebook's metadata; declare it in one place"
                )
        templates.setdefault(template, []).extend(specs)
    for template, specs in sorted(templates.items()):
        for spec in specs:
            docname = f"{template}/{spec.name}"
            if docname in docs:
                problems.append(
                    f"nbcache_instances instance {docname!r} has the name of a document of "
                    f"the project ({env.doc2path(docname, False)}); rename one of them"
                )
            elif docname not in declared:
                declared[docname] = (template, spec)
    if problems:
        fail_config(problems)
    return {docname: Instance(template, spec) for docname, (template, spec) in declared.items()}


def _from_notebooks(env: BuildEnvironment, parsed: ParsedStore) -> dict[str, list[InstanceSpec]]:
    """Instances declared in notebooks (``nbcache: {instances: ...}`` in their metadata or
    MyST front matter); a notebook is read again only when its file changed."""
    scanned: dict[str, tuple[int, Any]] = getattr(env, ENV_SCANNED, {})
    now: dict[str, tuple[int, Any]] = {}
    suffixes = (".ipynb", ".md", *env.mystnb_config.custom_formats)  # type: ignore[attr-defined]
    for docname in sorted(env.found_docs):
        path = Path(env.doc2path(docname))
        if not path.name.endswith(suffixes):
            continue
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            continue
        if docname in scanned and scanned[docname][0] == mtime:
            now[docname] = scanned[docname]
            continue
        value = None
        try:
            text = path.read_text(encoding=env.config.source_encoding)
            notebook = read_source(env, path, text, parsed) if "instances" in text else None
        except (NotebookReadError, OSError, UnicodeDecodeError):
            notebook = None  # reported when the page is read
        if notebook is not None:
            own = notebook.notebook.metadata.get("nbcache")
            if isinstance(own, dict) and "instances" in own:
                value = own["instances"]
        now[docname] = (mtime, value)
    setattr(env, ENV_SCANNED, now)
    found = {}
    for docname, (_, value) in now.items():
        if value is None:
            continue
        specs, problems = parse_instances(value, "nbcache: instances in its metadata")
        for problem in problems:
            warn(f"{problem}; the instance is left out", Subtype.config, location=docname)
        found[docname] = specs
    return found


def decorate_page(
    env: BuildEnvironment, document: nodes.document, instance: Instance, executed: Path
) -> None:
    """Title the instance's page, and say under the title what it is an instance of, with
    which parameters, and where its executed notebook is to download.

    The page is the template's text read again: its labels stay the template's (each
    instance declaring them again would be a duplicate label), and its relative ``doc``
    references are relative to the template's folder, as written."""
    for name, explicit in list(document.nametypes.items()):
        if explicit:
            document.nametypes[name] = False  # anchors in the page still work
    for reference in document.findall(pending_xref):
        if reference.get("reftype") == "doc" and reference.get("refdoc") == instance.docname:
            reference["refdoc"] = instance.template
    about = nodes.paragraph(classes=["nbcache-instance"])
    about += nodes.Text(f"Instance {instance.spec.name} of ")
    about += doc_link(instance.template, instance.docname)
    parameters = described(instance.spec.parameters)
    about += nodes.Text(f" with {parameters}. " if parameters else " with its defaults. ")
    try:
        relative = Path(os.path.relpath(executed, env.srcdir)).as_posix()
    except ValueError:  # on another drive (Windows): no way to name it from the sources
        relative = None
    if relative is not None:
        about += download_reference(
            "",
            "",
            nodes.literal(text=f"{instance.spec.name}.ipynb"),
            reftarget=f"/{relative}",
            refdoc=instance.docname,
            refexplicit=True,
            refdomain="",
            reftype="download",
        )
        about += nodes.Text(" is the executed notebook.")
    title = page_title(document)
    if title is None:  # a notebook without a heading: the title Sphinx then takes
        document["title"] = instance.spec.title or f"{instance.template} ({instance.spec.name})"
    else:
        text = instance.spec.title or f"{title.astext()} ({instance.spec.name})"
        title.children = []
        title += nodes.Text(text)
    insert_under_title(document, about)


def doc_link(docname: str, refdoc: str) -> pending_xref:
    """A link to the page ``docname``, shown with its title, as ``{doc}`` makes one."""
    link = pending_xref(
        "",
        refdomain="std",
        reftype="doc",
        reftarget=f"/{docname}",
        refdoc=refdoc,
        refexplicit=False,
        refwarn=True,
    )
    link += nodes.inline("", docname)
    return link


def page_title(document: nodes.document) -> nodes.title | None:
    section = next(document.findall(nodes.section), None)
    return None if section is None else next(iter(section.findall(nodes.title)), None)


def insert_under_title(document: nodes.document, node: nodes.Node) -> None:
    """Right under the page's title, or first on a page without one."""
    title = page_title(document)
    if title is None:
        document.insert(0, node)
    else:
        title.parent.insert(title.parent.index(title) + 1, node)


def glued(notebook: nbformat.NotebookNode) -> dict[str, str]:
    """What the notebook glued with myst-nb's ``glue``, as plain text, by name."""
    found = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            scrapbook = output.get("metadata", {}).get("scrapbook")
            if not isinstance(scrapbook, dict) or "name" not in scrapbook:
                continue
            prefix = str(scrapbook.get("mime_prefix", ""))
            data = output.get("data", {})
            text = data.get(f"{prefix}text/plain", data.get("text/plain"))
            if text is not None:
                found[str(scrapbook["name"])] = "".join(text) if isinstance(text, list) else text
    return found


class instances_placeholder(nodes.General, nodes.Element):
    """Where an instances table goes once every instance has been read."""


class NbCacheInstances(SphinxDirective):
    """``nbcache-instances <template>``: a row per instance of the template (its page, its
    parameters, and the values it glued under the names ``:glue:`` lists)."""

    required_arguments = 1
    option_spec = {"glue": directives.unchanged}  # noqa: RUF012 (docutils API)

    def run(self) -> list[nodes.Node]:
        note_table_doc(self.env, self.env.docname)
        node = instances_placeholder()
        node["template"] = docname_join(self.env.docname, self.arguments[0])
        names = self.options.get("glue", "")
        node["glue"] = [name.strip() for name in names.split(",") if name.strip()]
        self.set_source_info(node)
        return [node]


def fill_instance_tables(
    app: Sphinx, doctree: nodes.document, docname: str, records: dict[str, dict[str, Any]]
) -> None:
    for placeholder in list(doctree.findall(instances_placeholder)):
        template = placeholder["template"]
        found = [i for i in instances_of(app.env).values() if i.template == template]
        if not found:
            where = (placeholder.source, placeholder.line)
            warn(f"nbcache-instances: {template!r} has no instances", Subtype.instances, where)
            placeholder.replace_self([])
            continue
        table = _instances_table(app, docname, found, placeholder["glue"], records)
        placeholder.replace_self(table)
        missing = [
            (instance.spec.name, name)
            for instance in found
            for name in placeholder["glue"]
            if name not in records.get(instance.docname, {}).get("glue", {})
        ]
        for name, key in missing:
            message = f"nbcache-instances: instance {name!r} of {template!r} glued no {key!r}"
            warn(message, Subtype.instances, (placeholder.source, placeholder.line))


def _instances_table(
    app: Sphinx,
    fromdoc: str,
    found: list[Instance],
    glue: list[str],
    records: dict[str, dict[str, Any]],
) -> nodes.table:
    parameters = list(dict.fromkeys(n for i in found for n in i.spec.parameters))
    headers = ["Instance", *parameters, *glue]
    table = nodes.table(classes=["nbcache-instances"])
    group = nodes.tgroup(cols=len(headers))
    table += group
    group.extend(nodes.colspec(colwidth=1) for _ in headers)
    head = nodes.thead()
    head += table_row([nodes.Text(header) for header in headers])
    body = nodes.tbody()
    for instance in found:
        values = instance.spec.parameters
        shown = records.get(instance.docname, {}).get("glue", {})
        body += table_row(
            [
                page_link(app, fromdoc, instance.docname),
                *(nodes.Text(repr(values[n]) if n in values else "") for n in parameters),
                *(nodes.Text(shown.get(name, "")) for name in glue),
            ]
        )
    group += head
    group += body
    return table
