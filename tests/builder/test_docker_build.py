"""The one docker build helper against the real daemon: a rebuild that moves a tag leaves no
`<none>` image behind, and a failed build says what failed."""

import uuid

import docker
import pytest

from builder import base_image, docker_build, matrix
from runtime.errors import UserError

pytestmark = [pytest.mark.container, pytest.mark.slow]


@pytest.fixture(scope="module")
def context(tmp_path_factory, docker_client):
    mx = matrix.load()
    base = base_image.ensure(docker_client, mx.default.suite, mx.mirror)
    path = tmp_path_factory.mktemp("ctx")
    (path / "Dockerfile").write_text(f"FROM {base}\nARG VALUE\nRUN echo \"$VALUE\" > /value\n")
    return path


def test_a_rebuild_prunes_the_image_its_tags_moved_away_from(docker_client, context):
    tag = f"pgjwt-test-build-{uuid.uuid4().hex[:8]}:1"
    other = tag.replace(":1", ":other")
    built = []
    try:
        for value in ("first", "second"):
            new, replaced = docker_build.build(docker_client, context=context, tag=tag, scope="test",
                                               what="test image", buildargs={"VALUE": value})
            docker_build.tag_and_prune(docker_client, new, [tag, other], [replaced])
            built.append(new)
        assert built[0] != built[1]
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(built[0])
        assert set(docker_client.images.get(built[1]).tags) == {tag, other}
    finally:
        for image in built:
            try:
                docker_client.images.remove(image, force=True)
            except docker.errors.APIError:
                pass


def test_a_failed_build_names_what_and_keeps_the_log_tail(docker_client, context, tmp_path):
    dockerfile = (context / "Dockerfile").read_text() + "RUN echo boom-line; exit 3\n"
    (tmp_path / "Dockerfile").write_text(dockerfile)
    with pytest.raises(UserError) as err:
        docker_build.build(docker_client, context=tmp_path, tag=None, scope="test", what="the test image",
                           buildargs={"VALUE": "x"})
    message = str(err.value)
    assert message.startswith("the test image: docker build failed:") and "boom-line" in message
