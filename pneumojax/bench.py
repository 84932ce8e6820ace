"""`pneumojax bench`: train- and eval-step speed, compile time, memory and FLOP utilisation, as JSON lines and a
Markdown table.

  pneumojax bench --models simple_cnn resnet18 --sizes 64 --batch_sizes 32 --dtypes float32 bfloat16
  pneumojax bench --models simple_cnn --modes jit pmap --cpu_devices 4     # the CPU as 4 devices
  python -m pneumojax.bench ...   # the same without the CLI's TensorFlow import (e.g. on a GPU host without TF)
  pneumojax bench --end_to_end experiments/quickstart.py --config.data.manual_dir=DIR   # a real run vs its step

One row per model x size x batch x dtype x parallel mode, on all of this process's devices, with synthetic data
already on the devices (the input pipeline is measured separately: `--data_dir` adds its images/s at each size,
and each row then says which of the two limits a real run). After compilation, one step and `--warmup`
steps, each speed is the median of `--windows` timed windows of `--steps` steps, with the min and max.

- compile_s: lowering and compiling the train step (the first call then reuses the compiled step).
- train_gflops / fwd_gflops: XLA's cost analysis of one image's train step (forward, backward, optimizer) and
  forward pass; a multiply-add counts 2.
- mfu: achieved train FLOP/s (train_gflops x images/s) over the peak measured here for the same dtype: a square
  matmul on one device (2048 on CPU, 8192 on accelerators), times the device count on accelerators (CPU virtual
  devices share the same cores).
- step_mib: XLA's memory analysis of the compiled train step (arguments + outputs + temporaries - aliased);
  device_peak_mib: the allocator's peak so far in this process, where the backend reports one (GPU, TPU).

`--end_to_end CONFIG` instead trains the config for `--run_steps` steps in a temporary workdir, once per data path
(on the devices, and through tf.data), and reports the run's images/s (its logged windows after the first, which
holds the compilation) beside its train step alone on synthetic data, on the run's devices.
"""

import argparse
import datetime
import json
import platform
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pneumojax import models
from pneumojax.train import distributed, step
from pneumojax.train.parallel import AXIS, MODES, DataParallel
from pneumojax.train.state import create_train_state

NATIVE_SIZE = {'inception_v3': 299}  # the others: 224.
COLUMNS = (  # (key, Markdown header, format)
    ('model', 'model', '{}'), ('size', 'px', '{}'), ('batch_size', 'batch', '{}'), ('dtype', 'dtype', '{}'),
    ('mode', 'mode', '{}'), ('devices', 'devices', '{}'), ('compile_s', 'compile s', '{:.1f}'),
    ('train_ips', 'train img/s median', '{:.1f}'), ('train_ips_min', 'min', '{:.1f}'),
    ('train_ips_max', 'max', '{:.1f}'), ('eval_ips', 'eval img/s', '{:.1f}'), ('fwd_gflops', 'fwd GFLOP/img', '{:.3f}'),
    ('train_gflops', 'train GFLOP/img', '{:.3f}'), ('mfu', 'of peak', '{:.1%}'), ('step_mib', 'step MiB', '{:.0f}'))


def timed_windows(run, windows: int, steps: int) -> list[float]:
  """Seconds of each of `windows` calls of run(steps), which must block until its work is done."""
  times = []
  for _ in range(windows):
    start = time.perf_counter()
    run(steps)
    times.append(time.perf_counter() - start)
  return times


def matmul_peak(dtype: str, windows: int = 5) -> float:
  """FLOP/s of a square matmul on the first device, the best of `windows` windows."""
  n = 2048 if jax.default_backend() == 'cpu' else 8192
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  matmul = jax.jit(lambda a: a @ a)
  jax.block_until_ready(matmul(a))
  seconds = timed_windows(lambda k: jax.block_until_ready([matmul(a) for _ in range(k)]), windows, 4)
  return 2 * n**3 * 4 / min(seconds)


def step_flops(model, variables, batch) -> tuple[float, float]:
  """(forward, train step) FLOPs of the whole batch, from XLA's cost analysis of the unsharded computations."""
  def loss(params):
    logits, _ = model.apply({**variables, 'params': params}, batch['image'], train=True, mutable=['batch_stats'],
                            rngs={'dropout': jax.random.key(0)})
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()

  def cost(fn, *args):
    # Of the lowered, not the compiled, computation: GPU compilers turn convolutions into library calls that
    # the compiled cost analysis does not count (it gave ResNet-50 0.08 GFLOPs on an H200).
    analysis = jax.jit(fn).lower(*args).cost_analysis()
    return (analysis[0] if isinstance(analysis, list) else analysis)['flops']

  forward = cost(lambda v, x: model.apply(v, x, train=False), variables, batch['image'])
  return forward, cost(jax.grad(loss), variables['params'])


