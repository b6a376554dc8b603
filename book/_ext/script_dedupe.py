"""Sphinx extension: write each inline <script> once per page.

sphinx-thebe 0.3.1 registers its configuration as an inline script (filename None). Sphinx
7.4 adds it to the HTML builder right away and again, as filename '', when it prepares
writing; the two no longer compare equal, so every page declared `const THEBE_JS_URL`
twice and the browser logged "Identifier 'THEBE_JS_URL' has already been declared".
This drops the repeat from the page context; Sphinx restores its own list after each page.
"""

from __future__ import annotations


def _script_key(script) -> tuple:
    filename = getattr(script, "filename", script) or ""
    attributes = getattr(script, "attributes", {}) or {}
    return (str(filename), tuple(sorted((str(k), str(v)) for k, v in attributes.items())))


def drop_repeated_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app):
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
