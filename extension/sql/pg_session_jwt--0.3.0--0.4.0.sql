-- pg_session_jwt 0.3.0 -> 0.4.0. Each change below says what it is for.

\echo Use "ALTER EXTENSION pg_session_jwt UPDATE TO '0.4.0'" to load this file. \quit

-- The connection-start settings are read from the server's memory (each setting's reset
-- value, what RESET would restore: pg_session_jwt/pl.py, capture()) instead of through SPI
-- by this function, which RESET them in a subtransaction. That removes the only SPI call of
-- the extension (in parallel mode before PostgreSQL 17 it could wreck the interpreter), and
-- a PL/pgSQL compile, a plan and a subtransaction from every new connection's first call.
DROP FUNCTION auth._connection_settings();

-- ---------------------------------------------------------------------------------------
-- Key sets: auth.key_sets() shows the operator, per key source of this connection
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
-- End of the key sets section.
