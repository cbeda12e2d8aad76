-- pg_session_jwt 0.3.0 -> 0.4.0. Each change below says what it is for.

\echo Use "ALTER EXTENSION pg_session_jwt UPDATE TO '0.4.0'" to load this file. \quit

-- The connection-start settings are read from the server's memory (each setting's reset
-- value, what RESET would restore: pg_session_jwt/pl.py, capture()) instead of through SPI
-- by this function, which RESET them in a subtransaction. That removes the only SPI call of
-- the extension (in parallel mode before PostgreSQL 17 it could wreck the interpreter), and
-- a PL/pgSQL compile, a plan and a subtransaction from every new connection's first call.
DROP FUNCTION auth._connection_settings();
