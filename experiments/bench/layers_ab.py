"""What pneumojax.models.layers buys: the train step with its BatchNorm and max pooling, and with flax's.

  python experiments/bench/layers_ab.py --model simple_cnn --size 64 --batch_size 64
  python experiments/bench/layers_ab.py --model resnet50 --size 224 --batch_size 256 --dtype bfloat16 --channels 3

Both variants are compiled in one process and timed in alternating windows, so a busy machine slows both alike;
it prints each one's median and best images/s. The models look up `layers.BatchNorm` and `layers.max_pool` when
they are traced, so swapping the module attribute swaps the implementation.
"""

import argparse
import types

import flax.linen as nn
import jax
import numpy as np
import optax

from pneumojax import bench, models
from pneumojax.models import (
  densenet,
  efficientnet,
  inception,
  layers,
  mobilenet,
  resnet,
  simple_cnn,
  vgg,
)
from pneumojax.train import step
from pneumojax.train.parallel import DataParallel
from pneumojax.train.state import create_train_state

FLAX = types.SimpleNamespace(
    BatchNorm=nn.BatchNorm,
    max_pool=lambda x, window, strides=None, padding='VALID': nn.max_pool(x, window, strides, padding))


def compiled_step(name, size, batch_size, dtype, channels, implementation):
  for module in (densenet, efficientnet, inception, mobilenet, resnet, simple_cnn, vgg):
    module.layers = implementation
  model = models.get_model(name, num_classes=2, dtype=dtype)
  shape = (size, size, channels)
  state = jax.jit(lambda rng: create_train_state(model, optax.adam(1e-3), rng, shape))(jax.random.key(0))
  dp = DataParallel('jit', step.train_step, step.eval_step)
  state = dp.replicate(state)
  rng = np.random.default_rng(0)
  batch = dp.shard({'image': rng.normal(size=(batch_size, *shape)).astype(np.float32),
                    'label': rng.integers(0, 2, batch_size).astype(np.int32), 'mask': np.ones(batch_size, np.float32)})
  state, _ = dp.train_step(state, batch)  # compiles with this implementation
  jax.block_until_ready(state)
  return dp, state, batch


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', default='simple_cnn')
  parser.add_argument('--size', type=int, default=64)
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--channels', type=int, default=1)
  parser.add_argument('--windows', type=int, default=6)
  parser.add_argument('--steps', type=int, default=5)
  args = parser.parse_args()
  variants = {name: list(compiled_step(args.model, args.size, args.batch_size, args.dtype, args.channels, impl))
              for name, impl in (('flax', FLAX), ('pneumojax.models.layers', layers))}
  rates = {name: [] for name in variants}
  for _ in range(args.windows):
    for name, slot in variants.items():
      def run(k, slot=slot):
        for _ in range(k):
          slot[1], _ = slot[0].train_step(slot[1], slot[2])
        jax.block_until_ready(slot[1])
      rates[name].append(args.steps * args.batch_size / bench.timed_windows(run, 1, args.steps)[0])
  print(f'{args.model} {args.size} px, batch {args.batch_size}, {args.dtype}, {jax.devices()[0].device_kind}:')
  for name, r in rates.items():
    print(f'  BatchNorm and max pooling of {name}: train images/s median {np.median(r):.1f}, best {max(r):.1f}')


if __name__ == '__main__':
  main()
