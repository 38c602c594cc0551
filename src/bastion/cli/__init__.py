"""Typer commands (thin: they call the same services as the API and console)."""
