"""Strict YAML loading shared by the matrix loader and the config renderer.

PyYAML silently keeps the last of two equal keys; here a duplicated key, like a
syntax error, is a UserError naming the file and line.
"""

from pathlib import Path

import yaml

from runtime.errors import UserError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicated mapping keys."""


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None,
                f"duplicated key {key!r} (first at line {seen[key] + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def compose_file(path):
    """Parse `path` into a node tree (keeps line numbers) and its plain value."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=_StrictLoader)
        value = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML: {exc}") from None
    return node, value


def load_file(path):
    """Load `path` as strict YAML and return its value."""
    return compose_file(path)[1]


def line_of(node, *keys):
    """1-based line of the entry reached by following mapping `keys` from `node`
    (the line of the last key itself, where the reader will look for it)."""
    line = node.start_mark.line
    for key in keys:
        for key_node, value_node in getattr(node, "value", []):
            if isinstance(key_node, yaml.ScalarNode) and str(key_node.value) == str(key):
                line, node = key_node.start_mark.line, value_node
                break
        else:
            break
    return line + 1
