"""Policy: Cedar schema and policies, immutable snapshots, decisions (no I/O)."""
