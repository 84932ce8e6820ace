"""Pretrained weight importers: Keras equivalence, real ImageNet weights, PyTorch layouts, init_from checkpoints."""

import collections
import functools
import io
import json
import os
import pickle
import re
import shutil
import sys
import types
import zipfile

import h5py
import jax
import jax.numpy as jnp
import keras
import numpy as np
import optax
import pytest
from PIL import Image

from pneumojax import models, weights
from pneumojax.models.head import Head
from pneumojax.train.state import TrainState, with_pretrained
from pneumojax.weights import keras_h5, pth
from tests.helpers import SHARED

# Keras's own conversions of its variables to numpy, with every weight of the models built here.
pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')

WEIGHTS = SHARED / 'weights'
MOBILENET_035 = WEIGHTS / 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5'
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _apply(model, variables, x):
  return np.asarray(jax.jit(functools.partial(model.apply, train=False))(variables, x))


def _assert_close(actual, expected):
  """About 1e-4 relative to the output's scale: float32 round-off through up to a hundred layers."""
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def _natural_images(size):
  """dog, eagle, giraffe: RGB in [0, 1], squashed to size x size."""
  return np.stack([np.asarray(Image.open(WEIGHTS / 'natural_images' / f'{name}.jpg').convert('RGB')
                              .resize((size, size), Image.BILINEAR), np.float32) / 255
                   for name in ('dog', 'eagle', 'giraffe')])


# --- Keras applications files -------------------------------------------------------------------------------

# name: (Keras constructor, smallest convenient input size, Flax kwargs giving Keras's top).
KERAS = {
    'vgg16': (keras.applications.VGG16, 64, {'pooling': 'flatten', 'hidden': (4096, 4096)}),
    'vgg19': (keras.applications.VGG19, 32, {'pooling': 'flatten', 'hidden': (4096, 4096)}),
    'resnet50': (keras.applications.ResNet50, 32, {'variant': 'keras'}),
    'inception_v3': (keras.applications.InceptionV3, 75, {}),
    'densenet121': (keras.applications.DenseNet121, 32, {}),
    'mobilenet_v2': (functools.partial(keras.applications.MobileNetV2, alpha=0.5), 32, {'alpha': 0.5}),
}


def _randomise(keras_model, seed=0):
  """BatchNorm statistics, scales and biases away from their initial 0 and 1, so that a swap would show."""
  rng = np.random.default_rng(seed)
  for variable in keras_model.weights:
    if variable.name in ('gamma', 'moving_variance'):
      variable.assign(rng.uniform(0.5, 1.5, variable.shape))
    elif variable.name in ('beta', 'moving_mean', 'bias'):
      variable.assign(rng.normal(0.0, 0.2, variable.shape))


@pytest.mark.parametrize('name', KERAS)
def test_keras_weights_compute_what_keras_computes(name, tmp_path):
  """A random Keras model with its top, saved to .h5: the imported features and logits are Keras's."""
  build, size, kwargs = KERAS[name]
  keras_model = build(weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None)
  _randomise(keras_model)
  path = tmp_path / f'{name}.h5'
  keras_model.save(path)  # Keras's HDF5 layout, as in the files keras.applications downloads.
  features_layer = keras_model.get_layer('flatten').output if name.startswith('vgg') else \
      keras_model.get_layer('predictions').input
  x = np.random.default_rng(1).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
  keras_features, keras_logits = keras.Model(keras_model.input, [features_layer, keras_model.output])(x)

  backbone = models.get_model(name, features_only=True, **kwargs)
  features = _apply(backbone, weights.load(path, backbone, x.shape[1:]), x)
  _assert_close(features, np.asarray(keras_features))
  classifier = backbone.clone(features_only=False, num_classes=10)
  head_params = weights.load(path, classifier, x.shape[1:])['params']['head']
  logits = Head(10, classifier.hidden).apply({'params': head_params}, features, train=False)
  _assert_close(logits, np.asarray(keras_logits))


