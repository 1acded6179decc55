"""OAuth 2.0 authorization server for machine clients: the client credentials grant end to end.

``token_endpoint`` (``POST /auth/token``) parses and authenticates the client (``client_auth``) and
runs a grant (``grants/``), which issues tokens (``issuance``, ``token_formats``, signed by ``keys``)
and stores a Session (``sessions``). ``bearer`` authenticates API calls by those tokens;
``revocation`` closes Sessions; ``discovery`` publishes the JWKS and server metadata.
"""
