-- pg_session_jwt 0.2.0 -> 0.3.0: an identity that holds when many users share one role
-- and a transaction pooler.
--
--   * No name resolution through the caller: every function resolves types, functions,
--     operators and relations the same way whatever the caller's search_path or pg_temp
--     holds. PL/pgSQL functions get SET search_path = pg_catalog, pg_temp (pg_temp last:
--     it is otherwise searched first for relations and types) *and* schema-qualified
--     names, types included. The SQL-standard bodies (BEGIN ATOMIC / RETURN) of the
--     getters and jwt_session_end() are resolved when created and stay inlinable (no SET
--     clause). 0.2.0 avoided a SET clause on jwt_session_init() believing it would scope
--     set_config('pg_session_jwt.jwt', ..., false) to the function; PostgreSQL keeps such
--     a change after the function returns (only SET LOCAL of a variable named in the
--     clause itself is undone), which tests/container/test_same_role_attacks.py checks.
--   * The token is not kept where SQL can read it: jwt_session_init() leaves a handle in
--     pg_session_jwt.jwt that only this backend's memory maps to the verified session, and
--     that a transaction-scoped session binds to its transaction. A raw token that a
--     gateway puts there is still verified and used, as before.
--   * Fail closed: a NULL token or "local" is ERROR 22004 (0.2.0 was STRICT, so a NULL
--     silently kept the previous identity); pg_session_jwt.session_scope = transaction
--     refuses session-scoped sessions; request.jwt.claims gives an identity only with
--     pg_session_jwt.trust_request_claims = on (both read at connection start, like every
--     setting: see extension/pg_session_jwt/settings.py).

\echo Use "ALTER EXTENSION pg_session_jwt UPDATE TO '0.3.0'" to load this file. \quit