def test_real_mobilenet_v2_weights_match_keras_loaded_from_the_same_file():
  keras_model = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=str(MOBILENET_035),
                                                input_shape=(224, 224, 3), pooling='avg')
  x = _natural_images(224) * 2 - 1  # MobileNetV2's [-1, 1].
  model = models.get_model('mobilenet_v2', alpha=0.35, features_only=True)
  _assert_close(_apply(model, weights.load(MOBILENET_035, model), x), np.asarray(keras_model(x)))


def test_a_file_without_top_does_not_fill_a_model_with_a_head():
  model = models.get_model('mobilenet_v2', alpha=0.35, num_classes=1000)
  with pytest.raises(ValueError, match=r'(?s)2 missing, 0 unexpected.*'
                                       r'missing: params/head/out/bias \(1000,\)\n  missing: params/head/out/kernel'):
    weights.load(MOBILENET_035, model)


def test_keras_resnet_weights_need_the_keras_variant():
  with pytest.raises(ValueError, match="variant='keras'"):
    weights.load(MOBILENET_035, models.get_model('resnet50'))


@pytest.mark.parametrize('name', ['mobilenet_v2', 'inception_v3'])  # InceptionV3: BatchNorm without scale
def test_keras3_weights_files_give_the_variables_of_the_legacy_h5(name, tmp_path):
  """`model.save_weights('x.weights.h5')` numbers a layer's variables; they must land where their names put them."""
  build, size, kwargs = KERAS[name]
  keras_model = build(weights=None, input_shape=(size, size, 3), classes=10, classifier_activation=None)
  _randomise(keras_model)
  keras_model.save_weights(tmp_path / 'keras3.weights.h5')
  keras_model.save(tmp_path / 'legacy.h5')
  model = models.get_model(name, num_classes=10, **kwargs)
  jax.tree.map(np.testing.assert_array_equal, weights.load(tmp_path / 'keras3.weights.h5', model, (size, size, 3)),
               weights.load(tmp_path / 'legacy.h5', model, (size, size, 3)))


@pytest.mark.parametrize('damage, problem', [
    (lambda f: f['layers/dense/vars'].attrs.pop('name'), ' is a Keras `.weights.h5` file without layer names'),
    (lambda f: f.copy(f['layers/dense'], 'layers/dense_1'), ": more than one layer is named 'dense'"),
], ids=['unnamed', 'same_names'])  # as older Keras versions wrote them; as nested models can have them
def test_keras3_weights_files_whose_layers_cannot_be_told_apart_are_refused(damage, problem, tmp_path):
  path = tmp_path / 'dense.weights.h5'
  keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name='dense')]).save_weights(path)
  with h5py.File(path, 'r+') as f:
    damage(f)
  with pytest.raises(ValueError, match=re.escape(f'{path}{problem}')):
    keras_h5.read_layers(path)


def _damage(path, damage):
  shutil.copy(MOBILENET_035, path)
  path.chmod(0o644)  # The shared original is read-only.
  with h5py.File(path, 'r+') as f:
    damage(f)


def _external_kernel(f):
  """Conv1's kernel replaced by one whose data are the bytes of another file (HDF5 external storage)."""
  shape = f['Conv1/Conv1/kernel'].shape
  del f['Conv1/Conv1/kernel']
  raw = f.filename + '.raw'
  np.ones(shape, np.float32).tofile(raw)
  f['Conv1/Conv1'].create_dataset('kernel', shape, np.float32, external=[(raw, 0, 4 * np.prod(shape))])


@pytest.mark.parametrize('damage, problem', [
    (lambda f: f['Conv1/Conv1'].pop('kernel'), "layer 'Conv1', weight Conv1/kernel: the file has no such dataset"),
    (lambda f: f.pop('bn_Conv1'), "layer 'bn_Conv1' is listed in layer_names but has no group"),
    (_external_kernel, "layer 'Conv1', weight Conv1/kernel: its data lies in another file"),
    (lambda f: f.attrs.pop('layer_names'), "holds no Keras weights"),
], ids=['missing_weight', 'missing_layer', 'external_data', 'no_layer_names'])
def test_damaged_keras_files_are_refused_naming_the_layer(damage, problem, tmp_path):
  path = tmp_path / 'mobilenet.h5'
  _damage(path, damage)
  with pytest.raises(ValueError, match=re.escape(str(path)) + '.*' + re.escape(problem)):
    keras_h5.read_layers(path)


