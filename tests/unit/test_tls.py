"""Bastion's outbound calls share one TLS context, and it verifies what it connects to."""

from __future__ import annotations

import ssl

from bastion.tls import client_context


def test_one_context_that_verifies_certificates_and_host_names() -> None:
    context = client_context()
    assert context is client_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.cert_store_stats()["x509_ca"] > 0  # the CA bundle is loaded
