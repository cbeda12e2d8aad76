"""Test support: shared by the tests, imported by nothing outside tests/.

    jws   raw JWS signing and base64url (tokens no well-behaved issuer would make), a plpy stand-in
    load  the multi-user RLS load generator of the stress tests
"""
