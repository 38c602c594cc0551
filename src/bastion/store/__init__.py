"""Durable state: tables, one repository module per domain, migrations, engines.

Repository functions take an open SQLAlchemy ``Connection`` so a service can make several changes
and the state-epoch bump in one transaction (see ``Store.begin``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from bastion.store.db import create_engine, migrate


class Store:
    """The database handle the services share; built once by ``create_app`` or the CLI."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.url = url

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        migrate(self.engine)

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A transaction: committed on success, rolled back on any error."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()


__all__ = ["Store"]
