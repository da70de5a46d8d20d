"""What a trained super-BERT's ``final/`` folder says about itself beside its weights:
``yoco_supernet.json``, written by the trainer and read by search and ship."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from yoco_deploy.space import SearchSpace

FILE = "yoco_supernet.json"


@dataclass(frozen=True)
class SupernetCheckpoint:
    task: str
    space: dict[str, Any]  # SearchSpace.to_dict()
    sng: dict[str, Any]  # the architecture distribution's state (theta)
    steps: int
    config: dict[str, Any] = field(default_factory=dict)  # the training config, as JSON

    @property
    def theta(self) -> list | None:
        return self.sng.get("theta")

    @property
    def search_space(self) -> SearchSpace | None:
        """The space it was trained over (None in a record from before spaces were kept)."""
        return SearchSpace.from_dict(self.space) if self.space else None

    def write(self, folder: Path) -> None:
        (Path(folder) / FILE).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def read(cls, folder: Path) -> SupernetCheckpoint | None:
        """The record in ``folder``; None for a plain BERT checkpoint (no record)."""
        path = Path(folder) / FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(
            task=data["task"], space=data.get("space", {}), sng=data.get("sng", {}),
            steps=data.get("steps", 0), config=data.get("config", {}),
        )  # fmt: skip