-- Two more connection-start settings, and the connection-start value of the session
-- setting itself (a raw token in the startup packet: under session_scope = transaction the
-- only raw token accepted, as a session-level SET of one would outlive its client on a
-- pooled connection). The column list changes, so drop and create. A unit test holds these
-- names to exactly the connection-start rows of settings.py, plus jwt.
DROP FUNCTION auth._connection_settings();
CREATE FUNCTION auth._connection_settings(
    OUT jwk pg_catalog.text, OUT audience pg_catalog.text, OUT issuer pg_catalog.text,
    OUT leeway pg_catalog.text, OUT require_jti pg_catalog.text, OUT audit_log pg_catalog.text,
    OUT max_token_bytes pg_catalog.text, OUT trust_request_claims pg_catalog.text,
    OUT session_scope pg_catalog.text, OUT jwt pg_catalog.text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
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
        RESET pg_session_jwt.trust_request_claims;
        RESET pg_session_jwt.session_scope;
        RESET pg_session_jwt.jwt;
        jwk := pg_catalog.current_setting('pg_session_jwt.jwk', true);
        audience := pg_catalog.current_setting('pg_session_jwt.audience', true);
        issuer := pg_catalog.current_setting('pg_session_jwt.issuer', true);
        leeway := pg_catalog.current_setting('pg_session_jwt.leeway', true);
        require_jti := pg_catalog.current_setting('pg_session_jwt.require_jti', true);
        audit_log := pg_catalog.current_setting('pg_session_jwt.audit_log', true);
        max_token_bytes := pg_catalog.current_setting('pg_session_jwt.max_token_bytes', true);
        trust_request_claims := pg_catalog.current_setting('pg_session_jwt.trust_request_claims', true);
        session_scope := pg_catalog.current_setting('pg_session_jwt.session_scope', true);
        jwt := pg_catalog.current_setting('pg_session_jwt.jwt', true);
        -- A private SQLSTATE rolls the RESETs back; any other error propagates.
        RAISE SQLSTATE 'PJ000';
    EXCEPTION WHEN SQLSTATE 'PJ000' THEN
        NULL;
    END;
END
$$;

-- Verifies the token and returns [NULL, handle], or [sqlstate, message] for the caller
-- to raise (a NULL argument is one of those refusals). Called directly it only hands out
-- a handle for the caller's own verified token: what it returns is no more than
-- jwt_session_init() would store.
CREATE FUNCTION auth._start(jwt pg_catalog.text, "local" pg_catalog.bool)
RETURNS pg_catalog.text[]
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import start as f
    SD["f"] = f
return f(plpy, jwt, local)
$$;

CREATE OR REPLACE FUNCTION auth.init() RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    failure pg_catalog.text[] := auth._init();
BEGIN
    IF failure IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = failure[1], MESSAGE = failure[2];
    END IF;
END
$$;

-- Not STRICT any more: a NULL argument is an ERROR, never "keep the previous identity"
-- (auth._start() refuses it). Every statement is a plain assignment or IF, which PL/pgSQL
-- evaluates as a simple expression; a PERFORM would start the executor on every call.
CREATE OR REPLACE FUNCTION auth.jwt_session_init(jwt pg_catalog.text, "local" pg_catalog.bool DEFAULT false)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result pg_catalog.text[] := auth._start(jwt, "local");
    handle pg_catalog.text;
BEGIN
    IF result[1] IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = result[1], MESSAGE = result[2];
    END IF;
    handle := pg_catalog.set_config('pg_session_jwt.jwt', result[2], "local");
END
$$;
COMMENT ON FUNCTION auth.jwt_session_init(pg_catalog.text, pg_catalog.bool) IS
    'verify a JWT and make it the session''s (or, with local => true, the transaction''s); pg_session_jwt.jwt then holds a handle, not the token';

-- 0.2.0's jwt_session_init() was its only caller.
DROP FUNCTION auth._check(pg_catalog.text);

-- The getters pass only pg_session_jwt.jwt: the Python side reads request.jwt.claims
-- itself, and only when the token setting is empty (no session, or PostgREST's claims).
-- Each getter is inlined at every planning of a query that uses it, and a second
-- current_setting() in the body made that planning cost about as much again as the rest.
CREATE FUNCTION auth._session(jwt pg_catalog.text) RETURNS pg_catalog.jsonb
LANGUAGE plpython3u STABLE PARALLEL RESTRICTED
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import session as f
    SD["f"] = f
return f(plpy, jwt)
$$;

CREATE FUNCTION auth._user_id(jwt pg_catalog.text) RETURNS pg_catalog.text
LANGUAGE plpython3u STABLE PARALLEL RESTRICTED
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import user_id as f
    SD["f"] = f
return f(plpy, jwt)
$$;

CREATE FUNCTION auth._uid(jwt pg_catalog.text) RETURNS pg_catalog.uuid
LANGUAGE plpython3u STABLE PARALLEL RESTRICTED
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import uid as f
    SD["f"] = f
return f(plpy, jwt)
$$;

CREATE FUNCTION auth._organization(jwt pg_catalog.text) RETURNS pg_catalog.jsonb
LANGUAGE plpython3u STABLE PARALLEL RESTRICTED
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import organization as f
    SD["f"] = f
return f(plpy, jwt)
$$;

CREATE FUNCTION auth._organization_id(jwt pg_catalog.text) RETURNS pg_catalog.uuid
LANGUAGE plpython3u STABLE PARALLEL RESTRICTED
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import organization_id as f
    SD["f"] = f
return f(plpy, jwt)
$$;

CREATE OR REPLACE FUNCTION auth.session() RETURNS pg_catalog.jsonb
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN auth._session(pg_catalog.current_setting('pg_session_jwt.jwt', true));

CREATE OR REPLACE FUNCTION auth.jwt() RETURNS pg_catalog.jsonb
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN auth._session(pg_catalog.current_setting('pg_session_jwt.jwt', true));

CREATE OR REPLACE FUNCTION auth.user_id() RETURNS pg_catalog.text
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN auth._user_id(pg_catalog.current_setting('pg_session_jwt.jwt', true));

CREATE OR REPLACE FUNCTION auth.uid() RETURNS pg_catalog.uuid
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN auth._uid(pg_catalog.current_setting('pg_session_jwt.jwt', true));

CREATE OR REPLACE FUNCTION auth.organization() RETURNS pg_catalog.jsonb
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN auth._organization(pg_catalog.current_setting('pg_session_jwt.jwt', true));

CREATE OR REPLACE FUNCTION auth.organization_id() RETURNS pg_catalog.uuid
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN auth._organization_id(pg_catalog.current_setting('pg_session_jwt.jwt', true));

-- The two-argument helpers' only callers were the getters above.
DROP FUNCTION auth._session(pg_catalog.text, pg_catalog.text);
DROP FUNCTION auth._user_id(pg_catalog.text, pg_catalog.text);
DROP FUNCTION auth._uid(pg_catalog.text, pg_catalog.text);
DROP FUNCTION auth._organization(pg_catalog.text, pg_catalog.text);
DROP FUNCTION auth._organization_id(pg_catalog.text, pg_catalog.text);
