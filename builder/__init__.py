"""Runs on the build host: the matrix, Debian bases, image builds, containers of built images.

    matrix        images/versions.yaml, the one list of Postgres majors
    base_image    a Debian base per suite: pulled, or bootstrapped from the archive
    docker_build  the one `docker build` helper (progress, errors, no dangling images)
    build         `python -m builder.build`: one image per major, tags, labels, manifest
    docker_client the Docker connection, with an error that says how to fix a missing daemon
    containers    server containers of a built image (tests, benchmarks) and one-shot commands
    progress      progress lines a person can follow
    prerequisites what make needs on the host: checked at once before any work, installed with
                  apt when it can be (standard library only: runs before .venv exists)

Developer tools, benchmarks and tests build on these.
"""
