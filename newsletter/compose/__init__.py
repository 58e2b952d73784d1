"""Making an issue: which items go in (select), the issue built from them (build), its data model (issue),
editors' changes (edit) and approval (approval). Calls `newsletter.editorial` for each story's text."""
