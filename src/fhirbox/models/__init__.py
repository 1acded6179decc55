"""The server's own documents, each a thin class over its stored body that owns its shape and rules.

Storage stays document-shaped: a model wraps a ``Stored`` (or a body about to be stored); it is not
an ORM and holds no connection.
"""

from __future__ import annotations

import re

# What every resource's type and id look like (Aidbox's rules), wherever they come from.
TYPE_PATTERN = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}\Z")
ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}\Z")
