"""Authentication: who is calling (Basic or Bearer), secret hashing and its cache, the principal."""
