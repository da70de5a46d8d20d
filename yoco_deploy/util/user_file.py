"""Reading a file a user names: errors that name the file and say what is wrong, in one
line; JSON no deeper than any file of ours needs; YAML as a mapping without duplicate
keys. The standard library only until YAML is asked for: bundles' manifests are read
here where only onnxruntime, tokenizers and numpy are installed."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

# deeper than any manifest, arch, space or config of ours; deeper nesting is refused
# before a recursive reader (json, yaml, repr) can overflow the stack on it
MAX_DEPTH = 64


@cache
def _unique_key_loader():
    """yaml.safe_load, except that a key given twice is an error (YAML keeps the last
    one silently, so `seed:` written twice would quietly change a run)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
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

    return UniqueKeyLoader


def read_text(path: Path, error: type[Exception], what: str = "") -> str:
    """The UTF-8 text of ``path``, or ``error`` saying why it cannot be read."""
    name = f"{what + ' ' if what else ''}{path}"
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise error(f"cannot read {name}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise error(
            f"{name} is not UTF-8 text (byte {err.start} is not): is it the file you meant?"
        ) from None


def too_deep(data: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether lists and mappings nest deeper than ``limit`` (walked without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if not isinstance(value, dict | list):
            continue
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_json(
    text: str, error: type[Exception], where: str, invalid: str = "is not valid JSON"
) -> Any:
    """The JSON value in ``text`` (from ``where``), or ``error`` with one line."""
    try:
        data = json.loads(text)
        deep = too_deep(data)
    except ValueError as err:
        raise error(f"{where} {invalid}: {err}") from None
    except RecursionError:  # deeper than Python's stack
        deep = True
    if deep:
        raise error(
            f"{where} nests lists or objects deeper than {MAX_DEPTH} levels: no file of ours does"
        )
    return data


def read_json(path: Path, error: type[Exception], what: str = "") -> Any:
    """The JSON value in ``path``, or ``error`` with one line naming the file."""
    return parse_json(read_text(path, error, what), error, str(path))


def load_mapping(path: Path, error: type[Exception], what: str = "the file") -> dict[str, Any]:
    """The YAML mapping in ``path``, or ``error`` with one line saying what is wrong."""
    import yaml

    path = Path(path)
    text = read_text(path, error)
    try:
        data = yaml.load(text, Loader=_unique_key_loader())
    except yaml.YAMLError as err:
        raise error(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise error(f"{path} nests lists or mappings too deeply: no file of ours does") from None
    if data is None:
        return {}
    if too_deep(data):
        raise error(f"{path} nests lists or mappings deeper than {MAX_DEPTH} levels")
    if not isinstance(data, dict):
        raise error(
            f"{path}: {what} must be a mapping of keys to values, not a {type(data).__name__}"
        )
    return data
