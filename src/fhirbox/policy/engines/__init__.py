"""The evaluation engines of AccessPolicy: allow, matcho, json-schema and complex."""