_FLOPS = {}


def _cached_step_flops(model, variables, batch, key):
  """step_flops, computed once per model and shape."""
  if key not in _FLOPS:
    _FLOPS[key] = step_flops(model, variables, batch)
  return _FLOPS[key]


def bench_step(name: str, size: int, batch_size: int, dtype: str, mode: str, channels: int = 1,
               windows: int = 5, steps: int = 5, warmup: int = 2, model_kwargs: dict | None = None) -> dict:
  """One row: the train and eval steps of `name` (built with `model_kwargs`) at `size` px on synthetic data."""
  # As training builds it (train/run.py): BatchNorm and dropout over the global batch of the devices.
  model = models.get_model(name, num_classes=2, dtype=dtype, batch_axis=AXIS, **(model_kwargs or {}))
  tx = optax.adam(1e-3)
  shape = (size, size, channels)
  # Compiled: an op-by-op initialisation of a ResNet takes longer than its train step's compilation.
  host_state = jax.jit(lambda rng: create_train_state(model, tx, rng, shape))(jax.random.key(0))
  dp = DataParallel(mode, train_step=step.train_step)
  state = dp.replicate(host_state)
  rng = np.random.default_rng(0)
  host_batch = {'image': rng.normal(size=(batch_size, *shape)).astype(np.float32),
                'label': rng.integers(0, 2, batch_size).astype(np.int32),
                'mask': np.ones(batch_size, np.float32)}
  batch = dp.shard(host_batch)
  start = time.perf_counter()
  compiled = dp.lower_train_step(state, batch).compile()
  compile_s = time.perf_counter() - start
  step_mib = _memory_mib(compiled)

  def train(num_steps):
    nonlocal state
    for _ in range(num_steps):
      state, _ = dp.train_step(state, batch)
    jax.block_until_ready(state)

  train(1 + warmup)
  train_ips = [steps * batch_size / s for s in timed_windows(train, windows, steps)]
  dp.eval_step(state, batch)  # compiles the eval step
  eval_ips = [steps * batch_size / s for s in
              timed_windows(lambda k: [dp.eval_step(state, batch) for _ in range(k)], windows, steps)]

  variables = {'params': host_state.params, **({'batch_stats': host_state.batch_stats}
                                               if host_state.batch_stats else {})}
  fwd_flops, train_flops = _cached_step_flops(model.clone(batch_axis=None), variables, {k: jnp.asarray(v) for k, v in host_batch.items()},
                                              key=(name, str(model_kwargs), size, batch_size, dtype, channels))
  row = dict(model=name, **({'model_kwargs': model_kwargs} if model_kwargs else {}), size=size,
             batch_size=batch_size, dtype=dtype, mode=mode, devices=jax.device_count(), channels=channels,
             compile_s=compile_s,
             train_ips=float(np.median(train_ips)), train_ips_min=min(train_ips), train_ips_max=max(train_ips),
             eval_ips=float(np.median(eval_ips)), eval_ips_min=min(eval_ips), eval_ips_max=max(eval_ips),
             fwd_gflops=fwd_flops / batch_size / 1e9, train_gflops=train_flops / batch_size / 1e9,
             params=sum(x.size for x in jax.tree.leaves(host_state.params)), step_mib=step_mib,
             windows=windows, steps_per_window=steps)
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    row['device_peak_mib'] = stats['peak_bytes_in_use'] / 2**20
  return row


