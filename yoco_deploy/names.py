"""User-supplied names that become paths: checked or mapped to a safe folder name here,
and nowhere else.

Device names become ``profiles/NAME/`` and ``predictors/NAME.json``; target labels
become search-log and bundle folders. A name with ``/`` or ``..`` could point anywhere
(a pipeline once deleted a folder outside its workdir through one), so a name is one
plain path component or an error.
"""

from __future__ import annotations

import hashlib
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


_MAX = 100  # what check_name allows


def _plain(label: str) -> str:
    text = "".join(_SLUG_MAP.get(ch, ch) for ch in label)
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).replace("..", "_")


def slug(label: str) -> str:
    """A target label (``NAME:latency=55%,params=20M``) as one folder name; the device
    name in it was checked when the target was parsed. A name over 100 characters is cut
    and ends with a hash of the whole label: two long labels that agree on their first
    100 characters once shared one folder, hence one search log and one bundle."""
    text = _plain(label)
    if len(text) > _MAX:
        digest = hashlib.sha256(label.encode()).hexdigest()[:10]
        text = f"{text[: _MAX - len(digest) - 1]}-{digest}"
    return check_name(text, "target folder")


def cut_slug(label: str) -> str | None:
    """The folder a label over 100 characters had before ``slug`` added its hash (the
    label cut at 100), where an older search log may be; None for a shorter label."""
    text = _plain(label)
    return check_name(text[:_MAX], "target folder") if len(text) > _MAX else None
