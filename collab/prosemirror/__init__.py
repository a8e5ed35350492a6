"""Rich text as ProseMirror holds it: the bundled editor's schema, its JSON, and HTML and
Markdown in and out of it. Pure: no I/O."""
