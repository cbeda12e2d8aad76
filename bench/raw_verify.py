"""Benchmark baseline run inside an image: raw signature verification with `cryptography`.

bench/run.py copies this file and a JSON input into a running container and runs it
with the image's python3 (the interpreter PL/Python embeds), so that warm
`auth.jwt_session_init()` is compared with the least work any verifier must do for the
same tokens: split the token, decode the signature, verify it with a key loaded once.

    python3 bench_raw_verify.py input.json [BATCH]  ->  {"us_per_call": [one figure per batch]}

With BATCH, only that batch is timed (the harness alternates server and raw batches).

input.json: {"jwk": public JWK, "alg": "EdDSA", "batches": [[token, ...], ...]}.
Standard library and cryptography only: nothing from this project is installed there.
"""

import base64
import json
import sys
import time


def b64decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64int(text):
    return int.from_bytes(b64decode(text), "big")


def verifier(jwk, alg):
    """A function (signing_input bytes, signature bytes) -> None that raises when invalid."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

    hash_of = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
    if alg == "EdDSA":
        key = ed25519.Ed25519PublicKey.from_public_bytes(b64decode(jwk["x"]))
        return lambda data, sig: key.verify(sig, data)
    if alg.startswith("ES"):
        curve = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}[jwk["crv"]]
        key = ec.EllipticCurvePublicNumbers(b64int(jwk["x"]), b64int(jwk["y"]),
                                            curve()).public_key()
        algorithm = ec.ECDSA(hash_of[alg[2:]]())
        half = {"P-256": 32, "P-384": 48, "P-521": 66}[jwk["crv"]]

        def verify_ec(data, sig):
            der = utils.encode_dss_signature(int.from_bytes(sig[:half], "big"),
                                             int.from_bytes(sig[half:], "big"))
            key.verify(der, data, algorithm)

        return verify_ec
    if alg.startswith("RS"):
        key = rsa.RSAPublicNumbers(b64int(jwk["e"]), b64int(jwk["n"])).public_key()
        pad, algorithm = padding.PKCS1v15(), hash_of[alg[2:]]()
        return lambda data, sig: key.verify(sig, data, pad, algorithm)
    raise SystemExit(f"bench_raw_verify: unsupported alg {alg}")


def run(spec, only=None):
    verify = verifier(spec["jwk"], spec["alg"])
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
