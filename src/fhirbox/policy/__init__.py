"""AccessPolicy authorization (filled in by the AccessPolicy work)."""
