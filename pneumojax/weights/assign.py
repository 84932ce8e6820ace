"""Named source tensors -> a Flax variables tree, refusing any missing, unexpected or mis-shaped tensor."""

import flax
import numpy as np

_LISTED = 10  # problems listed per kind; an architecture mix-up would otherwise print hundreds.


def _path(path) -> str:
  return '/'.join(path)


def _listing(kind: str, problems: list[str]) -> list[str]:
  problems = sorted(problems)
  more = [f'{kind}: ... and {len(problems) - _LISTED} more'] if len(problems) > _LISTED else []
  return [f'{kind}: {problem}' for problem in problems[:_LISTED]] + more


def assign(source: dict, target, origin: str) -> dict:
  """`source` maps a variable path (collection, *modules, name) to (its name in `origin`, array).

  Returns a variables tree of numpy arrays with exactly the paths, shapes and dtypes of `target` (a tree of
  arrays or ShapeDtypeStructs). Raises ValueError naming the target variables without a source, the source
  tensors without a target and the shapes that differ, so nothing is left at its random initialisation.
  """
  wanted = flax.traverse_util.flatten_dict(flax.core.unfreeze(target))
  missing = [f'{_path(p)} {tuple(wanted[p].shape)}' for p in wanted if p not in source]
  unexpected = [f'{name} {array.shape}' + ('' if name == _path(p) else f' (would be {_path(p)})')
                for p, (name, array) in source.items() if p not in wanted]
  misshaped = [f'{name} is {array.shape}, {_path(p)} needs {tuple(wanted[p].shape)}'
               for p, (name, array) in source.items() if p in wanted and array.shape != tuple(wanted[p].shape)]
  if missing or unexpected or misshaped:
    problems = _listing('missing', missing) + _listing('unexpected', unexpected) + _listing('shape', misshaped)
    raise ValueError(f'{origin} does not fit the model: {len(missing)} missing, {len(unexpected)} unexpected and '
                     f'{len(misshaped)} mis-shaped tensors:\n  ' + '\n  '.join(problems))
  return flax.traverse_util.unflatten_dict(
      {p: np.asarray(array, wanted[p].dtype) for p, (_, array) in source.items()})
