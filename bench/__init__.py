"""The benchmark harness: fhirbox and node-oidc-provider side by side under wrk (``python -m bench``)."""
