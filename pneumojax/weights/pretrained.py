"""Imported variables as an Orbax checkpoint, and their restoration into a new model (`config.model.init_from`).

The head is the task's: it always keeps its fresh initialisation, and a checkpoint's head (e.g. ImageNet's 1000
classes) is ignored. Every other variable must come from the checkpoint, with one adaptation: a 3-channel
first-layer kernel [h, w, 3, out] feeding a 1-channel model is summed over its input channels, which computes
exactly what the 3-channel kernel computes on the gray image repeated in three equal channels.
"""

import logging

import flax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from pneumojax.models.head import HEAD
from pneumojax.weights.assign import assign

log = logging.getLogger(__name__)


def save(directory, variables) -> None:
  """Writes `variables` ({'params': ..., 'batch_stats': ...}) to the new directory `directory`."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(epath.Path(directory).absolute(), variables)
  checkpointer.wait_until_finished()


def _is_head(path) -> bool:
  return path[1] == HEAD


def _gray_kernel(array, target_shape):
  if array.ndim == 4 and array.shape[2] == 3 and tuple(target_shape) == (*array.shape[:2], 1, array.shape[3]):
    return array.sum(axis=2, keepdims=True)
  return array


def restore(directory, target) -> dict:
  """`target` (a variables tree) with every variable outside the head read from the checkpoint in `directory`.

  Raises ValueError naming every backbone variable the checkpoint lacks, every checkpoint variable the model
  lacks and every shape that differs.
  """
  directory = epath.Path(directory).absolute()
  saved = flax.traverse_util.flatten_dict(ocp.StandardCheckpointer().restore(directory))
  wanted = flax.traverse_util.flatten_dict(flax.core.unfreeze(target))
  source = {}
  for path, array in saved.items():
    if _is_head(path):
      continue
    array = np.asarray(array)
    if path in wanted and array.shape != wanted[path].shape:
      adapted = _gray_kernel(array, wanted[path].shape)
      if adapted is not array:
        log.info('%s: summed the 3-channel kernel %s over its input channels for 1-channel input.',
                 directory, '/'.join(path))
      array = adapted
    source[path] = ('/'.join(path), array)
  backbone = {path: leaf for path, leaf in wanted.items() if not _is_head(path)}
  variables = flax.traverse_util.flatten_dict(
      assign(source, flax.traverse_util.unflatten_dict(backbone), str(directory)))
  head = {path: leaf for path, leaf in wanted.items() if _is_head(path)}
  return flax.traverse_util.unflatten_dict({**variables, **head})
