"""Train-step benchmark on synthetic data: images/s per model x resolution x parallel mode, as a Markdown table.

  python experiments/bench/train_step.py --models simple_cnn resnet18 --sizes 64 128 224 --modes jit pmap
  python experiments/bench/train_step.py --models all --channels 3 --modes jit   # every model at its native size
  XLA_FLAGS=--xla_force_host_platform_device_count=2 python experiments/bench/train_step.py ...  # 2 CPU devices

Times the compiled step alone: one batch is placed on the devices once and reused, so the input pipeline does
not count (see input_pipeline.py for it). After the first step (compilation) and `--warmup_steps`, it times
`--windows` windows of `--steps_per_window` steps and reports the median, min and max images/s over the
windows. "compile s" is the first step's time minus a median step's. Without `--sizes`, each model runs at its
native size (224 px, InceptionV3 299 px). "GFLOPs" is XLA's cost analysis of one image's forward pass
(inference; a multiply-add counts 2), "params" the trainable parameters with a 2-class head.
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from pneumojax import models
from pneumojax.config import default_config
from pneumojax.train import optim, step
from pneumojax.train.parallel import MODES, DataParallel
from pneumojax.train.state import create_train_state


NATIVE_SIZE = {'inception_v3': 299}  # Others: 224.


def model_cost(model, shape) -> tuple[int, float]:
  """(parameters, forward FLOPs of one image) from shapes alone and XLA's cost analysis."""
  x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
  variables = jax.eval_shape(lambda: model.init({'params': jax.random.key(0)}, jnp.zeros(x.shape), train=False))
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables['params']))
  forward = jax.jit(functools.partial(model.apply, train=False)).lower(variables, x).compile()
  return num_params, forward.cost_analysis()['flops']


def bench(name: str, size: int, mode: str, args) -> dict:
  model = models.get_model(name, num_classes=2, dtype=args.dtype)
  tx, _ = optim.make_optimizer(default_config().optim, steps_per_epoch=100, total_steps=1000)
  shape = (size, size, args.channels)
  # Compiled: an op-by-op initialisation of a ResNet takes longer than its train step's compilation.
  host_state = jax.jit(lambda rng: create_train_state(model, tx, rng, shape))(jax.random.key(0))
  dp = DataParallel(mode, step.train_step, step.eval_step)
  state = dp.replicate(host_state)
  rng = np.random.default_rng(0)
  batch = dp.shard({'image': rng.normal(size=(args.batch_size, *shape)).astype(np.float32),
                    'label': rng.integers(0, 2, args.batch_size).astype(np.int32),
                    'mask': np.ones(args.batch_size, np.float32)})

  def run(num_steps):
    nonlocal state
    start = time.perf_counter()
    for _ in range(num_steps):
      state, _ = dp.train_step(state, batch)
    jax.block_until_ready(state)
    return time.perf_counter() - start

  first_step_s = run(1)
  run(args.warmup_steps)
  rates = [args.steps_per_window * args.batch_size / run(args.steps_per_window) for _ in range(args.windows)]
  num_params, flops = model_cost(model, shape)
  return {'compile_s': first_step_s - args.batch_size / np.median(rates), 'median': np.median(rates),
          'min': min(rates), 'max': max(rates), 'params': num_params, 'flops': flops}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--models', nargs='+', default=['simple_cnn', 'resnet18'],
                      choices=['all', *models.list_models()])
  parser.add_argument('--sizes', nargs='+', type=int, help='input sizes; default: each model\'s native size')
  parser.add_argument('--modes', nargs='+', default=['jit', 'pmap'], choices=MODES)
  parser.add_argument('--batch_size', type=int, default=32, help='global batch')
  parser.add_argument('--channels', type=int, default=1)
  parser.add_argument('--dtype', default='float32', help='compute dtype, e.g. bfloat16')
  parser.add_argument('--warmup_steps', type=int, default=2)
  parser.add_argument('--windows', type=int, default=5)
  parser.add_argument('--steps_per_window', type=int, default=5)
  args = parser.parse_args()

  print(f'{jax.device_count()} x {jax.devices()[0].device_kind}, batch {args.batch_size}, {args.channels} channel(s), '
        f'{args.dtype}; {args.windows} windows of {args.steps_per_window} steps\n')
  print('| model | px | mode | params | GFLOPs | compile s | images/s median | min | max |')
  print('|---|---|---|---|---|---|---|---|---|')
  for name in models.list_models() if args.models == ['all'] else args.models:
    for size in args.sizes or [NATIVE_SIZE.get(name, 224)]:
      for mode in args.modes:
        r = bench(name, size, mode, args)
        print(f"| {name} | {size} | {mode} | {r['params'] / 1e6:.2f} M | {r['flops'] / 1e9:.2f} | "
              f"{r['compile_s']:.1f} | {r['median']:.1f} | {r['min']:.1f} | {r['max']:.1f} |", flush=True)


if __name__ == '__main__':
  main()
