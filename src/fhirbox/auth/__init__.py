"""Authentication: Basic client credentials (``basic``), the scheme dispatch of the pipeline
(``authenticate``), Client lookups (``client_directory``), secret hashing and its cache, the root
client and the principal. Bearer tokens are verified in ``fhirbox.oauth.bearer``, next to the tokens
it checks, and plugged in here as a scheme."""
