"""Credentials that cross process boundaries, and the OAuth client side of Gatehouse.

Used by ``gateway`` and ``mcp_server``; depends only on ``sql`` and ``resilience``, never on a
web framework. Import from the module that owns a name (this package re-exports nothing, so
importing one part does not load the rest):

* :mod:`oauth.assertion` — the internal assertion: :class:`~oauth.assertion.AssertionSigner`
  (gateway), :class:`~oauth.assertion.AssertionVerifier` (mcp_server),
  :class:`~oauth.assertion.CallerIdentity`; :mod:`oauth.keys` loads its Ed25519 key pair.
* :mod:`oauth.jwt_rules` — the rules every accepted JWT is held to, one
  :class:`~oauth.jwt_rules.JwtPolicy` per use (access tokens, ID tokens, the assertion).
* :mod:`oauth.catalogue` — the provider catalogue (:func:`~oauth.catalogue.load_catalogue`,
  :func:`~oauth.catalogue.discover`, :func:`~oauth.catalogue.configure`).
* :mod:`oauth.connect` — the connect flow (:class:`~oauth.connect.ConnectFlow`: authorization
  code + PKCE); :mod:`oauth.connect_links` — one-time connect links.
* :mod:`oauth.vault`, :mod:`oauth.keyring`, :mod:`oauth.store` — the token vault (AES-GCM
  sealing under a rotatable keyring) and the per-user :class:`~oauth.store.TokenStore`.
* :mod:`oauth.refresh` — :class:`~oauth.refresh.Refresher`, one refresh across all replicas;
  :mod:`oauth.token_endpoint` — the provider's token endpoint.
* :mod:`oauth.revocation` and :mod:`oauth.disconnect` — revoking a grant and disconnecting.
* :mod:`oauth.rotation` — re-encrypting every stored token under the active key.
* :mod:`oauth.provider_client` — calling a provider's API with a user's token.
* :mod:`oauth.errors` — every error this package raises, under
  :class:`~oauth.errors.OAuthError`; only ``gateway`` and ``mcp_server`` translate them.
"""
