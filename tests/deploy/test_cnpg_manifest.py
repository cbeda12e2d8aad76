"""deploy/cnpg/cluster.yaml: the structure CloudNativePG needs, checked against the image."""

import json
import re

import yaml

from builder import matrix

DEPLOY = matrix.ROOT / "deploy" / "cnpg"
CLUSTER = yaml.safe_load((DEPLOY / "cluster.yaml").read_text())
SPEC = CLUSTER["spec"]
CREATE = "CREATE EXTENSION IF NOT EXISTS pg_session_jwt CASCADE"


def test_is_a_cloudnativepg_cluster():
    assert CLUSTER["apiVersion"] == "postgresql.cnpg.io/v1"
    assert CLUSTER["kind"] == "Cluster"
    assert CLUSTER["metadata"]["name"]
    assert SPEC["instances"] >= 2  # a primary and at least one standby


def test_image_tag_is_major_dot_minor_of_a_major_in_the_matrix():
    """CloudNativePG reads the major from a tag starting <major> or <major>.<minor>."""
    match = re.fullmatch(r"(?:[^/]+/)*(?P<repo>[a-z0-9-]+):(?P<major>\d+)\.(?P<minor>\d+)",
                         SPEC["imageName"])
    assert match, SPEC["imageName"]
    assert match["repo"] == matrix.DEFAULT_REPO
    assert int(match["major"]) in {m.major for m in matrix.load().majors}


def test_uid_and_gid_are_the_images_postgres_user():
    dockerfile = (matrix.ROOT / "images" / "Dockerfile").read_text()
    uid, gid = SPEC["postgresUID"], SPEC["postgresGID"]
    assert f"--uid={uid}" in dockerfile and f"--gid={gid}" in dockerfile


def test_key_is_a_public_jwk_in_the_server_parameters():
    parameters = SPEC["postgresql"]["parameters"]
    key = json.loads(parameters["pg_session_jwt.jwk"])
    assert key["kty"] in ("OKP", "EC", "RSA") and "d" not in key  # public, asymmetric
    assert all(isinstance(v, str) for v in parameters.values())  # CNPG takes strings
    assert all(name.startswith("pg_session_jwt.") for name in parameters)


def test_extension_is_created_at_bootstrap_in_template1_and_both_databases():
    initdb = SPEC["bootstrap"]["initdb"]
    for step in ("postInitTemplateSQL", "postInitSQL", "postInitApplicationSQL"):
        assert CREATE in initdb[step], step
    assert initdb["database"] and initdb["owner"]


def test_readme_covers_loading_the_image():
    text = (DEPLOY / "README.md").read_text()
    assert "make push REGISTRY=" in text and "cluster.yaml" in text
    assert "kind load docker-image" in text
