"""Runnable examples: the stand-in upstream model server and the quickstart demo."""
