"""HTTP plumbing: requests, body parsing, content negotiation, responses and errors."""
