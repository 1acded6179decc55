"""OAuth 2.0 authorization server for machine clients (filled in by the client-credentials work)."""
