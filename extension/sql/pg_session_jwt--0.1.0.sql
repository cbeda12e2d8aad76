-- pg_session_jwt 0.1.0: identity for Row Level Security from a JWT verified in the session.
--
-- The work is done by the Python package pg_session_jwt (installed in the Python that
-- PL/Python embeds); these functions are thin wrappers. It never uses jwcrypto.
--
-- Security model: pg_session_jwt.* are placeholder settings that any session can SET.
-- The key and every check-loosening setting are therefore read as they were at
-- connection start (postgresql.conf, ALTER ROLE/DATABASE SET, startup packet), by
-- auth._connection_settings() below, once per backend. The token lives in the setting
-- pg_session_jwt.jwt (so DISCARD ALL / RESET ALL end the session); any value found
-- there that is not the token verified last is verified before it is used.
--
-- Errors (SQLSTATE: failure):
--   02000  no JWK for this connection ("Missing runtime parameter: pg_session_jwt.jwk")
--   42804  JWK unusable (oct/symmetric, private members, RSA < 2048 bits, bad use/key_ops/alg)
--   42804  token not three base64url parts, JWE, bad JSON ("invalid JWT encoding",
--          "could not parse JWT component"); header alg none/unsupported, crit,
--          embedded jwk/jku/x5u/x5c ("invalid JWT header")
--   42804  jti missing or not an integer; exp/nbf not integers; sub not a string (user_id())
--   23514  bad signature ("invalid JWT signature"); alg not allowed by the key
--   23514  jti not increasing; nbf in the future; exp in the past (leeway included)
--   23514  aud does not match pg_session_jwt.audience; iss does not match pg_session_jwt.issuer
--   23514  token kid unknown (or absent while the JWKS has several keys)
--   54000  token longer than pg_session_jwt.max_token_bytes (checked before parsing)
--   22023  a pg_session_jwt.* setting that is not a valid number / boolean
--   55000  settings first needed inside a parallel query (call auth.init() first)

\echo Use "CREATE EXTENSION pg_session_jwt" to load this file. \quit

-- Every role calls these (RLS policies run as the querying role).
GRANT USAGE ON SCHEMA auth TO PUBLIC;

