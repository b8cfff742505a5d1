"""Sphinx extension for this book: leave out the Thebe (live code) scripts.

Jupyter Book 1.x always loads sphinx-thebe. This book is read, not run in the browser (`launch_buttons.thebe`
is off), and sphinx-thebe 0.3.1 adds its inline configuration script twice per page, which throws
"Identifier 'THEBE_JS_URL' has already been declared" and names a CDN URL. Dropping its files keeps every
page free of JavaScript errors and of network addresses.
"""


def _is_thebe(asset) -> bool:
    name = getattr(asset, "filename", None) or str(asset)
    body = (getattr(asset, "attributes", None) or {}).get("body", "")
    return "thebe" in name.lower() or "THEBE_JS_URL" in body


def _drop_thebe(app, pagename, templatename, context, doctree):
    for key in ("script_files", "css_files"):
        if context.get(key):
            context[key] = [a for a in context[key] if not _is_thebe(a)]


def setup(app):
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
