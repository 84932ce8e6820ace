"""Multi-process runs on JAX's own runtime: `jax.distributed.initialize` from the config or the environment.

Launch the same command once per process, e.g. two processes on one machine (CPU: gloo collectives):

  pneumojax train --config experiments/quickstart.py --workdir runs/mp \
      --config.distributed.initialize=True --config.distributed.coordinator_address=localhost:12345 \
      --config.distributed.num_processes=2 --config.distributed.process_id=0   # and =1 in a second shell

On several machines use the first machine's address; on a cluster JAX knows (SLURM, Cloud TPU, GKE) leave the
three fields unset and they are detected. Each process feeds its slice of every global batch; the arrays are
global (jit) or gathered (pmap); only process 0 writes logs and results, and Orbax coordinates checkpoints.
"""

import jax


def initialize(distributed_config) -> None:
  if not distributed_config.initialize:
    return
  # Only the CPU backend reads this; it must be set before the backends start.
  jax.config.update('jax_cpu_collectives_implementation', distributed_config.cpu_collectives)
  jax.distributed.initialize(
      coordinator_address=distributed_config.coordinator_address,
      num_processes=distributed_config.num_processes or None,
      process_id=None if distributed_config.process_id < 0 else distributed_config.process_id)
