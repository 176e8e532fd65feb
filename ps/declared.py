"""The input declarations a shard keeps for its models, and the rules for accepting one.

Rules (`Declarations.offer`): the first declaration a model gets wins; an identical one is
agreed to; a different one is refused with `DeclarationConflict` naming what differs; a model
the spec already specifies (`common.declaration.is_open`) takes none; a model that was trained
before any declaration keeps running undeclared, as it was trained. A shard applies the rules
on its own, and the trainer makes every shard hear the same declaration by offering it to
shard 0 first and then offering shard 0's answer to the others, so racing trainers are
ordered by shard 0 and all shards end up with one declaration.

Why a side file rather than the log: a declaration is one small value decided once, before
the model's first push, and must be known before the log is replayed (it sets the optimizer
the replayed pushes are applied with). `declarations.json` is written to a temporary file,
fsynced and renamed before the shard answers, so an acknowledged declaration survives kill -9
and a machine crash, and snapshots need not carry it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from common.config import ModelSpec
from common.declaration import Declaration, differences, is_open
from common.errors import ConfigError, DeclarationConflict, InvalidValue
from ps.wal import fsync_dir

FILENAME = "declarations.json"


class Declarations:
    """Per model: its declaration, or none; backed by `directory/declarations.json`."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / FILENAME
        self.by_model: dict[str, Declaration] = {}
        if self.path.exists():
            try:
                saved = json.loads(self.path.read_text())
                self.by_model = {m: Declaration.from_dict(d) for m, d in saved.items()}
            except (OSError, ValueError, AttributeError, InvalidValue) as exc:
                raise ConfigError(f"cannot read {self.path}: {exc}; it holds the models' input "
                                  "declarations: restore it, or move it aside to let the next "
                                  "trainer declare them again") from None

    def get(self, model: str) -> Declaration | None:
        return self.by_model.get(model)

    def offer(self, model: str, spec: ModelSpec, offered: Declaration | None,
              trained: bool) -> tuple[Declaration | None, bool]:
        """Apply the rules (module docstring) to a declaration offered for `model` (None:
        only asking); returns (the declaration kept, None if undeclared; whether it is new)."""
        kept = self.by_model.get(model)
        if offered is None:
            return kept, False
        if kept is not None:
            if kept.to_dict() == {**offered.to_dict(), "source": kept.source}:
                return kept, False
            raise DeclarationConflict(
                f"model {model!r} was declared by {kept.source!r}, which differs from this "
                f"declaration (by {offered.source!r}) in {differences(kept, offered)}: a model "
                "learns one input; train it from a source like its first, or name another "
                "model (deltaps up --spec with a [models.NAME] table for each data set)")
        if not is_open(spec):
            raise DeclarationConflict(f"model {model!r} names its fields in the cluster spec; "
                                      "its input is the spec's, not a source's to declare")
        if trained:
            return None, False
        self._save({**self.by_model, model: offered})  # kept only once it is on disk
        self.by_model[model] = offered
        return offered, True

    def _save(self, by_model: dict[str, Declaration]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({m: d.to_dict() for m, d in by_model.items()}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        fsync_dir(self.path.parent)
