"""The build tooling's pure logic: build arguments, base-image choice, failure messages."""

import pytest

from builder import base_image, build, docker_build, docker_client, matrix
from runtime.errors import UserError


@pytest.fixture
def entry():
    return matrix.load().majors[-1]


def test_build_args_come_from_the_matrix(entry):
    mx = matrix.load()
    args = build.build_args(entry, mx, f"pg-session-jwt-base:{entry.suite}", "sha256:ab")
    assert args["PG_MAJOR"] == str(entry.major) and args["BASE_DIGEST"] == "sha256:ab"
    assert args["PACKAGES"].split() == list(mx.common_packages + entry.packages)


def test_labels_come_from_the_matrix_the_control_file_and_the_manifest(entry):
    manifest = {"base": {"name": "debian:forky-slim", "digest": "sha256:ab"},
                "packages": {"postgresql": {"package": f"postgresql-{entry.major}", "version": "1-1"}}}
    labels = build.labels(entry, manifest)
    description = labels["org.opencontainers.image.description"]
    assert description.startswith(f"PostgreSQL {entry.major} (Debian {entry.suite})")
    assert labels["org.opencontainers.image.version"] == build.extension_version()
    assert labels["org.opencontainers.image.created"].endswith("Z")
    assert labels["org.opencontainers.image.base.name"] == "debian:forky-slim"
    assert labels[build.BASE_DIGEST_LABEL] == "sha256:ab"
    assert labels[build.PACKAGES_LABEL] == f"postgresql-{entry.major}=1-1"


@pytest.mark.parametrize("entry", matrix.load().majors, ids=lambda m: f"pg{m.major}")
def test_data_layout_build_args_follow_the_matrix_entry(entry):
    args = build.build_args(entry, matrix.load(), "base", "9.9.9")
    assert (args["PGDATA"], args["PG_VOLUME"]) == (entry.pgdata, entry.volume)
    # The entrypoint refuses data at the old place only where the layout moved.
    assert args["LEGACY_PGDATA"] == (matrix.OLD_PGDATA if entry.major_dir_layout else "")


def test_dockerfile_takes_the_layout_from_build_args():
    text = (matrix.ROOT / build.DOCKERFILE).read_text()
    assert "PGDATA=${PGDATA}" in text and "\nVOLUME ${PG_VOLUME}\n" in text
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not any("/var/lib/postgresql/data" in line or "VOLUME /" in line for line in code)


def test_extension_version_is_the_control_files_default_version():
    control = (matrix.ROOT / "extension" / "pg_session_jwt.control").read_text()
    assert f"default_version = '{build.extension_version()}'" in control


def failure(log, error):
    return docker_build.BuildFailed("PostgreSQL 17", error, log)


def test_apt_failure_names_packages_and_suite(entry):
    log = ["Step 5/20 : RUN apt-get install", "\x1b[91mE: Unable to locate package postgresql-99\x1b[0m"]
    message = str(build.explain_failure(entry, failure(log, "returned a non-zero code: 100")))
    assert f"PostgreSQL {entry.major}" in message and f"Debian {entry.suite}" in message
    assert "postgresql-99" in message and "images/versions.yaml" in message


def test_other_apt_failure_points_at_the_mirror(entry):
    log = ["E: Failed to fetch http://deb.debian.org/debian/dists/forky/InRelease"]
    assert "mirror" in str(build.explain_failure(entry, failure(log, "x")))


def test_non_apt_failure_keeps_the_log_tail(entry):
    message = str(build.explain_failure(entry, failure(["Step 9/20 : COPY x y", "no such file"],
                                                       "COPY failed")))
    assert "COPY failed" in message and "no such file" in message


def test_debootstrap_uses_sid_script_for_suites_it_does_not_know(tmp_path, monkeypatch):
    (tmp_path / "bookworm").write_text("")
    monkeypatch.setattr(base_image, "DEBOOTSTRAP_SCRIPTS", tmp_path)
    assert base_image.debootstrap_command("bookworm", "/r", "http://m")[-1] == str(tmp_path / "bookworm")
    assert base_image.debootstrap_command("forky", "/r", "http://m")[-1] == str(tmp_path / "sid")


def test_missing_debootstrap_says_how_to_install(monkeypatch):
    monkeypatch.setattr(base_image.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="apt-get install debootstrap"):
        base_image.bootstrap(client=None, suite="trixie", mirror="http://m")


