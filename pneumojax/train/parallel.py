"""Data parallelism: the per-device steps of step.py compiled with `jax.pmap` or with `jax.jit` over `jax.shard_map`.

`DataParallel` hides where the device axis lives, so the training loop is the same in both modes:

    dp = DataParallel(config.train.parallel, train_step=functools.partial(step.train_step, class_weights=w))
    state = dp.replicate(create_train_state(...))
    for batch in batches:                      # process-local numpy dicts
      state, metrics = dp.train_step(state, dp.shard(batch))
    dp.metrics_to_host(metrics); dp.unreplicate(state)   # for logs; for checkpoints
    outputs = dp.eval_step(state, dp.shard(batch))       # step.eval_step's, gathered on every process

Evaluation alone needs no train step: `DataParallel(mode)`.

Data on the devices (data/device.py): `dp.replicate(split.arrays())` puts a training split on every device, and
`dp.train_steps(state, arrays, num_steps)` runs up to `steps_per_dispatch` steps in one dispatch (a `lax.scan`),
each making its batch inside the step; `dp.put_sharded(split.arrays())` splits an evaluation split over the devices
and `dp.eval_split(state, arrays)` evaluates all of it in one dispatch.

Layouts: 'pmap' gives every array a leading axis with one entry per local device (state copies, batch shards), as
pmap takes them. 'jit' uses global arrays on a one-axis mesh over all devices of all processes: the state
replicated, the batch split along its first axis.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from pneumojax.train import step

AXIS = 'batch'
MODES = ('jit', 'pmap')


@dataclasses.dataclass(frozen=True)
class DeviceSplit:
  """An evaluation split split over the devices (`DataParallel.put_sharded`), evaluated in one dispatch."""
  name: str
  arrays: dict


class DataParallel:
  """`train_step(state, batch) -> (state, metrics)` (if given) and `eval_step(state, batch) -> outputs` per device."""

  def __init__(self, mode: str, train_step=None, eval_step=step.eval_step, make_train_batch=None,
               make_eval_batch=None, steps_per_dispatch: int = 1, eval_chunk: int = 0):
    """`make_train_batch(arrays, step) -> batch` (per device, inside the step) and `steps_per_dispatch` for
    `train_steps`; `make_eval_batch(arrays) -> batch` and `eval_chunk` (examples per device and pass) for
    `eval_split`."""
    if mode not in MODES:
      raise ValueError(f'train.parallel must be one of {MODES}, got {mode!r}')
    self.mode = mode
    if mode == 'pmap':
      # pmap places its arguments' leading axis over the local devices, in this order.
      self._state_sharding = self._batch_sharding = NamedSharding(Mesh(jax.local_devices(), (AXIS,)), P(AXIS))
    else:
      mesh = Mesh(jax.devices(), (AXIS,))
      self._state_sharding = NamedSharding(mesh, P())
      self._batch_sharding = NamedSharding(mesh, P(AXIS))
    self._train = None if train_step is None else self._compile(train_step, train=True)
    self._eval = self._compile(eval_step, train=False)
    self._train_steps = self._eval_split = None
    if make_train_batch is not None:
      self._train_steps = self._compile_mapped(
          functools.partial(_train_steps, train_step=train_step, make_batch=make_train_batch,
                            length=steps_per_dispatch), in_specs=(P(), P(), P()), out_specs=(P(), P()), donate=(0,))
    if make_eval_batch is not None:
      self._eval_split = self._compile_mapped(
          functools.partial(_eval_split, eval_step=eval_step, make_batch=make_eval_batch, chunk=eval_chunk),
          in_specs=(P(), P(AXIS)), out_specs=P(AXIS))

  def _compile(self, per_device_step, train: bool):
    """A train step donates its state and returns it with its metrics, replicated; an eval step returns per-example
    outputs, split over the devices as the batch."""
    if train:
      return self._compile_mapped(per_device_step, in_specs=(P(), P(AXIS)), out_specs=(P(), P()), donate=(0,))
    return self._compile_mapped(per_device_step, in_specs=(P(), P(AXIS)), out_specs=P(AXIS))

  def _compile_mapped(self, per_device_fn, in_specs, out_specs, donate=()):
    """`per_device_fn` over the devices: pmap (every argument with a leading device axis), or jit over shard_map
    with these specs (P(): replicated, P(AXIS): split along the first axis)."""
    if self.mode == 'pmap':
      return jax.pmap(per_device_fn, axis_name=AXIS, donate_argnums=donate)
    # check_vma=False gives pmap's semantics, which the steps are written for: their explicit psum of the
    # gradients. With True, autodiff would insert that psum itself and the gradients would be summed twice.
    return jax.jit(jax.shard_map(per_device_fn, mesh=self._batch_sharding.mesh, in_specs=in_specs,
                                 out_specs=out_specs, check_vma=False), donate_argnums=donate)

  def replicate(self, state):
    """One copy of the state (fresh or restored, the same on every process) -> the devices."""
    devices = jax.local_devices()

    def put(x):
      # An explicit dtype: a fresh state's Python-int step would be weakly typed and compile the step twice.
      x = jnp.asarray(x, jnp.result_type(x))
      shape = x.shape
      if self.mode == 'pmap':  # one entry per local device
        x, shape = x[None], (len(devices), *shape)
      # Copies, not the caller's buffers, which the train step's donation would delete.
      copies = [jax.device_put(x, d, may_alias=False) for d in devices]
      return jax.make_array_from_single_device_arrays(shape, self._state_sharding, copies)

    return jax.tree.map(put, state)

  def unreplicate(self, state):
    """Devices -> one ordinary copy on this process's first device (a copy: donating `state` later spares it)."""
    if self.mode == 'pmap':
      return jax.tree.map(lambda x: x.addressable_data(0)[0], state)
    return jax.tree.map(lambda x: jnp.copy(x.addressable_data(0)), state)

  def shard(self, batch):
    """A process-local batch (dict of numpy arrays, examples first) -> device arrays, split over all devices."""
    global_size = len(batch['label']) * jax.process_count()
    if global_size % jax.device_count():
      raise ValueError(
          f'the global batch size {global_size} is not divisible by the number of devices {jax.device_count()}: '
          f'set train.batch_size and train.eval_batch_size to multiples of {jax.device_count()}')
    if self.mode == 'pmap':
      n = jax.local_device_count()
      return jax.device_put(jax.tree.map(lambda x: x.reshape(n, -1, *x.shape[1:]), batch), self._batch_sharding)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self._batch_sharding, x), batch)

  def train_step(self, state, batch):
    """Donates `state`: use the returned one."""
    return self._trainer()(state, batch)

  def train_steps(self, state, arrays, num_steps: int):
    """`num_steps` (at most `steps_per_dispatch`) steps on the replicated split `arrays`, each making its batch on
    the devices; returns (state, per-step metrics [steps_per_dispatch], of which the first `num_steps` are real).
    Donates `state`."""
    num_steps = np.int32(num_steps)
    if self.mode == 'pmap':
      num_steps = np.full(jax.local_device_count(), num_steps)
    return self._train_steps(state, arrays, num_steps)

  @property
  def evaluates_on_devices(self) -> bool:
    return self._eval_split is not None

  def put_sharded(self, name: str, arrays) -> DeviceSplit:
    """A process-local split (numpy arrays, examples first, whole eval batches) -> split over the devices in order,
    as `eval_split` takes it."""
    return DeviceSplit(name, self.shard(arrays))

  def eval_split(self, state, split: DeviceSplit) -> dict[str, np.ndarray]:
    """`eval_step`'s outputs for every example of `split` (from `put_sharded`), in order, on every process."""
    return self._gather(self._eval_split(state, split.arrays))

  def lower_train_step(self, state, batch):
    """The train step lowered for these arguments, for XLA's cost and memory analyses (benchmarks)."""
    return self._trainer().lower(state, batch)

  def _trainer(self):
    if self._train is None:
      raise ValueError('This DataParallel was built for evaluation only: pass train_step= to train.')
    return self._train

  def eval_step(self, state, batch) -> dict[str, np.ndarray]:
    """Per-example outputs of the whole global batch, in global example order, as numpy on every process."""
    return self._gather(self._eval(state, batch))

  def _gather(self, outputs):
    if self.mode == 'pmap':
      outputs = jax.tree.map(lambda x: np.asarray(x).reshape(-1, *x.shape[2:]), outputs)
    return multihost_utils.process_allgather(outputs, tiled=True)

  def metrics_to_host(self, metrics) -> dict[str, float]:
    """Blocks until the step that produced `metrics` has run. The metrics agree on all devices: read one copy."""
    first = {name: value.addressable_data(0) for name, value in metrics.items()}
    return {name: value.item() for name, value in jax.device_get(first).items()}


