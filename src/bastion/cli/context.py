"""What every command needs, built once per invocation from flags and ``BASTION_*`` variables."""

from __future__ import annotations

import getpass
import re
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from bastion.audit import keys as audit_keys
from bastion.audit.commitment import Committer
from bastion.audit.log import AuditLog
from bastion.config import BastionConfig, load_config
from bastion.errors import BadRequest
from bastion.settings import Settings
from bastion.store import Store
from bastion.store.fanout import EpochPublisher
from bastion.sync import sync_config_principals

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
# For commands that take a device key's thumbprint as an argument: a thumbprint is base64url, so
# one in 64 starts with '-' and would read as an (unknown) option. These commands define no
# short options, so such a word is kept whole as the argument; a misspelled --option is then
# an "unexpected extra argument" error, still refused.
KEY_ARGUMENTS = {"ignore_unknown_options": True}
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``4h``, ``2d`` → seconds."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise BadRequest(f"invalid duration {text!r}: use a positive number with s, m, h or d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli:unknown"


@dataclass
class Context:
    config_file: Path | None = None
    state_dir: Path | None = None

    @cached_property
    def settings(self) -> Settings:
        return Settings.from_env(config_file=self.config_file, state_dir=self.state_dir)

    @cached_property
    def config(self) -> BastionConfig:
        return load_config(self.settings.config_file)

    @cached_property
    def audit(self) -> AuditLog:
        """The audit log every admin change is appended to (keys from the state directory)."""
        keys = audit_keys.load_or_create(self.settings.state_dir)
        hash_addresses = (
            self.config.audit.hash_source_addresses if self.settings.config_file.exists() else False
        )
        return AuditLog(
            Committer(keys.salt, hash_addresses=hash_addresses), keys.signer, keys.origin
        )

    @cached_property
    def store(self) -> Store:
        """The migrated store, with the config's principals in it (as the server keeps them)."""
        if not self.settings.database_url:  # SQLite in the state directory: private, like init's
            self.settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        store = Store(self.settings.resolved_database_url)
        store.migrate()
        if self.settings.cluster:  # a lock from the CLI reaches every gateway at once too
            store.on_epoch = EpochPublisher(self.settings.redis_url, self.settings.redis_prefix)
        if self.settings.config_file.exists():
            sync_config_principals(store, self.config, time.time())
        return store

    def close(self) -> None:
        """After the command: release the store's connections (and the Redis publisher's)."""
        store = self.__dict__.get("store")  # only if a command opened it
        if isinstance(store, Store):
            if isinstance(store.on_epoch, EpochPublisher):
                store.on_epoch.close()
            store.close()
