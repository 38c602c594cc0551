"""The TLS context of Bastion's own outbound calls (webhooks, CAEP, identity providers' keys and
tokens): certificate verification against certifi's CAs, as httpx makes it. Built once per
process and shared by every client, since each build loads the CA bundle (~20-40 ms) and
background loops make their clients at start-up."""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def client_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()
