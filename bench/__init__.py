"""Benchmark harness: Bastion's added cost, measured against a direct call and a bare proxy.

Run ``python -m bench.run`` from the repository root; see ``bench/run.py``.
"""
