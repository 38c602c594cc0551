"""The web console at ``/console``: server-rendered pages over the shared services (issue 8)."""
