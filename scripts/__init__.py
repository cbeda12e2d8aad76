"""Build, run and measure tooling for the pg_session_jwt images (see README.md)."""
