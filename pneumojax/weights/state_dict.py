"""PyTorch state_dict layouts (.npz of arrays keyed by state_dict name, or .pth) -> Flax variables.

For torchvision's ResNets (`layer1.0.conv1.weight`) and the EfficientNet-Lite0 port
(`_blocks.3._expand_conv.weight`). Names translate by one rule: a numeric part joins the one before it and
leading underscores go (`layer1.0.downsample.1` -> `layer1_0/downsample_1`, `_blocks.3` -> `blocks_3`), the
classifier `fc` is the head's output layer. Tensors: convolution weights OIHW -> HWIO (depthwise [C, 1, h, w]
-> [h, w, 1, C] by the same transpose), linear weights [out, in] -> [in, out], BatchNorm weight/bias/running
statistics -> scale/bias/mean/var; `num_batches_tracked` counters are not weights and are left out.
"""

import logging
from pathlib import Path

import numpy as np

from pneumojax.models import efficientnet, resnet
from pneumojax.models.head import HEAD
from pneumojax.weights import pth
from pneumojax.weights.assign import assign

log = logging.getLogger(__name__)


def read(path) -> dict[str, np.ndarray]:
  if Path(path).suffix == '.npz':
    with np.load(path, allow_pickle=False) as arrays:
      return dict(arrays)
  return pth.load_state_dict(path)


def _module_path(name: str) -> tuple[str, ...]:
  parts = []
  for part in name.split('.'):
    if part.isdigit():
      parts[-1] += f'_{part}'
    else:
      parts.append(part.lstrip('_'))
  return (HEAD, 'out') if parts == ['fc'] else tuple(parts)


def _variable(leaf: str, array: np.ndarray):
  """(collection, Flax name, array in Flax layout) of a state_dict tensor."""
  if leaf == 'weight':
    if array.ndim == 4:
      return 'params', 'kernel', array.transpose(2, 3, 1, 0)
    if array.ndim == 2:
      return 'params', 'kernel', array.T
    return 'params', 'scale', array
  return {'bias': ('params', 'bias'), 'running_mean': ('batch_stats', 'mean'),
          'running_var': ('batch_stats', 'var')}.get(leaf, ('params', leaf)) + (array,)


def load(path, model, target) -> dict:
  """The variables of `model` (shaped as `target`) from a PyTorch state_dict; see pneumojax.weights.load."""
  if not (isinstance(model, efficientnet.EfficientNetLite0)
          or isinstance(model, resnet.ResNet) and model.variant == 'torchvision'):
    raise ValueError(f'PyTorch state_dicts are read for torchvision ResNets and EfficientNet-Lite0, not for '
                     f'{type(model).__name__}{" (variant keras)" if isinstance(model, resnet.ResNet) else ""}.')
  source, dropped = {}, []
  for name, array in read(path).items():
    *modules, leaf = name.split('.')
    if leaf == 'num_batches_tracked':
      continue
    module = _module_path('.'.join(modules))
    if model.features_only and module[0] == HEAD:
      dropped.append(name)
      continue
    collection, variable, array = _variable(leaf, array)
    source[(collection, *module, variable)] = (name, array)
  if dropped:
    log.info('%s: left out the classifier %s (the model has features_only=True).', path, dropped)
  return assign(source, target, str(path))
