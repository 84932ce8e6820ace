"""keras.applications weight files (.h5, with or without top) -> Flax variables.

The files are the legacy Keras HDF5 layout that `keras.applications.*(weights='imagenet')` downloads: attribute
`layer_names`, and per layer a group with attribute `weight_names` (`block1_conv1/kernel`, `:0` in older files).
Keras kernels are HWIO like Flax's, except depthwise ones ([h, w, channels, 1] -> [h, w, 1, channels]).

Layers map to Flax modules by name: VGG, MobileNetV2 and DenseNet121 carry Keras's layer names, ResNet's are
translated (`conv2_block1_1_conv` -> `layer1_0/conv1`), and InceptionV3's unnamed `conv2d_N` layers map by their
creation order N to `ConvBN_i`. The classifier (`predictions`, and VGG's `fc1`, `fc2`) maps to the head.
"""

import logging
import re

import h5py
import numpy as np

from pneumojax.models import densenet, inception, mobilenet, resnet, vgg
from pneumojax.models.head import HEAD
from pneumojax.weights.assign import assign

log = logging.getLogger(__name__)

# Keras weight name -> (collection, Flax variable name).
_VARIABLES = {'kernel': ('params', 'kernel'), 'depthwise_kernel': ('params', 'kernel'), 'bias': ('params', 'bias'),
              'gamma': ('params', 'scale'), 'beta': ('params', 'bias'),
              'moving_mean': ('batch_stats', 'mean'), 'moving_variance': ('batch_stats', 'var')}


def _attribute(group, name: str) -> list[str]:
  """A list attribute, which Keras splits into `name0`, `name1`, ... when it exceeds HDF5's header limit."""
  if name in group.attrs:
    values = list(group.attrs[name])
  else:
    values, chunk = [], 0
    while f'{name}{chunk}' in group.attrs:
      values += list(group.attrs[f'{name}{chunk}'])
      chunk += 1
  return [v.decode('utf8') if isinstance(v, bytes) else str(v) for v in values]


def read_layers(path) -> dict[str, dict[str, np.ndarray]]:
  """{layer name: {weight name: array}} for the layers that have weights, in the file's order."""
  layers = {}
  with h5py.File(path, 'r') as f:
    group = f['model_weights'] if 'model_weights' in f else f  # A whole saved model keeps its weights there.
    for name in _attribute(group, 'layer_names'):
      weights = {w.split('/')[-1].removesuffix(':0'): np.asarray(group[name][w])
                 for w in _attribute(group[name], 'weight_names')}
      if weights:
        layers[name] = weights
  return layers


def _same_names(names):
  # Keras 2 named DenseNet layers 'conv1/conv'; Keras 3 'conv1_conv'.
  return {n: (HEAD, 'out') if n == 'predictions' else (n.replace('/', '_'),) for n in names}


def _vgg_names(names):
  top = {'fc1': (HEAD, 'hidden0'), 'fc2': (HEAD, 'hidden1'), 'predictions': (HEAD, 'out')}
  return {n: top.get(n, (n,)) for n in names}


def _resnet_names(names):
  """conv1_conv -> conv1, conv1_bn -> bn1; convS_blockB_I_(conv|bn) -> layer{S-1}_{B-1}/(conv|bn)I, I = 0 the shortcut."""
  paths = {}
  for n in names:
    block = re.fullmatch(r'conv(\d)_block(\d+)_(\d)_(conv|bn)', n)
    if block:
      stage, index, layer, kind = block.groups()
      module = f'downsample_{int(kind == "bn")}' if layer == '0' else f'{kind}{layer}'
      paths[n] = (f'layer{int(stage) - 1}_{int(index) - 1}', module)
    else:
      paths[n] = {'conv1_conv': ('conv1',), 'conv1_bn': ('bn1',), 'predictions': (HEAD, 'out')}.get(n, (n,))
  return paths


def _inception_names(names):
  """The i-th created `conv2d[_N]` / `batch_normalization[_N]` layer (by N; none is 0) -> ConvBN_i/conv, /bn."""
  paths = {'predictions': (HEAD, 'out')} if 'predictions' in names else {}
  for prefix, module in (('conv2d', 'conv'), ('batch_normalization', 'bn')):
    numbered = {}
    for n in names:
      match = re.fullmatch(prefix + r'(?:_(\d+))?', n)
      if match:
        numbered[int(match.group(1) or 0)] = n
    paths.update({numbered[k]: (f'ConvBN_{i}', module) for i, k in enumerate(sorted(numbered))})
  return {n: paths.get(n, (n,)) for n in names}


_NAMES = {vgg.VGG: _vgg_names, resnet.ResNet: _resnet_names, inception.InceptionV3: _inception_names,
          densenet.DenseNet: _same_names, mobilenet.MobileNetV2: _same_names}


def load(path, model, target) -> dict:
  """The variables of `model` (shaped as `target`) from a Keras weight file; see pneumojax.weights.load."""
  if type(model) not in _NAMES:
    raise ValueError(f'Keras weight files exist for {", ".join(c.__name__ for c in _NAMES)}, not for '
                     f'{type(model).__name__}.')
  if isinstance(model, resnet.ResNet) and model.variant != 'keras':
    raise ValueError("Keras ResNet weights need the Keras variant of the model: "
                     "get_model('resnet50', variant='keras').")
  layers = read_layers(path)
  module_paths = _NAMES[type(model)](list(layers))
  source, dropped = {}, []
  for layer, weights in layers.items():
    module = module_paths[layer]
    if model.features_only and module[0] == HEAD:
      dropped.append(layer)
      continue
    for weight, array in weights.items():
      collection, variable = _VARIABLES.get(weight, ('params', weight))
      if collection == 'params' and variable == 'kernel' and 'depthwise' in layer:
        array = array.transpose(0, 1, 3, 2)
      source[(collection, *module, variable)] = (f'{layer}/{weight}', array)
  if dropped:
    log.info('%s: left out the top layers %s (the model has features_only=True).', path, dropped)
  return assign(source, target, str(path))
