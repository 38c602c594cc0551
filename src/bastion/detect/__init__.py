"""Real-time detection over Bastion's own events.

The engine (``engine.py``) tails the audit log — the same events an outsider can verify — turns
each into an :class:`~.observation.Observation`, and runs it through a pipeline of small,
I/O-free detectors (``detectors/``), each keeping bounded per-entity state (``state.py``).
Detectors return drafts; the engine deduplicates them into findings (``findings.py``), stores
them, and feeds per-principal and per-org risk scores (``risk.py``) that the gateway hands to
Cedar as ``context.risk``. Checks that must decide before a request is forwarded (token family
moved, honeytokens, anonymizer origins) live in ``inline.py`` and run on the hot path.
"""
