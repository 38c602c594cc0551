"""The gateway: the plain-ASGI hot path and the upstream proxy."""
