-- pg_session_jwt 0.3.0 -> 0.4.0. Each change below says what it is for.

\echo Use "ALTER EXTENSION pg_session_jwt UPDATE TO '0.4.0'" to load this file. \quit