@pytest.mark.parametrize('content', [b'', b'<html>404 Not Found</html>', MOBILENET_035.read_bytes()[:1_000_000]],
                         ids=['empty', 'not_hdf5', 'truncated'])
def test_truncated_or_non_hdf5_keras_files_are_refused_naming_the_file(content, tmp_path):
  path = tmp_path / 'mobilenet.h5'
  path.write_bytes(content)
  with pytest.raises(ValueError, match=re.escape(f'{path} cannot be opened as HDF5') + '.*truncated or not an HDF5'):
    keras_h5.read_layers(path)


# --- PyTorch state_dicts --------------------------------------------------------------------------------------

def test_real_efficientnet_lite0_weights_rank_the_right_imagenet_classes():
  names = json.loads((WEIGHTS / 'imagenet1k_class_names.json').read_text())
  model = models.get_model('efficientnet_lite0', num_classes=1000)
  variables = weights.load(WEIGHTS / 'efficientnet_lite0_imagenet_torch_layout.npz', model)
  x = ((_natural_images(224) - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)
  dog, eagle, giraffe = (np.argsort(-logits) for logits in _apply(model, variables, x))
  assert names.index('Chihuahua') <= dog[0] <= names.index('Mexican hairless dog (xoloitzcuintli)')  # dog breeds
  assert {names[i] for i in eagle[:2]} == {'bald eagle', 'kite (bird of prey)'}
  assert names[giraffe[0]] == 'zebra'  # ImageNet-1k has no giraffe class; the picture shows a zebra beside it.


def _torchvision_resnet_state_dict(stage_sizes, bottleneck, seed=0) -> dict:
  """Random tensors with the names and shapes of torchvision's resnet*(num_classes=1000).state_dict()."""
  rng = np.random.default_rng(seed)
  state_dict = {}

  def conv(name, out_channels, in_channels, size):
    state_dict[f'{name}.weight'] = rng.normal(size=(out_channels, in_channels, size, size)).astype(np.float32)

  def bn(name, channels):
    for leaf, value in [('weight', rng.uniform(0.5, 1.5, channels)), ('bias', rng.normal(size=channels)),
                        ('running_mean', rng.normal(size=channels)), ('running_var', rng.uniform(0.5, 1.5, channels))]:
      state_dict[f'{name}.{leaf}'] = value.astype(np.float32)
    state_dict[f'{name}.num_batches_tracked'] = np.array(100, np.int64)

  conv('conv1', 64, 3, 7)
  bn('bn1', 64)
  channels = 64
  for i, num_blocks in enumerate(stage_sizes):
    planes = 64 * 2**i
    out_channels = planes * 4 if bottleneck else planes
    for j in range(num_blocks):
      block = f'layer{i + 1}.{j}'
      sizes = [(planes, channels, 1), (planes, planes, 3), (out_channels, planes, 1)] if bottleneck else \
          [(planes, channels, 3), (planes, planes, 3)]
      for k, (out, inp, size) in enumerate(sizes, start=1):
        conv(f'{block}.conv{k}', out, inp, size)
        bn(f'{block}.bn{k}', out)
      if j == 0 and (i > 0 or channels != out_channels):
        conv(f'{block}.downsample.0', out_channels, channels, 1)
        bn(f'{block}.downsample.1', out_channels)
      channels = out_channels
  state_dict['fc.weight'] = rng.normal(size=(1000, channels)).astype(np.float32)
  state_dict['fc.bias'] = rng.normal(size=1000).astype(np.float32)
  return state_dict


@pytest.mark.parametrize('name, stage_sizes, bottleneck', [('resnet18', (2, 2, 2, 2), False),
                                                           ('resnet50', (3, 4, 6, 3), True)])
def test_torchvision_resnet_state_dict_fills_every_variable(name, stage_sizes, bottleneck, tmp_path):
  state_dict = _torchvision_resnet_state_dict(stage_sizes, bottleneck)
  np.savez(tmp_path / 'resnet.npz', **state_dict)
  variables = weights.load(tmp_path / 'resnet.npz', models.get_model(name, num_classes=1000))
  params, stats = variables['params'], variables['batch_stats']
  np.testing.assert_array_equal(params['conv1']['kernel'], state_dict['conv1.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params['layer2_0']['downsample_0']['kernel'][0, 0],
                                state_dict['layer2.0.downsample.0.weight'][:, :, 0, 0].T)
  np.testing.assert_array_equal(params['layer4_1']['bn2']['scale'], state_dict['layer4.1.bn2.weight'])
  np.testing.assert_array_equal(stats['layer4_1']['bn2']['var'], state_dict['layer4.1.bn2.running_var'])
  np.testing.assert_array_equal(params['head']['out']['kernel'], state_dict['fc.weight'].T)


def test_state_dict_problems_are_all_named(tmp_path):
  state_dict = _torchvision_resnet_state_dict((2, 2, 2, 2), bottleneck=False)
  del state_dict['layer1.0.bn1.running_mean']
  state_dict['layer5.0.conv1.weight'] = np.zeros((8, 8, 3, 3), np.float32)
  state_dict['fc.weight'] = state_dict['fc.weight'][:10]
  np.savez(tmp_path / 'resnet.npz', **state_dict)
  with pytest.raises(ValueError) as error:
    weights.load(tmp_path / 'resnet.npz', models.get_model('resnet18', num_classes=1000))
  message = str(error.value)
  assert '1 missing, 1 unexpected and 1 mis-shaped tensors' in message
  assert 'missing: batch_stats/layer1_0/bn1/mean (64,)' in message
  assert 'unexpected: layer5.0.conv1.weight' in message
  assert 'shape: fc.weight is (512, 10), params/head/out/kernel needs (512, 1000)' in message


def test_features_only_models_leave_the_classifier_out(tmp_path):
  np.savez(tmp_path / 'resnet.npz', **_torchvision_resnet_state_dict((2, 2, 2, 2), bottleneck=False))
  variables = weights.load(tmp_path / 'resnet.npz', models.get_model('resnet18', features_only=True))
  assert 'head' not in variables['params']


def _contiguous(array):
  """(storage, offset, shape, strides in elements) of a tensor that owns its contiguous storage."""
  array = np.ascontiguousarray(array)
  return array.ravel(), 0, array.shape, tuple(stride // array.itemsize for stride in array.strides)


def _torch_save(path, tensors: dict, monkeypatch, byteorder='little', persistent_id=None, entries=None):
  """What `torch.save(state_dict, path)` writes (zip format), by hand: torch is not installed here.

  `tensors` maps each name to (storage, offset, shape, strides): tensors given the same storage array share it.
  The pickle names torch's classes and functions, so stand-ins are registered under their names while pickling.
  To craft damaged files: a storage that is not an array is pickled as it is, `persistent_id(storage_type, key,
  array)` replaces torch's id of a storage, and `entries` ({name: bytes, or None to leave it out}) the archive's.
  """
  torch, torch_utils = types.ModuleType('torch'), types.ModuleType('torch._utils')
  storage_types = {np.dtype(np.float32): 'FloatStorage', np.dtype(np.int64): 'LongStorage',
                   np.dtype(np.complex64): 'ComplexFloatStorage'}
  for storage_type in storage_types.values():
    setattr(torch, storage_type, type(storage_type, (), {'__module__': 'torch'}))

  def _rebuild_tensor_v2(*args):
    raise AssertionError('stand-in: never called')

  _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = 'torch._utils', '_rebuild_tensor_v2'
  torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  monkeypatch.setitem(sys.modules, 'torch', torch)
  monkeypatch.setitem(sys.modules, 'torch._utils', torch_utils)

  keys = {}  # id(storage) -> (key, storage)

  class Storage:
    def __init__(self, data):
      self.key, self.data = keys.setdefault(id(data), (str(len(keys)), data))

  class Tensor:
    def __init__(self, storage, offset, shape, strides):
      storage = Storage(storage) if isinstance(storage, np.ndarray) else storage
      self.args = (storage, offset, tuple(shape), tuple(strides), False, collections.OrderedDict())

    def __reduce__(self):
      return _rebuild_tensor_v2, self.args

  def torch_persistent_id(storage_type, key, data):
    return 'storage', storage_type, key, 'cpu', data.size

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      if isinstance(obj, Storage):
        return (persistent_id or torch_persistent_id)(getattr(torch, storage_types[obj.data.dtype]), obj.key, obj.data)
      return None

  state_dict = collections.OrderedDict((name, Tensor(*spec)) for name, spec in tensors.items())
  buffer = io.BytesIO()
  Pickler(buffer, protocol=2).dump(state_dict)
  records = {'archive/data.pkl': buffer.getvalue(), 'archive/byteorder': byteorder,
             **{f'archive/data/{key}': storage.tobytes() for key, storage in keys.values()},
             'archive/version': '3\n', **(entries or {})}
  with zipfile.ZipFile(path, 'w') as archive:
    for name, data in records.items():
      if data is not None:
        archive.writestr(name, data)


def test_pth_reader_rebuilds_strided_shared_scalar_expanded_and_empty_tensors(tmp_path, monkeypatch):
  matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
  storage = np.concatenate([np.array([-1.0, -2.0], np.float32), np.ascontiguousarray(matrix.T).ravel()])
  tensors = {'vector': (storage, 0, (2,), (1,)),              # the start of a shared storage
             'matrix': (storage, 2, (3, 4), (1, 3)),          # a transposed view at an offset in it
             'counter': (np.array([7], np.int64), 0, (), ()),  # a 0-d int64, as num_batches_tracked
             'kernel': _contiguous(np.ones((2, 1, 3, 3), np.float32)),
             'expanded': (np.array([5.0], np.float32), 0, (2, 3), (0, 0)),  # torch's expand(): strides 0
             'empty': (storage, 100, (0, 3), (3, 1))}         # reads nothing, so any offset is valid in torch
  _torch_save(tmp_path / 'w.pth', tensors, monkeypatch)
  state_dict = pth.load_state_dict(tmp_path / 'w.pth')
  assert list(state_dict) == ['vector', 'matrix', 'counter', 'kernel', 'expanded', 'empty']
  np.testing.assert_array_equal(state_dict['vector'], [-1.0, -2.0])
  np.testing.assert_array_equal(state_dict['matrix'], matrix)
  assert state_dict['counter'].shape == () and state_dict['counter'] == 7 and state_dict['counter'].dtype == np.int64
  np.testing.assert_array_equal(state_dict['kernel'], np.ones((2, 1, 3, 3)))
  np.testing.assert_array_equal(state_dict['expanded'], np.full((2, 3), 5.0))
  assert state_dict['empty'].shape == (0, 3) and state_dict['empty'].dtype == np.float32


@pytest.mark.parametrize('offset, size, stride', [
    (3, (2,), (1,)),      # past the end of the 4 elements
    (0, (2, 2), (3, 1)),  # a stride too long
    (4, (), ()),          # a scalar just past the end
    (-1, (1,), (1,)),     # before the start
    (1, (2,), (-1,)),
    (0, (-2,), (1,)),
    (0, (2,), (1, 1)),    # strides for another rank
    (0.5, (1,), (1,)),
], ids=['past_end', 'long_stride', 'scalar_past_end', 'negative_offset', 'negative_stride', 'negative_size',
        'rank_mismatch', 'float_offset'])
def test_pth_tensors_reaching_outside_their_storage_are_refused(offset, size, stride, tmp_path, monkeypatch):
  """torch refuses these views; read as they are, they would return the memory around the storage as weights."""
  path = tmp_path / 'w.pth'
  _torch_save(path, {'fc.weight': (np.arange(4, dtype=np.float32), offset, size, stride)}, monkeypatch)
  with pytest.raises(ValueError, match=re.escape(f"{path}: tensor 'fc.weight': offset")):
    pth.load_state_dict(path)


@pytest.mark.parametrize('tensors, damage, problem', [
    ({'fc.weight': (np.zeros(2, np.float32), 0, (2,), (1,))}, {'entries': {'archive/data/0': None}},
     "tensor 'fc.weight': its storage archive/data/0 is not in the archive"),
    ({'fc.weight': (np.zeros(2, np.float32), 0, (2,), (1,))}, {'entries': {'archive/data/0': bytes(7)}},
     r"tensor 'fc.weight': its storage archive/data/0 holds 7 bytes, not the 2 float32 elements \(8 bytes\)"),
    ({'fc.weight': (np.zeros(2, np.float32), 0, (2,), (1,))}, {'entries': {'archive/data/0': bytes(4)}},
     "tensor 'fc.weight': its storage archive/data/0 holds 4 bytes, not the 2 float32 elements"),
    ({'fc.weight': (5, 0, (1,), (1,))}, {}, "tensor 'fc.weight': its storage is 5, not a storage"),
    ({0: _contiguous(np.zeros(2, np.float32))}, {}, 'holds no state_dict'),
    ({'fc.weight': _contiguous(np.ones(2, np.float32))}, {'byteorder': 'middle'}, "byteorder 'middle' is neither"),
], ids=['missing_entry', 'partial_element', 'truncated', 'not_a_storage', 'not_named_by_strings', 'byteorder'])
def test_pth_damaged_files_are_refused_naming_the_tensor(tensors, damage, problem, tmp_path, monkeypatch):
  path = tmp_path / 'w.pth'
  _torch_save(path, tensors, monkeypatch, **damage)
  with pytest.raises(ValueError, match=re.escape(str(path)) + '.*' + problem):
    pth.load_state_dict(path)


@pytest.mark.parametrize('tensors, damage, problem', [
    ({'fc.weight': _contiguous(np.zeros(2, np.complex64))}, {},
     'it holds tensors of type torch.ComplexFloatStorage; only these are read: FloatStorage, DoubleStorage'),
    ({'fc.weight': _contiguous(np.zeros(2, np.float32))},
     {'persistent_id': lambda storage_type, key, data: ('storage', storage_type, [key], 'cpu', data.size)},
     r"\('storage', dtype\('float32'\), \['0'\], 'cpu', 2\) is not a storage"),
], ids=['complex', 'list_key'])
def test_pth_unknown_tensor_types_and_storage_ids_are_refused(tensors, damage, problem, tmp_path, monkeypatch):
  path = tmp_path / 'w.pth'
  _torch_save(path, tensors, monkeypatch, **damage)
  with pytest.raises(pickle.UnpicklingError, match=re.escape(f'{path}: cannot read archive/data.pkl: ') + problem):
    pth.load_state_dict(path)


def test_pth_import_equals_npz_import(tmp_path, monkeypatch):
  state_dict = _torchvision_resnet_state_dict((2, 2, 2, 2), bottleneck=False)
  np.savez(tmp_path / 'resnet.npz', **state_dict)
  _torch_save(tmp_path / 'resnet.pth', {k: _contiguous(v) for k, v in state_dict.items()}, monkeypatch)
  model = models.get_model('resnet18', num_classes=1000)
  jax.tree.map(np.testing.assert_array_equal, weights.load(tmp_path / 'resnet.pth', model),
               weights.load(tmp_path / 'resnet.npz', model))


def test_pth_reader_refuses_to_run_pickled_code(tmp_path):
  marker = tmp_path / 'ran'

  class Exploit:
    def __reduce__(self):
      return os.system, (f'touch {marker}',)

  with zipfile.ZipFile(tmp_path / 'evil.pth', 'w') as archive:
    archive.writestr('archive/data.pkl', pickle.dumps({'fc.weight': Exploit()}))
  with pytest.raises(pickle.UnpicklingError, match='refused to load posix.system'):
    pth.load_state_dict(tmp_path / 'evil.pth')
  assert not marker.exists()


def test_pre_zip_torch_files_get_a_clear_error(tmp_path):
  (tmp_path / 'old.pth').write_bytes(pickle.dumps({'fc.weight': 1}))
  with pytest.raises(ValueError, match='not a zip-format PyTorch file'):
    pth.load_state_dict(tmp_path / 'old.pth')


# --- Orbax checkpoints of imported weights and `model.init_from` ------------------------------------------------

def _small_resnet(**kwargs):
  return models.get_model('resnet18', small_stem=True, num_filters=8, **kwargs)


def _shapes(model, channels):
  return jax.eval_shape(lambda: model.init({'params': jax.random.key(0)}, jnp.zeros((1, 8, 8, channels)), train=False))


def _random_variables(model, channels=3, seed=0):
  """Variables unlike any initialisation (running variances positive), without compiling an init."""
  rng = np.random.default_rng(seed)
  shapes = _shapes(model, channels)
  return {'params': jax.tree.map(lambda s: rng.normal(0, 0.3, s.shape).astype(np.float32), shapes['params']),
          'batch_stats': jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32),
                                      shapes['batch_stats'])}


def test_with_pretrained_restores_the_backbone_and_leaves_the_head_fresh(tmp_path):
  pretrained = _random_variables(_small_resnet(num_classes=1000))
  weights.save(tmp_path / 'pretrained', pretrained)
  fresh = _random_variables(_small_resnet(num_classes=2), seed=1)
  state = TrainState.create(apply_fn=None, params=fresh['params'], batch_stats=fresh['batch_stats'],
                            tx=optax.adam(1e-3))
  state = with_pretrained(state, tmp_path / 'pretrained')
  del pretrained['params']['head']
  jax.tree.map(np.testing.assert_array_equal, {k: v for k, v in state.params.items() if k != 'head'},
               pretrained['params'])
  jax.tree.map(np.testing.assert_array_equal, state.batch_stats, pretrained['batch_stats'])
  # The task's 2-class head as initialised, not the checkpoint's 1000-class one.
  jax.tree.map(np.testing.assert_array_equal, state.params['head'], fresh['params']['head'])
  # A fresh optimizer state for the new parameters.
  jax.tree.map(np.testing.assert_array_equal, state.opt_state, optax.adam(1e-3).init(state.params))


def test_gray_input_sums_the_first_kernel_and_computes_what_the_rgb_backbone_computes(tmp_path):
  model = _small_resnet(features_only=True)
  pretrained = _random_variables(model)
  weights.save(tmp_path / 'pretrained', pretrained)
  variables = weights.restore(tmp_path / 'pretrained', _shapes(model, channels=1))
  np.testing.assert_allclose(variables['params']['conv1']['kernel'][:, :, 0],
                             pretrained['params']['conv1']['kernel'].sum(axis=2), rtol=1e-6)
  gray = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype(np.float32)
  np.testing.assert_allclose(_apply(model, variables, gray), _apply(model, pretrained, np.repeat(gray, 3, axis=-1)),
                             rtol=1e-5, atol=1e-5)


def test_init_from_of_another_architecture_is_an_error_naming_the_differences(tmp_path):
  weights.save(tmp_path / 'pretrained', _random_variables(_small_resnet()))
  target = _shapes(models.get_model('mobilenet_v2', alpha=0.35), channels=3)
  with pytest.raises(ValueError, match=r'(?s)260 missing, 100 unexpected and 0 mis-shaped.*'
                                       r'missing: batch_stats/Conv_1_bn/mean \(1280,\).*missing: ... and 250 more.*'
                                       r'unexpected: batch_stats/bn1/mean \(8,\)\n'):
    weights.restore(tmp_path / 'pretrained', target)
