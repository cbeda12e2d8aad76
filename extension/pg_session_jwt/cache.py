"""The per-backend cache of verified tokens, for pooled traffic that re-presents them.

Behind a transaction pooler, one server connection sees the same few tokens again and
again (each user's token lives minutes to an hour); verifying each signature again costs
more than the transaction's own query. This least-recently-used map remembers the
sessions of tokens verified in this backend, keyed by the exact token text, bounded in
entries and in bytes (token plus claims text).

A hit is used only when
  * the key set is the very one the token was verified under (a refreshed-away key's
    token must verify again, and fail), and
  * `exp` and `nbf` still hold at `now`, with the leeway (checked again on every hit).
The session checks `aud`/`iss` once per backend against connection-start settings, which
cannot change, so they hold for a hit as they did at verification. With `require_jti` on
the cache is not consulted at all (`session.Backend` keeps only the current token then):
an older token must be verified again and fail the jti check.
"""

from .errors import CHECK_VIOLATION, JwtError

MAX_ENTRIES = 256
MAX_BYTES = 1 << 20


class VerifiedCache:
    """token text → (session, key set, nbf), least recently used first out."""

    def __init__(self, max_entries=MAX_ENTRIES, max_bytes=MAX_BYTES):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        # A plain dict keeps insertion order, which is all LRU needs (re-insert on use):
        # `collections` would cost a new backend about a millisecond to import.
        self._entries = {}

    def __len__(self):
        return len(self._entries)

    def get(self, token, keyset, now, leeway):
        """The cached session of `token`, or None; JwtError when it no longer holds in time."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        session, verified_under, nbf, _ = entry
        if verified_under is not keyset:
            self._drop(token)
            return None
        if nbf is not None and now + leeway < nbf:
            raise JwtError(CHECK_VIOLATION, f"Token used before it is ready (nbf={nbf})")
        try:
            session.check_expiry(now)
        except JwtError:
            self._drop(token)
            raise
        self._entries[token] = self._entries.pop(token)  # now the most recently used
        return session

    def put(self, token, session, keyset, nbf):
        """Remember a verified session; evict the least recently used over either bound."""
        # Bytes, not characters: a claim in another script takes up to 4 of them a character.
        # (A token is ASCII; the claims were UTF-8 before they were decoded.)
        size = len(token) + len(session.claims_json.encode("utf-8"))
        if size > self.max_bytes:
            return
        if token in self._entries:
            self._drop(token)
        self._entries[token] = (session, keyset, nbf, size)
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, token):
        entry = self._entries.pop(token)
        self.bytes -= entry[3]
