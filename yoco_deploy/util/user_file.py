"""Reading a file a user names: errors that name the file and say what is wrong, in one
line; YAML as a mapping without duplicate keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice is an error (YAML keeps the last
    one silently, so `seed:` written twice would quietly change a run)."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool | type(None)):
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be a plain value, got {key!r}", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_text(path: Path, error: type[Exception], what: str = "") -> str:
    """The text of ``path``, or ``error`` saying why it cannot be read."""
    try:
        return Path(path).read_text()
    except OSError as err:
        raise error(f"cannot read {what + ' ' if what else ''}{path}: {err.strerror}") from None


def load_mapping(path: Path, error: type[Exception], what: str = "the file") -> dict[str, Any]:
    """The YAML mapping in ``path``, or ``error`` with one line saying what is wrong."""
    path = Path(path)
    text = read_text(path, error)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise error(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(
            f"{path}: {what} must be a mapping of keys to values, not a {type(data).__name__}"
        )
    return data
