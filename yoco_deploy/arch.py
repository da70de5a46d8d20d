"""The architecture value: an immutable list of (heads, FFN width) per kept layer."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yoco_deploy.errors import ArchError


@dataclass(frozen=True, order=True)
class LayerSpec:
    heads: int
    ffn: int

    def __post_init__(self) -> None:
        for name in ("heads", "ffn"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ArchError(f"layer {name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class Arch:
    """A sub-BERT: the first ``depth`` layers, each with its own heads and FFN width.

    JSON form: ``{"layers": [{"heads": 12, "ffn": 3072}, ...]}``.
    """

    layers: tuple[LayerSpec, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.layers, tuple) or not self.layers:
            raise ArchError("an architecture needs at least one layer")
        if not all(isinstance(layer, LayerSpec) for layer in self.layers):
            raise ArchError("layers must be LayerSpec values")

    @classmethod
    def uniform(cls, depth: int, heads: int, ffn: int) -> Arch:
        return cls(tuple(LayerSpec(heads, ffn) for _ in range(depth)))

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def heads(self) -> tuple[int, ...]:
        return tuple(layer.heads for layer in self.layers)

    @property
    def ffn(self) -> tuple[int, ...]:
        return tuple(layer.ffn for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [{"heads": la.heads, "ffn": la.ffn} for la in self.layers]}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @property
    def arch_id(self) -> str:
        """Stable short id from the content (same layers -> same id, on any machine)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:10]

    def short(self) -> str:
        """Compact human-readable form, e.g. ``L4:12/3072,8/1024,...``."""
        return f"L{self.depth}:" + ",".join(f"{la.heads}/{la.ffn}" for la in self.layers)

    @classmethod
    def from_dict(cls, data: Any) -> Arch:
        if not isinstance(data, dict) or set(data) != {"layers"}:
            raise ArchError(
                'an architecture is a JSON object {"layers": [{"heads": H, "ffn": F}, ...]}'
                f", got {_preview(data)}"
            )
        layers = data["layers"]
        if not isinstance(layers, list):
            raise ArchError(f'"layers" must be a list, got {_preview(layers)}')
        specs = []
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict) or set(layer) != {"heads", "ffn"}:
                raise ArchError(
                    f'layer {i} must be {{"heads": H, "ffn": F}}, got {_preview(layer)}'
                )
            try:
                specs.append(LayerSpec(layer["heads"], layer["ffn"]))
            except ArchError as err:
                raise ArchError(f"layer {i}: {err}") from None
        return cls(tuple(specs))

    @classmethod
    def from_json(cls, text: str) -> Arch:
        from yoco_deploy.util.user_file import parse_json

        return cls.from_dict(parse_json(text, ArchError, "architecture"))

    @classmethod
    def load(cls, path: str | Path) -> Arch:
        from yoco_deploy.util.user_file import read_text

        path = Path(path)
        text = read_text(path, ArchError, "architecture file")
        try:
            return cls.from_json(text)
        except ArchError as err:
            raise ArchError(f"{path}: {err}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(indent=2) + "\n")


def _preview(value: Any, limit: int = 60) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