def _train_steps(state, arrays, num_steps, *, train_step, make_batch, length):
  """Per device: `length` iterations of which the first `num_steps` run `train_step` on `make_batch(arrays, step)`
  (the others leave the state as it is), so that every dispatch has one compiled shape. One step is compiled
  without control flow: XLA:CPU ran the quickstart step 40-80x slower inside a scan or cond."""
  def run(state):
    return train_step(state, make_batch(arrays, state.step))

  if length == 1:
    return _stacked(run(state))

  def body(state, i):
    def skip(state):
      return state, jax.tree.map(jnp.zeros_like, jax.eval_shape(run, state)[1])
    return lax.cond(i < num_steps, run, skip, state)

  return lax.scan(body, state, jnp.arange(length))


def _stacked(state_and_metrics):
  """(state, metrics) with the metrics given a leading steps axis of 1, as a scan's."""
  state, metrics = state_and_metrics
  return state, jax.tree.map(lambda x: x[None], metrics)


def _eval_split(state, arrays, *, eval_step, make_batch, chunk):
  """Per device: `eval_step` over this device's examples of `arrays`, `chunk` at a time."""
  chunks = jax.tree.map(lambda x: x.reshape(-1, chunk, *x.shape[1:]), arrays)
  _, outputs = lax.scan(lambda carry, batch: (carry, eval_step(state, make_batch(batch))), None, chunks)
  return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), outputs)
