"""Multi-process runs on JAX's own runtime: `jax.distributed.initialize` from the config or the environment.

Launch the same command once per process, e.g. two processes on one machine (CPU: gloo collectives):

  pneumojax train --config experiments/quickstart.py --workdir runs/mp \
      --config.distributed.initialize=True --config.distributed.coordinator_address=localhost:12345 \
      --config.distributed.num_processes=2 --config.distributed.process_id=0   # and =1 in a second shell

On several machines use the first machine's address; on a cluster JAX knows (SLURM, Cloud TPU, GKE) leave the
three fields unset and they are detected. Each process feeds its slice of every global batch; the arrays are
global (jit) or gathered (pmap); only process 0 writes logs and results, and Orbax coordinates checkpoints.

`distributed.cpu_devices=N` splits each process's CPU into N JAX devices: data parallelism over the cores. XLA:CPU
leaves cores idle in one device's step; on 2 cores the quickstart CNN's step ran 1.8x faster as 4 devices
(experiments/bench/README.md). BatchNorm and dropout work on the global batch (models/base.py), so the device count
changes nothing but float rounding: the default 0 chooses it (`auto_cpu_devices`). It only matters where JAX runs on
the CPU; on a GPU or TPU host the CPU devices are not used.
"""

import os

import jax

MAX_AUTO_CPU_DEVICES = 8


def auto_cpu_devices(batch_sizes, cpu_count: int | None = None) -> int:
  """The CPU device count chosen when `distributed.cpu_devices=0`: two per core (XLA:CPU leaves cores idle in one
  device's step), at most MAX_AUTO_CPU_DEVICES, and a divisor of every batch size."""
  # The cores this process may use (a `--parallel` sweep gives each run its share).
  cores = cpu_count or (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()) or 1
  limit = min(MAX_AUTO_CPU_DEVICES, 2 * cores)
  return max(n for n in range(1, limit + 1) if all(size % n == 0 for size in batch_sizes))


def default_cpu_devices(config) -> int:
  """The CPU device count of `distributed.cpu_devices=0`. One where splitting gains nothing: with jax.distributed
  (the process count is not known yet: one device per process) and for cached-feature runs, whose backbone pass is
  one device's jit and whose head is too small to split; there, XLA:CPU's all-reduce between device threads only
  costs, and on oversubscribed cores it can wait past its 40 s rendezvous timeout and abort the process (seen with
  4 devices on 2 busy cores). Otherwise `auto_cpu_devices`."""
  if config.distributed.initialize or config.train.cached_features:
    return 1
  return auto_cpu_devices((config.train.batch_size, config.train.eval_batch_size))


def initialize(config) -> None:
  """Before anything starts JAX's backends: the CPU device count, then jax.distributed if asked for."""
  distributed_config = config.distributed
  if distributed_config.cpu_devices:
    split_cpu(distributed_config.cpu_devices)
  else:
    try:
      jax.config.update('jax_num_cpu_devices', default_cpu_devices(config))
    except RuntimeError:  # JAX already runs in this process (an earlier run): its device count stays.
      pass
  if not distributed_config.initialize:
    return
  # Only the CPU backend reads this; it must be set before the backends start.
  jax.config.update('jax_cpu_collectives_implementation', distributed_config.cpu_collectives)
  jax.distributed.initialize(
      coordinator_address=distributed_config.coordinator_address,
      num_processes=distributed_config.num_processes or None,
      process_id=None if distributed_config.process_id < 0 else distributed_config.process_id)


def split_cpu(count: int) -> None:
  """This process's CPU as `count` JAX devices (0: JAX's default); call it before any JAX computation."""
  if count <= 0:
    return
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError:  # JAX has started in this process (an earlier run, or XLA_FLAGS): only the same count works.
    if len(jax.devices('cpu')) != count:
      raise ValueError(f'distributed.cpu_devices={count}, but JAX already runs with {len(jax.devices("cpu"))} CPU '
                       'devices in this process: set it for the first run of a process, or start a new one.') from None
