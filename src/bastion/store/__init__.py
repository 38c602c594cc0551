"""Durable state: tables, one repository module per domain, migrations, engines.

Repository functions take an open SQLAlchemy ``Connection`` so a service can make several changes
and the state-epoch bump in one transaction (see ``Store.begin``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from bastion.store.db import create_engine, migrate
from bastion.store.state import BUMPED

log = logging.getLogger("bastion.store")


class Store:
    """The database handle the services share; built once by ``create_app`` or the CLI."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.url = url
        # Called with the new epoch after a transaction that bumped it has committed (cluster
        # mode: publish it so every gateway reloads now). Must not raise; errors are logged.
        self.on_epoch: Callable[[int], None] | None = None

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        migrate(self.engine)

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A transaction: committed on success, rolled back on any error. If it bumped the
        state epoch, ``on_epoch`` hears the new value only after the commit: a gateway told
        earlier could reload before the change is visible and miss it."""
        with self.engine.begin() as conn:
            conn.info.pop(BUMPED, None)  # info lives with the pooled connection: start clean
            try:
                yield conn
            finally:
                bumped: int | None = conn.info.pop(BUMPED, None)
        if bumped is not None and self.on_epoch is not None:
            try:
                self.on_epoch(bumped)
            except Exception:  # the poll still carries the change; never fail a committed one
                log.warning("could not announce state epoch %d", bumped, exc_info=True)

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()


__all__ = ["Store"]
