"""Runs on a developer's desk (and in the dev stack's issuer container): tokens and the dev stack.

    jwt       `python -m devtools.jwt keygen|mint`: keys and tokens for trying the image
    issuer    the dev stack's token issuer (an HTTP server; DEVELOPMENT ONLY)
    devstack  `make run` / `make stop` / `make logs`: the compose stack in compose/

The issuer's image copies this folder (and runtime/ for its error type).
"""