def end_to_end(config, num_steps: int, windows: int = 5, steps: int = 5) -> dict:
  """A real training run of `config` (`num_steps` steps from a fresh start, one validation at the end, in a temporary
  workdir) beside its train step alone: the run's images/s over its 10 logged windows but the first (which holds
  the compilation), the step's on synthetic data already on the devices (`bench_step`), and their ratio."""
  if num_steps < 2:
    raise ValueError(f'--run_steps={num_steps}: at least 2, to time a window after the compilation.')
  log_every = max(num_steps // 10, 1)
  import tempfile  # Deferred, as TensorFlow: only this measurement needs them.

  from pneumojax.data import device, pipeline, prepare
  from pneumojax.train import train_and_evaluate
  from pneumojax.trained.evaluate import training_history
  config = config.copy_and_resolve_references()
  train_examples = pipeline.split_info(prepare.get_builder(config.data), config.data.train_split,
                                       config.data).num_examples
  config.train.update(dict(num_steps=num_steps, eval_every_steps=num_steps, log_every_steps=log_every))
  with tempfile.TemporaryDirectory() as workdir:
    started = time.perf_counter()
    train_and_evaluate(config, workdir)
    wall_s = time.perf_counter() - started
    _, rates = training_history(workdir)['train/images_per_sec']
  size, _, channels = pipeline.input_shape(config.data)
  alone = bench_step(config.model.name, size, config.train.batch_size, config.model.dtype, config.train.parallel,
                     channels, windows, steps, model_kwargs=dict(config.model.kwargs))
  run_ips = float(np.median(rates[1:]))
  return dict(model=config.model.name, size=size, batch_size=config.train.batch_size, dtype=config.model.dtype,
              devices=jax.device_count(),
              data='on the devices' if device.fits(config.data, train_examples) else 'tf.data',
              run_ips=run_ips, run_ips_min=float(np.min(rates[1:])), run_ips_max=float(np.max(rates[1:])),
              step_ips=alone['train_ips'], of_step=run_ips / alone['train_ips'], wall_s=wall_s, num_steps=num_steps)


def _memory_mib(compiled) -> float | None:
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  total = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
           - analysis.alias_size_in_bytes)
  return total / 2**20


