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
(experiments/bench/README.md). As on several GPUs, BatchNorm then normalises over each device's share of the batch.
"""

import jax


def initialize(distributed_config) -> None:
  """Before anything starts JAX's backends: the CPU device count, then jax.distributed if asked for."""
  split_cpu(distributed_config.cpu_devices)
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
