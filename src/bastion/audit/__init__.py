"""Audit: frozen events, the recorder (group commit), and the verifiable log (next issue)."""
