"""Runs inside the image, before the server starts: the entrypoint's Python.

Copied into every image as one folder (`COPY runtime/`). Standard library and PyYAML
(Debian's python3-yaml) only, plus the extension's own package, which the image installs
in the same Python:

    errors       the one error type a person must act on, and the one CLI error exit
    yamlfile     strict YAML (duplicate keys are errors naming FILE:LINE)
    render_conf  YAML settings -> postgresql.conf, at build time and at every start
    config       the run-time configuration (PG_SESSION_JWT_*, a mounted YAML), checked
                 and written before anything touches the data directory

The host's build, tools and tests import these modules too; nothing here imports them.
"""
