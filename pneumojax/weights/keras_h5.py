"""keras.applications weight files (.h5, with or without top) -> Flax variables.

Two layouts are read. The legacy Keras HDF5 one, which `keras.applications.*(weights='imagenet')` downloads and
`model.save('x.h5')` writes: attribute `layer_names`, and per layer a group with attribute `weight_names`
(`block1_conv1/kernel`, `:0` in older files). And Keras 3's `model.save_weights('x.weights.h5')`: per layer a
group `layers/<class name>_<n>/vars` holding the layer's variables as datasets `0`, `1`, ... in the order the layer
created them, with the layer's name in its attribute `name`; they take the names of the Flax module's variables in
that order (kernel, scale, bias, mean, var: Keras's kernel, bias or gamma, beta, moving_mean, moving_variance).
Keras kernels are HWIO like Flax's, except depthwise ones ([h, w, channels, 1] -> [h, w, 1, channels]).

Layers map to Flax modules by name: VGG, MobileNetV2 and DenseNet121 carry Keras's layer names, ResNet's are
translated (`conv2_block1_1_conv` -> `layer1_0/conv1`), and InceptionV3's unnamed `conv2d_N` layers map by their
creation order N to `ConvBN_i`. The classifier (`predictions`, and VGG's `fc1`, `fc2`) maps to the head.
"""

import logging
import re

import flax
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
# The variables of a Keras layer in the order Keras creates them, by their Flax names.
_KERAS_ORDER = (('params', 'kernel'), ('params', 'scale'), ('params', 'bias'), ('batch_stats', 'mean'),
                ('batch_stats', 'var'))
_DAMAGED = 'the file is damaged or incomplete: save or download it again'


def _text(value) -> str:
  return value.decode('utf8') if isinstance(value, bytes) else str(value)


def _attribute(group, name: str) -> list[str]:
  """A list attribute, which Keras splits into `name0`, `name1`, ... when it exceeds HDF5's header limit."""
  if name in group.attrs:
    values = list(group.attrs[name])
  else:
    values, chunk = [], 0
    while f'{name}{chunk}' in group.attrs:
      values += list(group.attrs[f'{name}{chunk}'])
      chunk += 1
  return [_text(v) for v in values]


def _dataset(group, name: str, where: str) -> np.ndarray:
  """The dataset `group[name]`, refused where it is missing or its data lies outside this file."""
  dataset = group.get(name)
  if not isinstance(dataset, h5py.Dataset):
    raise ValueError(f'{where}: the file has no such dataset; {_DAMAGED}.')
  if dataset.file != group.file or dataset.external or dataset.is_virtual:
    raise ValueError(f'{where}: its data lies in another file (an HDF5 external link, external storage or virtual '
                     'dataset), which Keras never writes: refused.')
  try:
    return np.asarray(dataset)
  except OSError as error:
    raise ValueError(f'{where} cannot be read ({error}); {_DAMAGED}.') from error


def _legacy_layers(group, path) -> dict[str, dict[str, np.ndarray]]:
  """{layer name: {weight name: array}} of the layers in the attribute `layer_names` of `group`."""
  layers = {}
  for name in _attribute(group, 'layer_names'):
    if not isinstance(group.get(name), h5py.Group):
      raise ValueError(f'{path}: layer {name!r} is listed in layer_names but has no group; {_DAMAGED}.')
    where = f'{path}: layer {name!r}, weight'
    weights = {w.split('/')[-1].removesuffix(':0'): _dataset(group[name], w, f'{where} {w}')
               for w in _attribute(group[name], 'weight_names')}
    if weights:
      layers[name] = weights
  return layers


def _keras3_layers(group, path) -> dict[str, dict[str, np.ndarray]]:
  """{layer name: {'0': array, '1': ...}} of the `vars` groups below `group` (Keras 3's `layers`)."""
  layers = {}

  def visit(name, variables):
    if name.split('/')[-1] != 'vars' or not isinstance(variables, h5py.Group) or not len(variables):
      return
    if 'name' not in variables.attrs:
      raise ValueError(f"{path} is a Keras `.weights.h5` file without layer names (group {variables.name}): "
                       "older Keras versions did not record them. Load it into its Keras model with "
                       "`model.load_weights` and save it as `model.save('model.h5')` or with a recent Keras.")
    layer = _text(variables.attrs['name'])
    if layer in layers:
      raise ValueError(f'{path}: more than one layer is named {layer!r} (one in {variables.name}), so their weights '
                       'cannot be told apart: give the layers unique names and save again.')
    layers[layer] = {i: _dataset(variables, i, f'{path}: layer {layer!r}, variable {i} ({variables.name}/{i})')
                     for i in sorted(variables, key=lambda i: (len(i), i))}  # '2' before '10'

  group.visititems(visit)
  return layers


def read_layers(path) -> dict[str, dict[str, np.ndarray]]:
  """{layer name: {weight name: array}} for the layers that have weights (Keras 3: {'0': array, '1': ...})."""
  try:
    f = h5py.File(path, 'r')
  except FileNotFoundError:
    raise
  except OSError as error:
    raise ValueError(f'{path} cannot be opened as HDF5 ({error}): it is truncated or not an HDF5 file; save or '
                     'download it again.') from error
  with f:
    group = f['model_weights'] if 'model_weights' in f else f  # A whole saved model keeps its weights there.
    if _attribute(group, 'layer_names'):
      return _legacy_layers(group, path)
    if isinstance(f.get('layers'), h5py.Group):
      return _keras3_layers(f['layers'], path)
    raise ValueError(f"{path} holds no Keras weights: neither the attribute layer_names of Keras's HDF5 layout nor "
                     "the layers group of Keras 3's .weights.h5. Save them with Keras's `model.save_weights` or "
                     "`model.save('model.h5')`.")


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


def _variables(weights: list[str], module: tuple[str, ...], wanted) -> list[tuple[str, str]]:
  """The (collection, Flax name) of each of a layer's weights: by its Keras name, or where Keras 3 numbered them,
  by their order among the variables `module` has in `wanted` (if as many; else they stay numbered, unexpected)."""
  if not all(w.isdigit() for w in weights):
    return [_VARIABLES.get(w, ('params', w)) for w in weights]
  ordered = [(c, v) for c, v in _KERAS_ORDER if (c, *module, v) in wanted]
  return ordered if len(ordered) == len(weights) else [('params', w) for w in weights]


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
  wanted = flax.traverse_util.flatten_dict(flax.core.unfreeze(target))
  source, dropped = {}, []
  for layer, weights in layers.items():
    module = module_paths[layer]
    if model.features_only and module[0] == HEAD:
      dropped.append(layer)
      continue
    for (collection, variable), (weight, array) in zip(_variables(list(weights), module, wanted), weights.items()):
      if collection == 'params' and variable == 'kernel' and 'depthwise' in layer:
        array = array.transpose(0, 1, 3, 2)
      source[(collection, *module, variable)] = (f'{layer}/{weight}', array)
  if dropped:
    log.info('%s: left out the top layers %s (the model has features_only=True).', path, dropped)
  return assign(source, target, str(path))
