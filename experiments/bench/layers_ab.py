"""What pneumojax.models.layers buys: train and eval steps with its XLA_CPU layers (BatchNorm, max pooling and
depthwise Conv) and with flax's.

  python experiments/bench/layers_ab.py --model simple_cnn --size 64 --batch_size 64
  python experiments/bench/layers_ab.py --model resnet50 --size 224 --batch_size 256 --dtype bfloat16 --channels 3
  python experiments/bench/layers_ab.py --model mobilenet_v2 --size 224 --batch_size 32 --channels 3

Both variants are compiled in one process and timed in alternating windows, so a busy machine slows both alike;
it prints each one's median and best images/s. The model is built with `layers='flax'` or `layers='xla_cpu'`
(`models.get_model`; `config.model.layers` in a run).
"""

import argparse

import jax
import numpy as np
import optax

from pneumojax import bench, models
from pneumojax.train import step
from pneumojax.train.parallel import DataParallel
from pneumojax.train.state import create_train_state

VARIANTS = {'flax': 'flax', 'pneumojax.models.layers': 'xla_cpu'}  # printed name: get_model's `layers`


def compiled_step(name, size, batch_size, dtype, channels, layers):
  model = models.get_model(name, layers=layers, num_classes=2, dtype=dtype)
  shape = (size, size, channels)
  state = jax.jit(lambda rng: create_train_state(model, optax.adam(1e-3), rng, shape))(jax.random.key(0))
  dp = DataParallel('jit', train_step=step.train_step)
  state = dp.replicate(state)
  rng = np.random.default_rng(0)
  batch = dp.shard({'image': rng.normal(size=(batch_size, *shape)).astype(np.float32),
                    'label': rng.integers(0, 2, batch_size).astype(np.int32), 'mask': np.ones(batch_size, np.float32)})
  state, _ = dp.train_step(state, batch)  # compiles both steps with these layers
  dp.eval_step(state, batch)
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
  variants = {name: list(compiled_step(args.model, args.size, args.batch_size, args.dtype, args.channels, layers))
              for name, layers in VARIANTS.items()}
  rates = {(name, kind): [] for name in variants for kind in ('train', 'eval')}
  for _ in range(args.windows):
    for name, slot in variants.items():
      def train(k, slot=slot):
        for _ in range(k):
          slot[1], _ = slot[0].train_step(slot[1], slot[2])
        jax.block_until_ready(slot[1])

      def evaluate(k, slot=slot):
        jax.block_until_ready([slot[0].eval_step(slot[1], slot[2]) for _ in range(k)])
      for kind, run in (('train', train), ('eval', evaluate)):
        seconds = bench.timed_windows(run, 1, args.steps)[0]
        rates[name, kind].append(args.steps * args.batch_size / seconds)
  print(f'{args.model} {args.size} px, batch {args.batch_size}, {args.dtype}, {jax.devices()[0].device_kind}:')
  for (name, kind), r in rates.items():
    print(f'  layers of {name}: {kind} images/s median {np.median(r):.1f}, min {min(r):.1f}, max {max(r):.1f}')


if __name__ == '__main__':
  main()