-- The connection-start values of the settings. RESET restores a placeholder's
-- connection-start value; doing it in a subtransaction that is then rolled back leaves
-- whatever the session SET in place. VOLATILE because SPI refuses RESET in a STABLE
-- function. In parallel mode RESET is refused, so a parallel worker (which receives the
-- leader's *current* settings, a SET key included) can never capture: it fails closed.
CREATE FUNCTION auth._connection_settings(
    OUT jwk text, OUT audience text, OUT issuer text, OUT leeway text,
    OUT require_jti text, OUT audit_log text, OUT max_token_bytes text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog
AS $$
BEGIN
    BEGIN
        RESET pg_session_jwt.jwk;
        RESET pg_session_jwt.audience;
        RESET pg_session_jwt.issuer;
        RESET pg_session_jwt.leeway;
        RESET pg_session_jwt.require_jti;
        RESET pg_session_jwt.audit_log;
        RESET pg_session_jwt.max_token_bytes;
        jwk := current_setting('pg_session_jwt.jwk', true);
        audience := current_setting('pg_session_jwt.audience', true);
        issuer := current_setting('pg_session_jwt.issuer', true);
        leeway := current_setting('pg_session_jwt.leeway', true);
        require_jti := current_setting('pg_session_jwt.require_jti', true);
        audit_log := current_setting('pg_session_jwt.audit_log', true);
        max_token_bytes := current_setting('pg_session_jwt.max_token_bytes', true);
        -- A private SQLSTATE rolls the RESETs back; any other error propagates.
        RAISE SQLSTATE 'PJ000';
    EXCEPTION WHEN SQLSTATE 'PJ000' THEN
        NULL;
    END;
END
$$;

CREATE FUNCTION auth.init() RETURNS void
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import init as f
    SD["f"] = f
f(plpy)
$$;
COMMENT ON FUNCTION auth.init() IS
    'capture the JWK in effect at connection start (ERROR 02000 when there is none)';

CREATE FUNCTION auth._verify(jwt text) RETURNS text
LANGUAGE plpython3u VOLATILE STRICT PARALLEL UNSAFE
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import verify as f
    SD["f"] = f
return f(plpy, jwt)
$$;

-- "local" => true makes a transaction-scoped session (it ends at COMMIT/ROLLBACK), for
-- transaction-mode poolers.
CREATE FUNCTION auth.jwt_session_init(jwt text, "local" boolean DEFAULT false) RETURNS void
LANGUAGE sql VOLATILE STRICT PARALLEL UNSAFE
BEGIN ATOMIC
    SELECT pg_catalog.set_config('pg_session_jwt.jwt', auth._verify(jwt), "local");
END;
COMMENT ON FUNCTION auth.jwt_session_init(text, boolean) IS
    'verify a JWT and make it the session''s (or, with local => true, the transaction''s)';

-- The getters. Each public one is an inlinable SQL wrapper (no SET clause, which would
-- prevent inlining: hence the schema-qualified names) that passes the two settings to a
-- plpython3u function, so a per-row call reads no setting through SPI.
--
-- PARALLEL RESTRICTED, not SAFE as in the original: the verified session and the
-- connection-start key live in this backend's memory. A parallel worker has neither and
-- sees the leader's current settings, which the session may have SET; it can never
-- capture the connection-start ones (RESET is refused there), so it would fail the query.
-- RESTRICTED keeps the calls in the leader, which has the cache.

CREATE FUNCTION auth._session(jwt text, claims text) RETURNS jsonb
LANGUAGE plpython3u STABLE PARALLEL RESTRICTED
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import session as f
    SD["f"] = f
return f(plpy, jwt, claims)
$$;

CREATE FUNCTION auth._user_id(jwt text, claims text) RETURNS text
LANGUAGE plpython3u STABLE PARALLEL RESTRICTED
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import user_id as f
    SD["f"] = f
return f(plpy, jwt, claims)
$$;

CREATE FUNCTION auth._uid(jwt text, claims text) RETURNS uuid
LANGUAGE plpython3u STABLE PARALLEL RESTRICTED
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import uid as f
    SD["f"] = f
return f(plpy, jwt, claims)
$$;

CREATE FUNCTION auth._organization(jwt text, claims text) RETURNS jsonb
LANGUAGE plpython3u STABLE PARALLEL RESTRICTED
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import organization as f
    SD["f"] = f
return f(plpy, jwt, claims)
$$;

CREATE FUNCTION auth._organization_id(jwt text, claims text) RETURNS uuid
LANGUAGE plpython3u STABLE PARALLEL RESTRICTED
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import organization_id as f
    SD["f"] = f
return f(plpy, jwt, claims)
$$;

CREATE FUNCTION auth.session() RETURNS jsonb
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN auth._session(pg_catalog.current_setting('pg_session_jwt.jwt', true),
                     pg_catalog.current_setting('request.jwt.claims', true));
COMMENT ON FUNCTION auth.session() IS 'the verified claims; JSON null without a session';

CREATE FUNCTION auth.jwt() RETURNS jsonb
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN auth._session(pg_catalog.current_setting('pg_session_jwt.jwt', true),
                     pg_catalog.current_setting('request.jwt.claims', true));
COMMENT ON FUNCTION auth.jwt() IS 'the verified claims; JSON null without a session';

CREATE FUNCTION auth.user_id() RETURNS text
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN auth._user_id(pg_catalog.current_setting('pg_session_jwt.jwt', true),
                     pg_catalog.current_setting('request.jwt.claims', true));
COMMENT ON FUNCTION auth.user_id() IS 'the sub claim; NULL without a session';

CREATE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN auth._uid(pg_catalog.current_setting('pg_session_jwt.jwt', true),
                 pg_catalog.current_setting('request.jwt.claims', true));
COMMENT ON FUNCTION auth.uid() IS 'the sub claim as uuid; NULL when it is not a UUID';

CREATE FUNCTION auth.organization() RETURNS jsonb
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN auth._organization(pg_catalog.current_setting('pg_session_jwt.jwt', true),
                          pg_catalog.current_setting('request.jwt.claims', true));
COMMENT ON FUNCTION auth.organization() IS 'the "o" claim when it is an object, else NULL';

CREATE FUNCTION auth.organization_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN auth._organization_id(pg_catalog.current_setting('pg_session_jwt.jwt', true),
                             pg_catalog.current_setting('request.jwt.claims', true));
COMMENT ON FUNCTION auth.organization_id() IS '"o"."id" as uuid, else NULL';
