"""The test tree's own rules: test folders mirror the source packages, and a test module never
imports another test module (shared code lives in tests/support, fixtures in conftests), so
that every test is collected, and run, where it is defined."""

import re

from builder.matrix import ROOT

TESTS = ROOT / "tests"
# Where each test folder's code lives; support/ is the tests' own shared code.
MIRRORED = {"extension": "extension", "images": "images", "runtime": "runtime", "builder": "builder",
            "devtools": "devtools", "bench": "bench", "deploy": "deploy", "examples": "examples",
            "support": None}


def test_test_folders_mirror_the_source_folders():
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(MIRRORED)
    for source in filter(None, MIRRORED.values()):
        assert (ROOT / source).is_dir(), source


def test_no_test_module_imports_another():
    offenders = []
    for path in TESTS.rglob("*.py"):
        text = path.read_text()
        if re.search(r"^\s*(from|import)\s+(tests\.\w+\.)?test_\w+", text, re.M):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == [], "move what they share to tests/support or a conftest"
