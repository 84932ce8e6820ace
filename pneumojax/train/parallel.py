"""Data parallelism: the per-device steps of step.py compiled with `jax.pmap` or with `jax.jit` over `jax.shard_map`.

`DataParallel` hides where the device axis lives, so the training loop is the same in both modes:

    dp = DataParallel(config.train.parallel, functools.partial(step.train_step, class_weights=w), step.eval_step)
    state = dp.replicate(create_train_state(...))
    for batch in batches:                      # process-local numpy dicts
      state, metrics = dp.train_step(state, dp.shard(batch))
    dp.metrics_to_host(metrics); dp.unreplicate(state)   # for logs; for checkpoints

Layouts: 'pmap' gives every array a leading axis with one entry per local device (state copies, batch shards), as
pmap takes them. 'jit' uses global arrays on a one-axis mesh over all devices of all processes: the state
replicated, the batch split along its first axis.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = 'batch'
MODES = ('jit', 'pmap')


class DataParallel:
  """`train_step(state, batch) -> (state, metrics)` and `eval_step(state, batch) -> outputs` run per device."""

  def __init__(self, mode: str, train_step, eval_step):
    if mode not in MODES:
      raise ValueError(f'train.parallel must be one of {MODES}, got {mode!r}')
    self.mode = mode
    if mode == 'pmap':
      # pmap places its arguments' leading axis over the local devices, in this order.
      self._state_sharding = self._batch_sharding = NamedSharding(Mesh(jax.local_devices(), (AXIS,)), P(AXIS))
      self._train = jax.pmap(train_step, axis_name=AXIS, donate_argnums=(0,))
      self._eval = jax.pmap(eval_step, axis_name=AXIS)
    else:
      mesh = Mesh(jax.devices(), (AXIS,))
      self._state_sharding = NamedSharding(mesh, P())
      self._batch_sharding = NamedSharding(mesh, P(AXIS))
      # check_vma=False gives pmap's semantics, which the steps are written for: their explicit psum of the
      # gradients. With True, autodiff would insert that psum itself and the gradients would be summed twice.
      self._train = jax.jit(
          jax.shard_map(train_step, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()), check_vma=False),
          donate_argnums=(0,))
      self._eval = jax.jit(
          jax.shard_map(eval_step, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P(AXIS), check_vma=False))

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
    return self._train(state, batch)

  def lower_train_step(self, state, batch):
    """The train step lowered for these arguments, for XLA's cost and memory analyses (benchmarks)."""
    return self._train.lower(state, batch)

  def eval_step(self, state, batch) -> dict[str, np.ndarray]:
    """Per-example outputs of the whole global batch, in global example order, as numpy on every process."""
    outputs = self._eval(state, batch)
    if self.mode == 'pmap':
      outputs = jax.tree.map(lambda x: np.asarray(x).reshape(-1, *x.shape[2:]), outputs)
    return multihost_utils.process_allgather(outputs, tiled=True)

  def metrics_to_host(self, metrics) -> dict[str, float]:
    """Blocks until the step that produced `metrics` has run. The metrics agree on all devices: read one copy."""
    first = {name: value.addressable_data(0) for name, value in metrics.items()}
    return {name: value.item() for name, value in jax.device_get(first).items()}
