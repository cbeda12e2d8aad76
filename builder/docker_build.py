"""The one way this project runs `docker build`: progress lines, one error style, no dangling images.

Used for the product images (builder.build), the dev stack's helper images
(devtools.devstack) and the benchmark baseline (bench.images). A build that moves a tag
leaves the image it moved away from without a name; `tag_and_prune` removes such images
when nothing else names or uses them, so repeated builds leave no `<none>` images behind.
"""

import re

from builder.progress import say
from runtime.errors import UserError

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BuildFailed(UserError):
    """A failed build: the daemon's error and the last lines of the build log."""

    def __init__(self, what, error, log_lines):
        self.error = error
        self.log_lines = [ANSI.sub("", line) for line in log_lines]
        tail = "\n".join(self.log_lines[-25:])
        super().__init__(f"{what}: docker build failed: {error}\n--- last build lines ---\n{tail}")


def image_id(client, ref):
    """The id of the image `ref` names, or None."""
    import docker

    try:
        return client.images.get(ref).id
    except docker.errors.ImageNotFound:
        return None


def build(client, *, context, tag, scope, what, dockerfile="Dockerfile", buildargs=None, labels=None):
    """Build `dockerfile` in `context` as `tag` (None: untagged) with `labels` on the image;
    returns (new image id, id `tag` named before).

    Progress goes to standard error as `scope: Step ...` lines; a failure raises BuildFailed
    naming `what`."""
    before = image_id(client, tag) if tag else None
    log, built = [], None
    stream = client.api.build(path=str(context), dockerfile=dockerfile, tag=tag, rm=True, forcerm=True,
                              decode=True, buildargs=buildargs or {}, labels=labels)
    for chunk in stream:
        for line in chunk.get("stream", "").splitlines():
            log.append(line)
            if line.startswith("Step "):
                say(scope, line.split(" : ", 1)[-1][:100] if " : " in line else line)
        if "aux" in chunk and "ID" in chunk["aux"]:
            built = chunk["aux"]["ID"]
        if "error" in chunk:
            for _ in stream:  # read to the end, so that the daemon's response is closed
                pass
            raise BuildFailed(what, chunk["error"].strip(), log)
    if built is None:
        raise BuildFailed(what, "no image produced", log)
    return built, before


def tag_and_prune(client, new_id, tags, replaced=()):
    """Point every tag in `tags` at `new_id`, then remove each image in `replaced` (and each
    image a tag pointed at before) that no tag names any more. An image still used by a
    container or as a parent stays: the daemon refuses, and that is fine."""
    import docker

    old = {i for i in replaced if i}
    for tag in tags:
        old.add(image_id(client, tag))
        name, _, tagname = tag.rpartition(":")
        client.images.get(new_id).tag(name, tagname)
    for stale in old - {None, new_id}:
        try:
            if not client.images.get(stale).tags:
                client.images.remove(stale, noprune=False)
        except docker.errors.APIError:
            pass
