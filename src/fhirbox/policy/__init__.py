"""AccessPolicy authorization: every authenticated API request is allowed only by a passing policy.

``compile`` turns a policy into an evaluator (and refuses, 422, one that cannot be compiled),
``cache`` keeps the compiled policies per client, ``authorizer`` is the pipeline's authorization
step, ``tester`` answers ``POST /auth/test-policy`` and ``commands`` is ``fhirbox policy check``.
"""
