"""pneumojax beside Keras and PyTorch: the same model, batch and input, train and eval images/s and the ratios.

  pip install torch==2.13.0     # benchmark-only extra (CPU build); Keras comes with tensorflow
  python experiments/bench/side_by_side.py                                  # the three models below
  python experiments/bench/side_by_side.py --runs simple_cnn:64:64 --jsonl side_by_side.jsonl

Each measurement runs in its own process, so no framework's thread pools or imports affect another's. The
pneumojax rows use `jax.jit` over `jax.shard_map` on one device (or `--cpu_devices N`: the CPU split into N
devices, the batch shared among them), float32, as `pneumojax bench`; the peers are in peers.py. A ratio above 1
means pneumojax is faster.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

DEFAULT_RUNS = ['simple_cnn:64:64', 'resnet18:128:32', 'resnet50:128:16']
FRAMEWORKS = ('pneumojax', 'keras', 'pytorch')


def measure(framework: str, name: str, size: int, batch_size: int, args) -> dict:
  timing = dict(windows=args.windows, steps=args.steps, warmup=args.warmup)
  if framework == 'pneumojax':
    from pneumojax import bench
    from pneumojax.train import distributed
    distributed.split_cpu(args.cpu_devices)
    # Keras's ResNet50 is v1 (stride in the 1x1 convolution): compare it with the same architecture.
    kwargs = {'variant': 'keras'} if (name, args.peer) == ('resnet50', 'keras') else {}
    row = bench.bench_step(name, size, batch_size, 'float32', 'jit', model_kwargs=kwargs, **timing)
    devices = f', {args.cpu_devices} CPU devices' if args.cpu_devices else ''
    row['framework'] = f"pneumojax (jax {bench.environment()['jax']}{devices})"
    return row
  import peers
  return (peers.keras_speed if framework == 'keras' else peers.torch_speed)(name, size, batch_size, **timing)


def run_isolated(framework, name, size, batch_size, args, peer=None) -> dict | None:
  command = [sys.executable, __file__, '--one', framework, '--runs', f'{name}:{size}:{batch_size}', '--windows',
             str(args.windows), '--steps', str(args.steps), '--warmup', str(args.warmup), '--cpu_devices',
             str(args.cpu_devices)]
  if peer:
    command += ['--peer', peer]
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  if done.returncode:
    print(f'{framework} {name} failed:\n{done.stderr[-2000:]}', file=sys.stderr)
    return None
  return json.loads(done.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--runs', nargs='+', default=DEFAULT_RUNS, help='MODEL:SIZE:BATCH')
  parser.add_argument('--frameworks', nargs='+', default=list(FRAMEWORKS), choices=FRAMEWORKS)
  parser.add_argument('--windows', type=int, default=5)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--cpu_devices', type=int, default=0,
                      help='pneumojax on this many CPU devices (data parallel over the cores; 0: one device)')
  parser.add_argument('--jsonl', help='append every row to this JSON-lines file')
  parser.add_argument('--one', help=argparse.SUPPRESS)   # internal: measure one framework, print one JSON row
  parser.add_argument('--peer', help=argparse.SUPPRESS)  # internal: which peer a pneumojax row is set beside
  args = parser.parse_args()
  if args.one:
    name, size, batch = args.runs[0].split(':')
    print(json.dumps(measure(args.one, name, int(size), int(batch), args)))
    return

  lines = ['| model | px | batch | framework | train img/s median (min-max) | eval img/s | params | '
           'pneumojax / this (train) | (eval) |', '|---|---|---|---|---|---|---|---|---|']
  for spec in args.runs:
    name, size, batch = spec.split(':')
    size, batch = int(size), int(batch)
    measured = {}  # pneumojax rows by architecture variant: only Keras's ResNet50 needs its own
    for peer in [f for f in args.frameworks if f != 'pneumojax'] or [None]:
      variant = (name, peer) == ('resnet50', 'keras')
      fresh = 'pneumojax' in args.frameworks and variant not in measured
      if fresh:
        measured[variant] = run_isolated('pneumojax', name, size, batch, args, peer)
      ours = measured.get(variant)
      theirs = run_isolated(peer, name, size, batch, args) if peer else None
      for row in ([ours] if fresh else []) + [theirs]:
        if row is None:
          continue
        row.update(model=name, size=size, batch_size=batch, set_beside=peer)
        ratio = (f"{ours['train_ips'] / row['train_ips']:.2f} | {ours['eval_ips'] / row['eval_ips']:.2f}"
                 if ours and row is not ours else ' | ')
        lines.append(f"| {name} | {size} | {batch} | {row['framework']} | {row['train_ips']:.1f} "
                     f"({row['train_ips_min']:.1f}-{row['train_ips_max']:.1f}) | {row['eval_ips']:.1f} | "
                     f"{row['params']:,} | {ratio} |")
        print(lines[-1], flush=True)
        if args.jsonl:
          with open(args.jsonl, 'a') as f:
            f.write(json.dumps(row) + '\n')
  print('\n' + '\n'.join(lines))


if __name__ == '__main__':
  main()
