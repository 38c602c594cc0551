"""``bastion guard``: the model server's side of threat T10 (reaching the model around Bastion).

Bastion signs a short-lived assertion onto every request it forwards (``gateway/assertion.py``);
the guard, running beside the model server, refuses every request without a valid one. Use it as
a reverse proxy (``bastion guard``, ``proxy.py``) or as ASGI middleware inside a Python model
server (``middleware.py``). docs/guard.md has both, the claims and the refusal codes.
"""

from .keys import GuardKeys
from .middleware import GuardMiddleware, protect
from .verify import AssertionVerifier, Refusal, VerifiedAssertion

__all__ = [
    "AssertionVerifier",
    "GuardKeys",
    "GuardMiddleware",
    "Refusal",
    "VerifiedAssertion",
    "protect",
]
