"""Benchmark baseline run inside an image: bare signature verification through the same C
library the extension uses — libsodium for EdDSA, libcrypto for ES* and RS*/PS*.

bench/session.py copies this file and a JSON input into a running container, and a
PL/Python function (bench.raw_verify) runs it in the very backend that times jwt_session_init,
between its batches: same interpreter, same process, no `docker exec` in between. Warm
`auth.jwt_session_init()` is compared with the least work any verifier must do for the
same tokens through the same library: split the token, decode the signature, (for ECDSA)
turn r || s into DER, hash and verify with a key loaded once. Everything the extension
does beyond that (strict decoding, header and claim checks, session state, the SQL call)
is what the ratio measures.

    python3 raw_verify.py input.json [BATCH]  ->  {"us_per_call": [one figure per batch]}

(also runnable by hand like this, with the image's python3).

With BATCH, only that batch is timed (the harness alternates server and raw batches).

input.json: {"alg": "EdDSA", "key": hex of the raw Ed25519 key or of the DER
SubjectPublicKeyInfo, "batches": [[token, ...], ...]}. Standard library and ctypes only:
written independently of the extension's own modules, so their overhead is not in it.
"""

import base64
import ctypes
import json
import sys
import time

P = ctypes.c_void_p
# Debian's libsodium, newest soname first (the host's tests load a file by path instead).
SONAMES = ("libsodium.so.26", "libsodium.so.23")


def b64decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sodium_verifier(raw):
    for soname in SONAMES:
        try:
            lib = ctypes.CDLL(soname)
            break
        except OSError:
            continue
    else:
        raise SystemExit("bench_raw_verify: no libsodium in this image")
    if lib.sodium_init() < 0:
        raise SystemExit("bench_raw_verify: sodium_init failed")
    verify = lib.crypto_sign_verify_detached
    verify.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p)
    verify.restype = ctypes.c_int

    def check(data, sig):
        if len(sig) != 64 or verify(sig, data, len(data), raw) != 0:
            raise ValueError("invalid signature")
    return check


def _der_integer(value):
    value = value.lstrip(b"\0") or b"\0"
    if value[0] & 0x80:
        value = b"\0" + value
    return b"\x02" + bytes((len(value),)) + value


def _der_ecdsa(sig, half):
    body = _der_integer(sig[:half]) + _der_integer(sig[half:])
    length = bytes((len(body),)) if len(body) < 0x80 else bytes((0x81, len(body)))
    return b"\x30" + length + body


def libcrypto_verifier(spki, alg):
    lib = ctypes.CDLL("libcrypto.so.3")
    for name, restype, argtypes in (
            ("d2i_PUBKEY", P, (P, ctypes.POINTER(P), ctypes.c_long)),
            ("EVP_PKEY_CTX_new", P, (P, P)),
            ("EVP_PKEY_verify_init", ctypes.c_int, (P,)),
            ("EVP_PKEY_CTX_set_signature_md", ctypes.c_int, (P, P)),
            ("EVP_PKEY_CTX_set_rsa_padding", ctypes.c_int, (P, ctypes.c_int)),
            ("EVP_PKEY_CTX_set_rsa_pss_saltlen", ctypes.c_int, (P, ctypes.c_int)),
            ("EVP_MD_fetch", P, (P, ctypes.c_char_p, ctypes.c_char_p)),
            ("EVP_Digest", ctypes.c_int, (ctypes.c_char_p, ctypes.c_size_t, P, P, P, P)),
            ("EVP_PKEY_verify", ctypes.c_int,
             (P, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t))):
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    buffer = ctypes.create_string_buffer(spki, len(spki))
    cursor = P(ctypes.addressof(buffer))
    pkey = lib.d2i_PUBKEY(None, ctypes.byref(cursor), len(spki))
    md = lib.EVP_MD_fetch(None, f"SHA{alg[2:]}".encode(), None)
    size = int(alg[2:]) // 8
    ctx = lib.EVP_PKEY_CTX_new(pkey, None)
    ok = lib.EVP_PKEY_verify_init(ctx) == 1 and lib.EVP_PKEY_CTX_set_signature_md(ctx, md) == 1
    if alg.startswith("PS"):
        ok = ok and lib.EVP_PKEY_CTX_set_rsa_padding(ctx, 6) == 1 \
            and lib.EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, size) == 1
    if not (pkey and md and ok):
        raise SystemExit(f"bench_raw_verify: libcrypto cannot verify {alg} with this key")
    out = ctypes.create_string_buffer(size)
    digest, verify = lib.EVP_Digest, lib.EVP_PKEY_verify
    half = {"ES256": 32, "ES384": 48, "ES512": 66}.get(alg)

    def check(data, sig):
        if half is not None:
            sig = _der_ecdsa(sig, half)
        digest(data, len(data), ctypes.addressof(out), None, md, None)
        if verify(ctx, sig, len(sig), out, size) != 1:
            raise ValueError("invalid signature")
    return check


def verifier(spec):
    """A function (signing_input bytes, signature bytes) -> None that raises when invalid."""
    key = bytes.fromhex(spec["key"])
    if spec["alg"] == "EdDSA":
        return sodium_verifier(key)
    if spec["alg"][:2] in ("ES", "RS", "PS"):
        return libcrypto_verifier(key, spec["alg"])
    raise SystemExit(f"bench_raw_verify: unsupported alg {spec['alg']}")


def run(spec, only=None):
    verify = verifier(spec)
    batches = spec["batches"] if only is None else [spec["batches"][only]]
    per_call = []
    for batch in batches:
        head, _, signature = batch[0].rpartition(".")
        verify(head.encode("ascii"), b64decode(signature))  # warm-up, untimed
        started = time.perf_counter()
        for token in batch:
            head, _, signature = token.rpartition(".")
            verify(head.encode("ascii"), b64decode(signature))
        per_call.append((time.perf_counter() - started) * 1e6 / len(batch))
    return {"us_per_call": per_call}


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as fh:
        print(json.dumps(run(json.load(fh), int(sys.argv[2]) if len(sys.argv) > 2 else None)))
