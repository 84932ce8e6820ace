"""Reads a PyTorch state_dict file (.pth) into numpy arrays without torch and without running pickled code.

`torch.save` writes a zip archive: `<root>/data.pkl` pickles the dict, each tensor as a call of
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`, each storage as a persistent id
('storage', torch.FloatStorage, key, device, numel) whose bytes are the entry `<root>/data/<key>`. A pickle can
call any importable function, so the unpickler here resolves only these names and refuses everything else, as
`torch.load(weights_only=True)` does. Nothing in the file is trusted: each tensor is read only after checking
that its storage exists with the bytes its header promises and that its view (offset, sizes, strides) lies
inside that storage, as torch checks. Pre-1.6 (non-zip) files are not read: re-save them or convert to .npz.
"""

import collections
import math
import pickle
import typing
import zipfile

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
}
_DAMAGED = 'the file is damaged or was not written by torch.save: save or download it again'


class _Storage(typing.NamedTuple):
  """A storage as its persistent id describes it: `numel` elements of `dtype` in the entry data/<key>."""
  key: str
  dtype: np.dtype
  numel: int


class _Tensor(typing.NamedTuple):
  """The arguments of `_rebuild_tensor_v2`, checked and read once the tensor's state_dict name is known."""
  storage: object
  offset: object
  size: object
  stride: object


def _rebuild_tensor(storage, offset, size, stride, *unused):
  return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *unused):
  return data


_ALLOWED = {
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('collections', 'OrderedDict'): collections.OrderedDict,
    **{('torch', name): np.dtype(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == 'torch' and name.endswith('Storage'):
      raise pickle.UnpicklingError(f'it holds tensors of type torch.{name}; only these are read: '
                                   f'{", ".join(_STORAGE_DTYPES)}.')
    raise pickle.UnpicklingError(f'refused to load {module}.{name}: only tensors are read from .pth files (a pickle '
                                 'may run arbitrary code).')

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage' and isinstance(pid[1], np.dtype)
            and isinstance(pid[2], str) and isinstance(pid[4], int) and pid[4] >= 0):
      raise pickle.UnpicklingError(f'{pid!r:.200} is not a storage (storage, type, key, device, numel).')
    return _Storage(pid[2], pid[1], pid[4])


def _storage_elements(archive: zipfile.ZipFile, root: str, storage: _Storage, byteorder: str, where: str):
  """The storage's elements, refused unless its entry holds exactly the `numel` elements its header gives."""
  entry = f'{root}data/{storage.key}'
  if entry not in archive.namelist():
    raise ValueError(f'{where}: its storage {entry} is not in the archive; {_DAMAGED}.')
  try:
    data = archive.read(entry)
  except zipfile.BadZipFile as error:
    raise ValueError(f'{where}: its storage {entry} cannot be read ({error}); {_DAMAGED}.') from error
  dtype = storage.dtype.newbyteorder('<' if byteorder == 'little' else '>')
  if len(data) != storage.numel * dtype.itemsize:
    raise ValueError(f'{where}: its storage {entry} holds {len(data)} bytes, not the {storage.numel} {dtype.name} '
                     f'elements ({storage.numel * dtype.itemsize} bytes) its header gives; {_DAMAGED}.')
  return np.frombuffer(data, dtype)


def _array(tensor: _Tensor, read_storage, where: str) -> np.ndarray:
  """A copy of the tensor's strided view of its storage (`read_storage(storage, where)` gives its elements),
  refused where the view reaches outside the storage."""
  storage, offset, size, stride = tensor
  if not isinstance(storage, _Storage):
    raise ValueError(f'{where}: its storage is {storage!r:.100}, not a storage; {_DAMAGED}.')
  if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
          and all(isinstance(i, int) and i >= 0 for i in (offset, *size, *stride))):
    raise ValueError(f'{where}: offset {offset!r:.50}, size {size!r:.100} and stride {stride!r:.100} do not '
                     f'describe a tensor (non-negative integers, as many strides as sizes); {_DAMAGED}.')
  elements = read_storage(storage, where)
  if math.prod(size) == 0:
    return np.zeros(size, elements.dtype)  # An empty tensor reads nothing, whatever its offset (as in torch).
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= elements.size:
    raise ValueError(f'{where}: offset {offset}, size {size} and stride {stride} reach element {last} of storage '
                     f'{storage.key}, which holds {elements.size}; {_DAMAGED}.')
  return np.lib.stride_tricks.as_strided(elements[offset:], size, [s * elements.itemsize for s in stride]).copy()


def load_state_dict(path) -> dict[str, np.ndarray]:
  """{name: array} of a `torch.save(model.state_dict(), path)` file."""
  if not zipfile.is_zipfile(path):
    raise ValueError(f'{path} is not a zip-format PyTorch file (torch >= 1.6 writes those) or is truncated: re-save '
                     'it with a recent torch, or save its state_dict as .npz (numpy arrays keyed by state_dict name).')
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n == 'data.pkl' or n.endswith('/data.pkl')]
    if len(pickles) != 1:
      raise ValueError(f'{path}: expected one data.pkl in the archive, found {pickles}')
    root = pickles[0].removesuffix('data.pkl')
    byteorder = archive.read(f'{root}byteorder').decode('ascii', 'replace') if f'{root}byteorder' in names else 'little'
    if byteorder not in ('little', 'big'):
      raise ValueError(f'{path}: byteorder {byteorder!r:.50} is neither little nor big; {_DAMAGED}.')
    with archive.open(pickles[0]) as f:
      try:
        state_dict = _Unpickler(f).load()
      except Exception as error:  # A damaged or crafted pickle fails in many ways: name the file in each.
        raise pickle.UnpicklingError(f'{path}: cannot read {pickles[0]}: {error}') from error
    if not (isinstance(state_dict, dict)
            and all(isinstance(k, str) and isinstance(v, _Tensor) for k, v in state_dict.items())):
      raise ValueError(f'{path} holds no state_dict (a dict of tensors by name): save `model.state_dict()`.')
    storages = {}  # Tensors may share a storage: each is read once.

    def read_storage(storage, where):
      if storage not in storages:
        storages[storage] = _storage_elements(archive, root, storage, byteorder, where)
      return storages[storage]

    return {name: _array(tensor, read_storage, f'{path}: tensor {name!r}') for name, tensor in state_dict.items()}
