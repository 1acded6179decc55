"""fhirbox: a resource server with a built-in OAuth 2.0 authorization server for machine clients."""

__version__ = "0.1.0"
