"""Input pipeline benchmark: build time of a stored resolution and train-pipeline images/s from the cache.

  python experiments/bench/input_pipeline.py --manual_dir ../shared/data/chest_xray --resolution 224

Builds into a fresh temporary data dir (so the build is really timed) unless --data_dir is given, then times
the augmented train stream after one warm-up pass that fills the cache. Prints medians over timed windows.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np

from pneumojax.config import default_config
from pneumojax.data import pipeline, prepare


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--manual_dir', default='../shared/data/chest_xray')
  parser.add_argument('--data_dir', help='reuse a prepared data dir (then the build is not timed)')
  parser.add_argument('--resolution', type=int, default=224)
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--windows', type=int, default=5)
  parser.add_argument('--batches_per_window', type=int, default=20)
  parser.add_argument('--no_augment', action='store_true')
  args = parser.parse_args()

  cfg = default_config().data
  cfg.update(dict(data_dir=args.data_dir or tempfile.mkdtemp(prefix='pneumojax_bench_'),
                  manual_dir=args.manual_dir, resolution=args.resolution, augment=not args.no_augment))
  start = time.perf_counter()
  builder = prepare.get_builder(cfg)
  build_s = time.perf_counter() - start
  print(f'build of {builder.info.full_name}: {build_s:.1f} s' + (' (already prepared)' if args.data_dir else ''))

  info = pipeline.split_info(builder, cfg.train_split, cfg)
  batches = pipeline.train_dataset(builder, cfg, args.batch_size, seed=0).as_numpy_iterator()
  start = time.perf_counter()
  for _ in range(-(-info.num_examples // args.batch_size)):  # one epoch fills the cache
    next(batches)
  print(f'first epoch (decode + cache + augment): {info.num_examples / (time.perf_counter() - start):.0f} images/s')
  rates = []
  for _ in range(args.windows):
    start = time.perf_counter()
    for _ in range(args.batches_per_window):
      next(batches)
    rates.append(args.batches_per_window * args.batch_size / (time.perf_counter() - start))
  print(f'train pipeline from cache at {args.resolution} px, augment={cfg.augment}, batch {args.batch_size}: '
        f'median {np.median(rates):.0f} images/s (min {min(rates):.0f}, max {max(rates):.0f}, '
        f'{args.windows} windows of {args.batches_per_window} batches)')


if __name__ == '__main__':
  main()
