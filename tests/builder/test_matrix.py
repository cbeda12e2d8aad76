"""The matrix loader: images/versions.yaml is read, checked, and errors name file and line."""

import pytest

from builder import matrix
from runtime.errors import UserError

GOOD = """\
default: 17
mirror: http://deb.debian.org/debian
common_packages: [python3]
majors:
  15:
    suite: bookworm
    packages: [postgresql-15]
  17:
    suite: trixie
    packages: [postgresql-17]
"""


def write(tmp_path, text):
    path = tmp_path / "versions.yaml"
    path.write_text(text)
    return path


def test_repository_matrix_loads_with_one_default():
    mx = matrix.load()
    assert [m.major for m in mx.majors if m.is_default] == [mx.default.major]
    assert all(f"postgresql-{m.major}" in m.packages for m in mx.majors)


def test_good_file(tmp_path):
    mx = matrix.load(write(tmp_path, GOOD))
    assert [(m.major, m.suite) for m in mx.majors] == [(15, "bookworm"), (17, "trixie")]
    assert mx.default.major == 17
    assert mx.common_packages == ("python3",)


def test_tags_include_minor_and_latest_for_default_only(tmp_path):
    mx = matrix.load(write(tmp_path, GOOD))
    m15, m17 = mx.majors
    assert m17.tags("17.6 (Debian 17.6-1)") == ["pg-session-jwt:17", "pg-session-jwt:17.6",
                                                  "pg-session-jwt:latest"]
    assert m15.tags("15.14", repo="me/pg") == ["me/pg:15", "me/pg:15.14"]


def test_select_unknown_major_lists_known(tmp_path):
    mx = matrix.load(write(tmp_path, GOOD))
    assert [m.major for m in mx.select(["17"])] == [17]
    assert len(mx.select([])) == 2
    with pytest.raises(UserError, match=r"unknown Postgres major '16'.*15, 17"):
        mx.select(["16"])


@pytest.mark.parametrize("text, line, message", [
    (GOOD.replace("default: 17", "default: 16"), 1, "default 16 is not one of the majors"),
    (GOOD.replace("  17:\n    suite: trixie", "  15:\n    suite: trixie"), 8, "duplicated key 15"),
    (GOOD.replace("suite: trixie", "suite: [trixie]"), 9, "'suite' must be a Debian suite"),
    (GOOD.replace("packages: [postgresql-17]", "packages: postgresql-17"), 10, "'packages' must be"),
    (GOOD.replace("    packages: [postgresql-15]\n", ""), 5, "exactly the keys"),
    (GOOD.replace("mirror:", "mirrors:"), 1, "missing key 'mirror'"),
    (GOOD + "  x: [\n", 12, "invalid YAML"),
])
def test_bad_files_name_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as err:
        matrix.load(path)
    assert str(err.value).startswith(f"{path}:{line}: ")
    assert message in str(err.value)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        matrix.load(tmp_path / "nope.yaml")


def test_data_layout_moves_at_the_cutoff(tmp_path):
    """Below MAJOR_DIR_LAYOUT_FROM: PGDATA is the VOLUME, /var/lib/postgresql/data; from it on,
    as the official image: PGDATA /var/lib/postgresql/<major>/docker below VOLUME
    /var/lib/postgresql. Derived from the major, never listed per major."""
    cut = matrix.MAJOR_DIR_LAYOUT_FROM
    text = GOOD.replace("  17:\n", f"  {cut}:\n").replace("default: 17", f"default: {cut}")
    old, new = matrix.load(write(tmp_path, text)).majors
    assert (old.pgdata, old.volume) == ("/var/lib/postgresql/data", "/var/lib/postgresql/data")
    assert (new.pgdata, new.volume) == (f"/var/lib/postgresql/{cut}/docker", "/var/lib/postgresql")
    later = matrix.Major(cut + 3, "sid", (), False)
    assert later.major_dir_layout and later.pgdata == f"/var/lib/postgresql/{cut + 3}/docker"


def test_entry_by_major(tmp_path):
    mx = matrix.load(write(tmp_path, GOOD))
    assert mx.entry("15").suite == "bookworm" and mx.entry(17).major == 17
    with pytest.raises(UserError, match="known majors are 15, 17"):
        mx.entry(16)
