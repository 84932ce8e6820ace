"""Data-parallel scaling: train images/s of one model on 1, 2, 4 devices and the efficiency against 1 device.

  python experiments/bench/scaling.py --model simple_cnn --size 64 --batch_size 64            # CPU: virtual devices
  python experiments/bench/scaling.py --model resnet50 --size 224 --batch_size 256 --dtype bfloat16 --channels 3
      --device_counts 1 2 4 8 --real_devices                                                  # GPUs/TPUs

Each device count runs `pneumojax.bench` in its own process (on CPU with `--cpu_devices N`; with --real_devices,
CUDA_VISIBLE_DEVICES limits the GPUs).
The global batch stays fixed (strong scaling), so each device gets batch/N. Efficiency = images/s on N devices /
(N x images/s on 1 device) for real devices; for CPU virtual devices, which share the same cores, it is images/s
on N over images/s on 1 (1.0 = no loss from splitting the step).
"""

import argparse
import json
import os
import subprocess
import sys


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', default='simple_cnn')
  parser.add_argument('--size', type=int, default=64)
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--channels', type=int, default=1)
  parser.add_argument('--modes', nargs='+', default=['jit', 'pmap'])
  parser.add_argument('--device_counts', nargs='+', type=int, default=[1, 2, 4])
  parser.add_argument('--real_devices', action='store_true', help='accelerators: N real devices, not virtual CPUs')
  parser.add_argument('--windows', type=int, default=5)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--jsonl', help='append the rows to this JSON-lines file')
  args = parser.parse_args()

  rows = []
  for n in args.device_counts:
    env = dict(os.environ)
    if args.real_devices:
      env['CUDA_VISIBLE_DEVICES'] = ','.join(map(str, range(n)))
    command = [sys.executable, '-m', 'pneumojax.bench', '--models', args.model, '--sizes', str(args.size),
               '--batch_sizes', str(args.batch_size), '--dtypes', args.dtype, '--channels', str(args.channels),
               '--modes', *args.modes, '--windows', str(args.windows), '--steps', str(args.steps),
               *([] if args.real_devices else ['--cpu_devices', str(n)])]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    rows += [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{')]

  print(f'{args.model} {args.size} px, global batch {args.batch_size}, {args.dtype}, {rows[0]["device_kind"]}\n')
  print('| mode | devices | train img/s median (min-max) | efficiency |\n|---|---|---|---|')
  for row in rows:
    base = next(r for r in rows if r['mode'] == row['mode'] and r['devices'] == args.device_counts[0])
    ideal = row['devices'] / base['devices'] if args.real_devices else 1
    row['efficiency'] = row['train_ips'] / (base['train_ips'] * ideal)
    print(f"| {row['mode']} | {row['devices']} | {row['train_ips']:.1f} ({row['train_ips_min']:.1f}-"
          f"{row['train_ips_max']:.1f}) | {row['efficiency']:.2f} |")
    if args.jsonl:
      with open(args.jsonl, 'a') as f:
        f.write(json.dumps(row) + '\n')


if __name__ == '__main__':
  main()
