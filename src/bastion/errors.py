"""Bastion's one exception tree.

Every error a caller or operator can see is a subclass of :class:`BastionError`, carrying an HTTP
status and a stable machine-readable ``code``. Entry points render them in exactly one place each
(the gateway in ``gateway/responses.py``, the token endpoint in ``identity/endpoints.py``, the
CLI in ``cli/main.py``); anything that is not a ``BastionError`` is logged and becomes a plain 500.

::

    BastionError (500 internal_error)
    ├── ConfigError (config_invalid)               file, line, key path, what is wrong
    ├── AuthenticationError (401)                  rendered with WWW-Authenticate
    │   ├── InvalidToken (invalid_token)
    │   ├── InvalidDPoPProof (invalid_dpop_proof)
    │   ├── InsufficientUserAuthentication         step-up (RFC 9470): carries max_age
    │   └── AssertionRefused                       `bastion guard`: code names the failed check
    ├── OAuthError (400)                           RFC 6749 §5.2 shape at /oauth/*
    │   ├── InvalidRequest (invalid_request)
    │   ├── InvalidClient (invalid_client, 401)
    │   ├── InvalidGrant (invalid_grant)
    │   └── UnsupportedGrantType (unsupported_grant_type)
    ├── AccessDenied (403 access_denied)           carries the decision's reasons
    ├── NotFound (404 not_found)
    │   └── UnknownModel (model_not_found)
    ├── BadRequest (400 invalid_request)
    │   ├── InvalidJSON (invalid_json)
    │   ├── BodyTooLarge (413 body_too_large)
    │   ├── HeadersTooLarge (431 headers_too_large)
    │   └── SetRefused (400, RFC 8935 err)          a Security Event Token refused at /caep/events
    ├── MethodNotAllowed (405 method_not_allowed)
    ├── TooManyRequests (429 quota_exceeded)       carries Retry-After
    │   └── Throttled (throttled)                  a throttle lock holds the principal's rate
    ├── Conflict (409 conflict)
    ├── Unavailable (503 unavailable)
    │   └── LockViewStale (lock_view_stale)        a strict compartment; the lock view is too old
    │   ├── ReplayCacheUnavailable (replay_cache_unavailable)   cluster: Redis cannot vouch
    │   └── QuotaUnavailable (quota_unavailable)   cluster: Redis down, strict compartment
    └── UpstreamError (502 upstream_error)
        └── UpstreamTimeout (504 upstream_timeout)

Messages are written for the person reading them and never contain a token, a proof, a key or
a prompt: callers build them from names and reasons only.
"""

from __future__ import annotations


class BastionError(Exception):
    """Base of every error Bastion shows to a caller or an operator."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(BastionError):
    """A configuration file is invalid: names the file, the line and the key path."""

    code = "config_invalid"

    def __init__(self, file: str, problems: list[str]) -> None:
        self.file = file
        self.problems = problems
        # Config-file problems already start with "file:line:"; others get the file prefixed.
        located = all(problem.startswith(f"{file}:") for problem in problems)
        super().__init__("; ".join(problems) if located else f"{file}: " + "; ".join(problems))


class AuthenticationError(BastionError):
    """The caller is not authenticated; rendered with ``WWW-Authenticate: DPoP error=...``."""

    status = 401
    code = "invalid_token"


class InvalidToken(AuthenticationError):
    code = "invalid_token"


class InvalidDPoPProof(AuthenticationError):
    code = "invalid_dpop_proof"


class InsufficientUserAuthentication(AuthenticationError):
    """The caller's MFA is missing or older than the compartment allows (RFC 9470 step-up):
    authenticate again with MFA; ``max_age`` is the allowed age in seconds."""

    code = "insufficient_user_authentication"

    def __init__(self, message: str, max_age: int) -> None:
        super().__init__(message)
        self.max_age = max_age


class AssertionRefused(AuthenticationError):
    """A request reached a guarded upstream without a valid Bastion assertion (``bastion guard``,
    threat T10); ``code`` names the check that failed (the list is in docs/guard.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class OAuthError(BastionError):
    """An error of the token or enrollment endpoint, in the RFC 6749 §5.2 shape."""

    status = 400
    code = "invalid_request"


class InvalidRequest(OAuthError):
    code = "invalid_request"


class InvalidClient(OAuthError):
    status = 401
    code = "invalid_client"


class InvalidGrant(OAuthError):
    code = "invalid_grant"


class UnsupportedGrantType(OAuthError):
    code = "unsupported_grant_type"


class AccessDenied(BastionError):
    """Policy, a lock or a control said no. ``reasons`` are values of ``policy.Reason``."""

    status = 403
    code = "access_denied"

    def __init__(self, message: str, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = reasons


class NotFound(BastionError):
    status = 404
    code = "not_found"


class UnknownModel(NotFound):
    code = "model_not_found"


class BadRequest(BastionError):
    status = 400
    code = "invalid_request"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class BodyTooLarge(BadRequest):
    status = 413
    code = "body_too_large"


class HeadersTooLarge(BadRequest):
    status = 431
    code = "headers_too_large"


class SetRefused(BadRequest):
    """A Security Event Token refused by the CAEP receiver; ``code`` is the RFC 8935 §2.3 ``err``
    (invalid_request, invalid_key, invalid_issuer, invalid_audience, authentication_failed)."""

    def __init__(self, err: str, message: str) -> None:
        super().__init__(message)
        self.code = err


class MethodNotAllowed(BastionError):
    status = 405
    code = "method_not_allowed"


class TooManyRequests(BastionError):
    """A quota is spent; ``retry_after`` seconds until the caller may try again."""

    status = 429
    code = "quota_exceeded"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Throttled(TooManyRequests):
    """A throttle lock holds the principal to a request rate and it is spent; ``lock`` is the
    lock's id (for the audit event)."""

    code = "throttled"

    def __init__(self, message: str, retry_after: int, lock: str) -> None:
        super().__init__(message, retry_after)
        self.lock = lock


class Conflict(BastionError):
    status = 409
    code = "conflict"


class Unavailable(BastionError):
    status = 503
    code = "unavailable"


class ReplayCacheUnavailable(Unavailable):
    """Cluster mode: the shared DPoP replay cache (Redis) did not answer, so a proof's single
    use cannot be proven; the proof is refused (fail closed), the client retries with a new one."""

    code = "replay_cache_unavailable"


class QuotaUnavailable(Unavailable):
    """Cluster mode: the shared token buckets (Redis) did not answer and the compartment is
    restricted or critical, where a quota that cannot be enforced refuses the request."""

    code = "quota_unavailable"


class LockViewStale(Unavailable):
    """A strict compartment refuses the call: this gateway has not proved for too long that its
    view of locks is current (its epoch reads fail), so a lock placed elsewhere might be missed."""

    code = "lock_view_stale"


class UpstreamError(BastionError):
    status = 502
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
