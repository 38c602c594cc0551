"""Identity: keys, access tokens, DPoP proofs, client assertions, principals, the token service."""
