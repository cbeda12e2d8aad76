"""pg_session_jwt: verify JSON Web Tokens inside PostgreSQL (the Python half of the extension).

The SQL functions of the extension (extension/sql/) are thin PL/Python wrappers around
`pg_session_jwt.pl`; the rest is plain Python with no server dependency:

    errors   the one exception type, carrying a SQLSTATE
    encoding strict base64url and strict JSON
    keys     JWK / JWKS parsing into verifiers
    der      the DER bytes OpenSSL reads: public keys, ECDSA signatures
    libcrypto / libsodium   signature checks in the server's C libraries
    ffi      the C types and calls those and pl use, on _ctypes (not ctypes: 2-8 ms to import)
    token    compact JWS parsing, header checks, signature verification
    claims   jti / nbf / exp / aud / iss checks
    session  per-backend state: captured settings, parsed key, verified-claims cache
    refusals reason codes of refusals and the LOG line of pg_session_jwt.log_refusals
    pl       the glue called from SQL; the only module that talks to plpy

This package never imports jwcrypto or `cryptography`: signatures are verified by
OpenSSL's libcrypto (which PostgreSQL links) and libsodium directly, so jwcrypto's own
parsing (and its CVEs) is not reachable from SQL, and a new backend pays neither import.
"""
