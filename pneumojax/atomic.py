"""Result files that appear whole or not at all: a run killed mid-write must not leave broken JSON behind."""

import json

import numpy as np
from etils import epath


def write_json(path, obj) -> None:
  """Writes `obj` as JSON to `path`, replacing the file only once the new text is complete.

  The text goes to `<path>.tmp` first, then a rename (atomic on a local file system) replaces `path`. A `.tmp` left
  by a killed write is never read, and the next write overwrites it.
  """
  path = epath.Path(path)
  partial = path.with_name(f'{path.name}.tmp')
  partial.write_text(json.dumps(obj, indent=1, default=str))
  partial.replace(path)


def write_npz(path, **arrays) -> None:
  """Writes `arrays` to the `.npz` file `path` (numpy.savez), replacing the file only once it is complete."""
  path = epath.Path(path)
  partial = path.with_name(f'{path.name}.tmp')
  with partial.open('wb') as f:
    np.savez(f, **arrays)
  partial.replace(path)
