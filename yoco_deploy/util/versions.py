"""The versions of the libraries that made an artifact, recorded inside it."""

from __future__ import annotations

import importlib

# the record's name for a library, where its import name differs
IMPORT_NAMES = {"scikit-learn": "sklearn"}


def library_versions(*names: str) -> dict[str, str]:
    """yoco_deploy's version, then each named library's (as imported in this process)."""
    import yoco_deploy

    out = {"yoco_deploy": yoco_deploy.__version__}
    for name in names:
        out[name] = importlib.import_module(IMPORT_NAMES.get(name, name)).__version__
    return out
