"""Data parallelism: the per-device steps of step.py compiled with `jax.pmap` or with `jax.jit` over `jax.shard_map`.

`DataParallel` hides where the device axis lives, so the training loop is the same in both modes:

    dp = DataParallel(config.train.parallel, train_step=functools.partial(step.train_step, class_weights=w))
    state = dp.replicate(create_train_state(...))
    for batch in batches:                      # process-local numpy dicts
      state, metrics = dp.train_step(state, dp.shard(batch))
    dp.metrics_to_host(metrics); dp.unreplicate(state)   # for logs; for checkpoints
    outputs = dp.eval_step(state, dp.shard(batch))       # step.eval_step's, gathered on every process

Evaluation alone needs no train step: `DataParallel(mode)`.

Layouts: 'pmap' gives every array a leading axis with one entry per local device (state copies, batch shards), as
pmap takes them. 'jit' uses global arrays on a one-axis mesh over all devices of all processes: the state
replicated, the batch split along its first axis.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from pneumojax.train import step

AXIS = 'batch'
MODES = ('jit', 'pmap')


class DataParallel:
  """`train_step(state, batch) -> (state, metrics)` (if given) and `eval_step(state, batch) -> outputs` per device."""

  def __init__(self, mode: str, train_step=None, eval_step=step.eval_step):
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

  def _compile(self, per_device_step, train: bool):
    """A train step donates its state and returns it with its metrics, replicated; an eval step returns per-example
    outputs, split over the devices as the batch."""
    donate = (0,) if train else ()
    if self.mode == 'pmap':
      return jax.pmap(per_device_step, axis_name=AXIS, donate_argnums=donate)
    # check_vma=False gives pmap's semantics, which the steps are written for: their explicit psum of the
    # gradients. With True, autodiff would insert that psum itself and the gradients would be summed twice.
    return jax.jit(jax.shard_map(per_device_step, mesh=self._batch_sharding.mesh, in_specs=(P(), P(AXIS)),
                                 out_specs=(P(), P()) if train else P(AXIS), check_vma=False),
                   donate_argnums=donate)

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

  def lower_train_step(self, state, batch):
    """The train step lowered for these arguments, for XLA's cost and memory analyses (benchmarks)."""
    return self._trainer().lower(state, batch)

  def _trainer(self):
    if self._train is None:
      raise ValueError('This DataParallel was built for evaluation only: pass train_step= to train.')
    return self._train

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