def test_unreachable_docker_daemon_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(UserError, match="cannot reach the Docker daemon: no socket at .*Start the daemon"):
        docker_client.connect()


def test_cli_unknown_major_exits_2(capsys):
    majors = [m.major for m in matrix.load().majors]
    unknown = max(majors) + 1
    assert build.main(["--pg", str(unknown)]) == 2
    assert f"known majors are {', '.join(map(str, majors))}" in capsys.readouterr().err


def test_slim_drops_docs_but_keeps_copyright_and_locale_alias(tmp_path):
    files = ["usr/share/doc/bash/README", "usr/share/doc/bash/copyright", "usr/share/man/man1/ls.1.gz",
             "usr/share/info/dir", "usr/share/locale/de/LC_MESSAGES/x.mo", "usr/share/locale/locale.alias",
             "var/cache/apt/archives/x.deb", "var/lib/apt/lists/x_Packages", "usr/bin/bash"]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    base_image.slim(tmp_path)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["etc/dpkg/dpkg.cfg.d/docker-slim", "usr/bin/bash", "usr/share/doc/bash/copyright",
                    "usr/share/locale/locale.alias"]
    config = (tmp_path / "etc/dpkg/dpkg.cfg.d/docker-slim").read_text()
    assert "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n" in config


def test_base_apt_sources_include_updates_and_security():
    sources = base_image.apt_sources("trixie", "http://deb.debian.org/debian").splitlines()
    assert sources == ["deb http://deb.debian.org/debian trixie main",
                       "deb http://deb.debian.org/debian trixie-updates main",
                       "deb http://deb.debian.org/debian-security trixie-security main"]


class FakeImages:
    def __init__(self, labels):
        self.labels = labels

    def get(self, ref):
        return self


class FakeClient:
    def __init__(self, labels):
        self.images = FakeImages(labels)


@pytest.mark.parametrize("label, bootstraps", [("current", False), ("stale", True), (None, True)])
def test_cached_base_is_reused_only_while_its_recipe_matches(monkeypatch, label, bootstraps):
    mirror = "http://deb.debian.org/debian"
    labels = {} if label is None else {
        base_image.RECIPE_LABEL: base_image.recipe("trixie", mirror) if label == "current" else "0" * 16}
    ran = []
    monkeypatch.setattr(base_image, "_exists", lambda client, ref: ref == base_image.cached_ref("trixie"))
    monkeypatch.setattr(base_image, "bootstrap", lambda client, suite, m: ran.append(suite))
    assert base_image.ensure(FakeClient(labels), "trixie", mirror) == "pg-session-jwt-base:trixie"
    assert ran == (["trixie"] if bootstraps else [])


def test_recipe_changes_with_the_mirror():
    assert base_image.recipe("trixie", "http://a/debian") != base_image.recipe("trixie", "http://b/debian")


def test_package_versions_label_lists_each_package_once_by_role():
    manifest = {"packages": {"python": {"package": "python3", "version": "3.13.5-1"},
                             "postgresql": {"package": "postgresql-17", "version": "17.7-1"}}}
    assert build.package_versions(manifest) == "postgresql-17=17.7-1 python3=3.13.5-1"


def test_changes_since_the_previous_build_name_packages_and_base():
    before = {build.PACKAGES_LABEL: "postgresql-17=17.6-1 python3=3.13.5-1",
              build.BASE_DIGEST_LABEL: "sha256:aa"}
    after = {build.PACKAGES_LABEL: "postgresql-17=17.7-1 python3=3.13.5-1 libsodium23=1.0.18-1",
             build.BASE_DIGEST_LABEL: "sha256:bb"}
    assert build.changes(before, after) == ["libsodium23 (none) -> 1.0.18-1",
                                            "postgresql-17 17.6-1 -> 17.7-1",
                                            "base sha256:aa -> sha256:bb"]
    assert build.changes(after, after) == ["same packages and base as the previous build"]
    assert build.changes(None, after) == ["first build of this tag"]


@pytest.mark.parametrize("debian, upstream", [("17.12-0+deb13u1", "17.12"), ("15.20-0+deb12u1", "15.20"),
                                              ("18.6-1", "18.6")])
def test_the_server_version_is_the_upstream_part_of_the_package_version(debian, upstream):
    manifest = {"packages": {"postgresql": {"package": "postgresql-17", "version": debian}}}
    assert build.server_version(manifest) == upstream
