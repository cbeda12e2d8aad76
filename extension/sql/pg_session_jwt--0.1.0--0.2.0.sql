-- pg_session_jwt 0.1.0 -> 0.2.0: auth.jwt_session_end().
--
-- Fresh installs run 0.1.0 and then this script (there is no 0.2.0 base script), so
-- every install, new or updated, has the same objects; tests/container/test_upgrade.py
-- checks that.

\echo Use "ALTER EXTENSION pg_session_jwt UPDATE TO '0.2.0'" to load this file. \quit

-- Ends the session that jwt_session_init() started, session- or transaction-scoped: the
-- token setting becomes empty at session level (which also overrides a SET LOCAL value
-- for the rest of the transaction), so every getter returns NULL / JSON null afterwards.
-- Like any SET, it is undone when the surrounding transaction rolls back. Empty rather
-- than RESET: RESET would restore a token given at connection start. The backend keeps
-- the highest jti it accepted, so an older token cannot start a new session; the last
-- token itself can, as jwt_session_init() always accepts the current token again (and
-- keeping the cache is what lets a rolled-back end leave the session working).
-- request.jwt.claims (the no-JWK PostgREST mode) is not touched: whoever sets it owns it.
CREATE FUNCTION auth.jwt_session_end() RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE
BEGIN ATOMIC
    SELECT pg_catalog.set_config('pg_session_jwt.jwt', '', false);
END;
COMMENT ON FUNCTION auth.jwt_session_end() IS
    'end the session jwt_session_init() started (session- or transaction-scoped): no identity afterwards';
