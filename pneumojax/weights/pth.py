"""Reads a PyTorch state_dict file (.pth) into numpy arrays without torch and without running pickled code.

`torch.save` writes a zip archive: `<root>/data.pkl` pickles the dict, each tensor as a call of
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`, each storage as a persistent id
('storage', torch.FloatStorage, key, device, numel) whose bytes are the entry `<root>/data/<key>`. A pickle can
call any importable function, so the unpickler here resolves only these names and refuses everything else, as
`torch.load(weights_only=True)` does. Pre-1.6 (non-zip) files are not read: re-save them or convert to .npz.
"""

import collections
import pickle
import zipfile

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
}


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """A copy of the strided view that torch's tensor is of its storage (strides counted in elements)."""
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                         strides=tuple(s * storage.itemsize for s in stride))
  return view.copy()


def _rebuild_parameter(data, *unused):
  return data


_ALLOWED = {
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('collections', 'OrderedDict'): collections.OrderedDict,
    **{('torch', name): np.dtype(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):

  def __init__(self, file, archive: zipfile.ZipFile, root: str, byteorder: str, path):
    super().__init__(file)
    self._archive, self._root, self._byteorder, self._path = archive, root, byteorder, path
    self._storages = {}

  def find_class(self, module, name):
    if (module, name) not in _ALLOWED:
      raise pickle.UnpicklingError(f'{self._path}: refused to load {module}.{name}: only tensors are read from '
                                   '.pth files (a pickle may run arbitrary code).')
    return _ALLOWED[(module, name)]

  def persistent_load(self, pid):
    kind, dtype, key = pid[:3]
    if kind != 'storage' or not isinstance(dtype, np.dtype):
      raise pickle.UnpicklingError(f'{self._path}: unexpected persistent id {pid!r}')
    if key not in self._storages:
      data = self._archive.read(f'{self._root}data/{key}')
      self._storages[key] = np.frombuffer(data, dtype.newbyteorder('<' if self._byteorder == 'little' else '>'))
    return self._storages[key]


def load_state_dict(path) -> dict[str, np.ndarray]:
  """{name: array} of a `torch.save(model.state_dict(), path)` file."""
  if not zipfile.is_zipfile(path):
    raise ValueError(f'{path} is not a zip-format PyTorch file (torch >= 1.6 writes those): re-save it with a '
                     'recent torch, or save its state_dict as .npz (numpy arrays keyed by state_dict name).')
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n == 'data.pkl' or n.endswith('/data.pkl')]
    if len(pickles) != 1:
      raise ValueError(f'{path}: expected one data.pkl in the archive, found {pickles}')
    root = pickles[0].removesuffix('data.pkl')
    names = archive.namelist()
    byteorder = archive.read(f'{root}byteorder').decode() if f'{root}byteorder' in names else 'little'
    with archive.open(pickles[0]) as f:
      state_dict = _Unpickler(f, archive, root, byteorder, path).load()
  if not isinstance(state_dict, dict) or not all(isinstance(v, np.ndarray) for v in state_dict.values()):
    raise ValueError(f'{path} holds no state_dict (a dict of tensors): save `model.state_dict()`.')
  return dict(state_dict)
