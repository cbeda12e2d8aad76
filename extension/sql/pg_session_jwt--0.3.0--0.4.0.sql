-- pg_session_jwt 0.3.0 -> 0.4.0. Each change below says what it is for.

\echo Use "ALTER EXTENSION pg_session_jwt UPDATE TO '0.4.0'" to load this file. \quit

-- === Connection-start settings without SPI ==========================================
--
-- The connection-start settings are read from the server's memory (each setting's reset
-- value, what RESET would restore: pg_session_jwt/pl.py, capture()) instead of through SPI
-- by this function, which RESET them in a subtransaction. That removes the only SPI call of
-- the extension (in parallel mode before PostgreSQL 17 it could wreck the interpreter), and
-- a PL/pgSQL compile, a plan and a subtransaction from every new connection's first call.
DROP FUNCTION auth._connection_settings();

-- === Supabase-style getters and visible refusals ======================================
--
--   * auth.role() and auth.email(): the `role` and `email` claims, as Supabase's helpers
--     of the same names, so that policies written for Supabase run unchanged. Same rules
--     as auth.user_id(): NULL without a session, 42804 when a verified claim is not text;
--     inlinable SQL wrappers over PL/Python helpers that take pg_session_jwt.jwt.
--   * pg_session_jwt.log_refusals (read at connection start like every setting): one LOG
--     line per refused token with a stable reason code (pg_session_jwt/refusals.py). It
--     needs no SQL: the connection-start settings are the rows of settings.py.

CREATE FUNCTION auth._role(jwt pg_catalog.text) RETURNS pg_catalog.text
LANGUAGE plpython3u STABLE PARALLEL RESTRICTED
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import role as f
    SD["f"] = f
return f(plpy, jwt)
$$;

CREATE FUNCTION auth._email(jwt pg_catalog.text) RETURNS pg_catalog.text
LANGUAGE plpython3u STABLE PARALLEL RESTRICTED
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import email as f
    SD["f"] = f
return f(plpy, jwt)
$$;

CREATE FUNCTION auth.role() RETURNS pg_catalog.text
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN auth._role(pg_catalog.current_setting('pg_session_jwt.jwt', true));
COMMENT ON FUNCTION auth.role() IS
    'the role claim of the session (as Supabase''s auth.role()); NULL without a session';

CREATE FUNCTION auth.email() RETURNS pg_catalog.text
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN auth._email(pg_catalog.current_setting('pg_session_jwt.jwt', true));
COMMENT ON FUNCTION auth.email() IS
    'the email claim of the session (as Supabase''s auth.email()); NULL without a session';

-- === What the operator can see of the key sets ========================================
--
-- auth.key_sets() shows the operator, per key source of this connection
-- (pg_session_jwt.jwk, PG_SESSION_JWT_JWKS_URL, or each issuer of PG_SESSION_JWT_ISSUERS),
-- the kids in use, the keys skipped with the reason (an identity provider's encryption key,
-- an algorithm or curve this extension does not verify), when the set was fetched and is
-- good until, and the last failed fetch. Everything it shows is public (issuers, URLs,
-- kids, times, fetch errors), so every role may call it. It reads the shared cache files
-- and never fetches.
CREATE FUNCTION auth.key_sets(
    OUT issuer pg_catalog.text, OUT source pg_catalog.text, OUT kids pg_catalog.text[],
    OUT skipped pg_catalog.jsonb, OUT fetched_at pg_catalog.timestamptz,
    OUT good_until pg_catalog.timestamptz, OUT last_failure pg_catalog.text,
    OUT failed_at pg_catalog.timestamptz)
RETURNS SETOF record
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import key_sets as f
    SD["f"] = f
return f(plpy)
$$;
COMMENT ON FUNCTION auth.key_sets() IS
    'the key sets this connection verifies tokens with: per issuer, the kids in use, the keys skipped and why, fetch times and the last failure';
