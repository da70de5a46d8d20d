"""User-supplied names that become paths: checked or mapped to a safe folder name here,
and nowhere else.

Device names become ``profiles/NAME/`` and ``predictors/NAME.json``; target labels
become search-log and bundle folders. A name with ``/`` or ``..`` could point anywhere
(a pipeline once deleted a folder outside its workdir through one), so a name is one
plain path component or an error.
"""

from __future__ import annotations

import re

from yoco_deploy.errors import YocoError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_SLUG_MAP = {":": "_", ",": "_", "=": "-", "%": "pct"}


class UnsafeNameError(YocoError, ValueError):
    """A name that would become a path is not a plain folder name."""


def check_name(value: str, what: str = "name") -> str:
    """``value`` itself when it is a safe single path component, else a clear error."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise UnsafeNameError(
            f"{what} {value!r} is not a plain name: use 1 to 100 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit (it becomes a folder name)"
        )
    return value


def slug(label: str) -> str:
    """A target label (``NAME:latency=55%,params=20M``) as one folder name; the device
    name in it was checked when the target was parsed."""
    text = "".join(_SLUG_MAP.get(ch, ch) for ch in label)
    text = re.sub(r"[^A-Za-z0-9._-]", "_", text).replace("..", "_")
    return check_name(text[:100], "target folder")
