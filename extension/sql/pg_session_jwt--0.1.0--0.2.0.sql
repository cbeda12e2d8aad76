-- pg_session_jwt 0.1.0 -> 0.2.0: auth.jwt_session_end(); clean errors from init() and
-- jwt_session_init().
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

-- Refusals from auth.init() and auth.jwt_session_init() are raised by PL/pgSQL from a
-- [sqlstate, message] pair the Python side returns, so the ERROR carries exactly that
-- message and SQLSTATE. Raised from PL/Python it reads "plpy.Error: ..." with a Python
-- traceback as CONTEXT. PL/pgSQL also caches its plans, where 0.1.0's BEGIN ATOMIC
-- wrapper was planned on every call. Names are schema-qualified: no SET search_path,
-- which would make the SET of pg_session_jwt.jwt part of the function's own GUC scope.
CREATE FUNCTION auth._init() RETURNS text[]
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import init_check as f
    SD["f"] = f
return f(plpy)
$$;

CREATE FUNCTION auth._check(jwt text) RETURNS text[]
LANGUAGE plpython3u VOLATILE STRICT PARALLEL UNSAFE
AS $$
f = SD.get("f")
if f is None:
    from pg_session_jwt.pl import check as f
    SD["f"] = f
return f(plpy, jwt)
$$;

CREATE OR REPLACE FUNCTION auth.init() RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $$
DECLARE
    failure text[] := auth._init();
BEGIN
    IF failure IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = failure[1], MESSAGE = failure[2];
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION auth.jwt_session_init(jwt text, "local" boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
AS $$
DECLARE
    failure text[] := auth._check(jwt);
BEGIN
    IF failure IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = failure[1], MESSAGE = failure[2];
    END IF;
    PERFORM pg_catalog.set_config('pg_session_jwt.jwt', jwt, "local");
END
$$;

-- 0.1.0's jwt_session_init() was its only caller.
DROP FUNCTION auth._verify(text);
