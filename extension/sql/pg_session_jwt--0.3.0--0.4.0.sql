-- pg_session_jwt 0.3.0 -> 0.4.0. Each change below says what it is for.

\echo Use "ALTER EXTENSION pg_session_jwt UPDATE TO '0.4.0'" to load this file. \quit

-- === Clients: Supabase-style getters and visible refusals ===============================
--
--   * auth.role() and auth.email(): the `role` and `email` claims, as Supabase's helpers
--     of the same names, so that policies written for Supabase run unchanged. Same rules
--     as auth.user_id(): NULL without a session, 42804 when a verified claim is not text;
--     inlinable SQL wrappers over PL/Python helpers that take pg_session_jwt.jwt.
--   * pg_session_jwt.log_refusals (read at connection start like every setting): one LOG
--     line per refused token with a stable reason code (pg_session_jwt/refusals.py). The
--     capture function gains its column, so drop and create it; a unit test holds these
--     names to exactly the connection-start rows of settings.py, plus jwt.

DROP FUNCTION auth._connection_settings();
CREATE FUNCTION auth._connection_settings(
    OUT jwk pg_catalog.text, OUT audience pg_catalog.text, OUT issuer pg_catalog.text,
    OUT leeway pg_catalog.text, OUT require_jti pg_catalog.text, OUT audit_log pg_catalog.text,
    OUT log_refusals pg_catalog.text,
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
        RESET pg_session_jwt.log_refusals;
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
        log_refusals := pg_catalog.current_setting('pg_session_jwt.log_refusals', true);
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