def pipeline_ips(data_dir: str, size: int, batch_size: int, batches: int = 20, windows: int = 3) -> float:
  """Median images/s of the augmented train pipeline at `size` px, read from a prepared data dir (cache warm)."""
  # Deferred: TensorFlow and TFDS only for this measurement.
  from pneumojax.config import default_config
  from pneumojax.data import pipeline, prepare
  config = default_config().data
  config.update(dict(data_dir=data_dir, resolution=size))
  builder = prepare.get_builder(config)
  stream = pipeline.train_dataset(builder, config, batch_size, seed=0).as_numpy_iterator()
  for _ in range(-(-pipeline.split_info(builder, config.train_split, config).num_examples // batch_size)):
    next(stream)  # one epoch fills the cache
  seconds = timed_windows(lambda k: [next(stream) for _ in range(k)], windows, batches)
  return float(np.median([batches * batch_size / s for s in seconds]))


def environment() -> dict:
  device = jax.devices()[0]
  return dict(backend=jax.default_backend(), device_kind=device.device_kind, host=platform.node(),
              processor=platform.processor() or platform.machine(), jax=jax.__version__, flax=flax.__version__,
              python=platform.python_version(), date=datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
              command=' '.join(sys.argv))


def markdown(rows: list[dict], columns=COLUMNS) -> str:
  columns = [c for c in columns if any(r.get(c[0]) is not None for r in rows)]
  if any('pipeline_ips' in r for r in rows):
    columns += [('pipeline_ips', 'pipeline img/s', '{:.0f}'), ('bottleneck', 'bottleneck', '{}')]
  lines = ['| ' + ' | '.join(c[1] for c in columns) + ' |', '|' + '---|' * len(columns)]
  for row in rows:
    lines.append('| ' + ' | '.join('' if row.get(key) is None else fmt.format(row[key])
                                   for key, _, fmt in columns) + ' |')
  return '\n'.join(lines)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
  parser = parser or argparse.ArgumentParser(prog='pneumojax bench', description=__doc__,
                                             formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--models', nargs='+', default=['simple_cnn'], help="model names, or 'all'")
  parser.add_argument('--sizes', nargs='+', type=int, help="input sizes; default: each model's native size")
  parser.add_argument('--batch_sizes', nargs='+', type=int, default=[32], help='global batch sizes')
  parser.add_argument('--dtypes', nargs='+', default=['float32'], choices=['float32', 'bfloat16'],
                      help='compute dtypes (parameters stay float32)')
  parser.add_argument('--modes', nargs='+', default=['jit'], choices=MODES)
  parser.add_argument('--channels', type=int, default=1)
  parser.add_argument('--cpu_devices', type=int, default=0,
                      help='split the CPU into this many JAX devices (0: the default; see distributed.cpu_devices)')
  parser.add_argument('--windows', type=int, default=5)
  parser.add_argument('--steps', type=int, default=5, help='steps per timed window')
  parser.add_argument('--warmup', type=int, default=2, help='untimed steps after the first')
  parser.add_argument('--data_dir', help='a prepared TFDS data dir: also measure the input pipeline')
  parser.add_argument('--jsonl', help='append the rows to this JSON-lines file')
  parser.add_argument('--end_to_end', metavar='CONFIG',
                      help='instead: a real training run of this config (FILE[:ARG], with --config.a.b=VALUE '
                           'overrides after it) beside its step alone, for each of --data_paths')
  parser.add_argument('--data_paths', nargs='+', default=['devices', 'tf.data'], choices=['devices', 'tf.data'],
                      help='--end_to_end: the data on the devices (data/device.py), the tf.data pipeline, or both')
  parser.add_argument('--run_steps', type=int, default=200, help='--end_to_end: training steps of each run')
  return parser


E2E_COLUMNS = (
    ('model', 'model', '{}'), ('size', 'px', '{}'), ('batch_size', 'batch', '{}'), ('dtype', 'dtype', '{}'),
    ('devices', 'devices', '{}'), ('data', 'data', '{}'), ('run_ips', 'run img/s median', '{:.1f}'),
    ('run_ips_min', 'min', '{:.1f}'), ('run_ips_max', 'max', '{:.1f}'), ('step_ips', 'step alone img/s', '{:.1f}'),
    ('of_step', 'run / step', '{:.0%}'), ('wall_s', 'run wall s', '{:.0f}'))


def run_end_to_end(args) -> list[dict]:
  from pneumojax import config as config_lib  # Deferred: ml_collections' flags only here.
  config = config_lib.load_config(['--config', args.end_to_end, *getattr(args, 'config_args', [])])
  distributed.initialize(config)  # The run's devices, chosen before JAX starts.
  env, rows = environment(), []
  for path in args.data_paths:
    path_config = config.copy_and_resolve_references()
    if path == 'tf.data':
      path_config.data.device_memory_mb = 0
    row = {**end_to_end(path_config, args.run_steps, windows=args.windows, steps=args.steps), **env}
    rows.append(row)
    print(json.dumps(row), flush=True)
    if args.jsonl:
      with open(args.jsonl, 'a') as f:
        f.write(json.dumps(row) + '\n')
  print('\n' + markdown(rows, E2E_COLUMNS))
  return rows


def run(args) -> list[dict]:
  if args.end_to_end:
    return run_end_to_end(args)
  distributed.split_cpu(args.cpu_devices)
  names = models.list_models() if args.models == ['all'] else args.models
  for name in names:
    try:
      models.get_model(name)  # an unknown name fails here, before any timing
    except ValueError as e:
      raise SystemExit(f'pneumojax bench: {e}') from None
  env = environment()
  peaks = {dtype: matmul_peak(dtype) for dtype in args.dtypes}
  scale = 1 if env['backend'] == 'cpu' else jax.device_count()
  print(f"{jax.device_count()} x {env['device_kind']} ({env['backend']}), jax {env['jax']}; matmul peak: "
        + ', '.join(f'{d} {p / 1e12:.3f} TFLOP/s' for d, p in peaks.items()), flush=True)
  pipeline_rates, rows = {}, []
  for name in names:
    for size in args.sizes or [NATIVE_SIZE.get(name, 224)]:
      for batch_size in args.batch_sizes:
        for dtype in args.dtypes:
          for mode in args.modes:
            row = bench_step(name, size, batch_size, dtype, mode, args.channels, args.windows, args.steps,
                             args.warmup)
            row['peak_tflops'] = peaks[dtype] * scale / 1e12
            row['mfu'] = row['train_gflops'] * row['train_ips'] / (row['peak_tflops'] * 1e3)
            if args.data_dir:
              key = (size, batch_size)
              if key not in pipeline_rates:
                pipeline_rates[key] = pipeline_ips(args.data_dir, size, batch_size)
              row['pipeline_ips'] = pipeline_rates[key]
              row['bottleneck'] = 'pipeline' if row['pipeline_ips'] < row['train_ips'] else 'step'
            row.update(env)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.jsonl:
              with open(args.jsonl, 'a') as f:
                f.write(json.dumps(row) + '\n')
  print('\n' + markdown(rows))
  return rows


def main(argv=None) -> None:
  parser = build_parser()
  args, rest = parser.parse_known_args(argv)
  if any(not arg.startswith('--config.') for arg in rest):
    parser.error(f'unrecognised arguments: {" ".join(rest)}')
  args.config_args = rest
  run(args)


if __name__ == '__main__':
  main()
