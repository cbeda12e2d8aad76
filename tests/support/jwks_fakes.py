"""Stand-ins for the JWKS URL's unit tests: a clock to move by hand, an issuer that serves
keys or fails and counts requests, and the kids of a key set."""

import json

from devtools.jwt import public_jwk

URL = "https://issuer.example/.well-known/jwks.json"


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


class Issuer:
    """A fake fetcher: serves `keys` with `headers`, or fails; counts requests."""

    def __init__(self, *keys, headers=None):
        self.keys = list(keys)
        self.headers = headers if headers is not None else {"Cache-Control": "max-age=600"}
        self.failure = None
        self.document = None
        self.requests = 0

    def __call__(self, config):
        self.requests += 1
        if self.failure is not None:
            raise self.failure
        text = self.document or json.dumps({"keys": [json.loads(public_jwk(k)) for k in self.keys]})
        return text, self.headers


def kids(keyset):
    return {key.kid for key in keyset.keys}
