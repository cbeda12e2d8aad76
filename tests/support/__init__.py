"""Test support: shared by the tests, imported by nothing outside tests/.

    jws          raw JWS signing and base64url (tokens no issuer would make), a plpy stand-in
    sql          run a query that may fail, read an ERROR, ask for an identity
    installs     the extension's versions; databases installed fresh or updated from each
    stack        the dev stack as `make run` starts it, one per module
    issuer       a test identity provider (jwks_server.py in a container), https per test
    jwks_fakes   a clock and an issuer for the JWKS unit tests
    providers    look-alikes of real identity providers' JWK Sets and tokens, and their recipes
    ports        free host ports
    registry     a real container registry (Debian's docker-registry) in a container
    sodium       libsodium for the host's tests: the copy PyNaCl bundles
    load         the multi-user RLS load generator of the stress tests
    LOG_DIR      where tests keep the logs of what failed
"""

from builder.matrix import ROOT

# Where tests keep the logs of what failed (containers, compose stacks, stress summaries).
LOG_DIR = ROOT / "tests" / "logs"
