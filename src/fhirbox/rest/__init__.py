"""The REST API for any resource type: CRUD, search and history, independent of the type."""
