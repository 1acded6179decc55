"""The server's own documents, each a thin class over its stored body that owns its shape and rules.

Storage stays document-shaped: a model wraps a ``Stored`` (or a body about to be stored); it is not
an ORM and holds no connection.
"""
