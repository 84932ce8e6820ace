"""`pneumojax <command>`: prepare the data, train, evaluate, report, explain, predict, sweep, tables, reproduce,
bench."""

import argparse
import json
import logging
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TensorFlow only feeds data here: keep its C++ logs quiet.

from pneumojax import config as config_lib

# Commands import their modules when they run: TensorFlow and JAX take seconds to import.


def _prepare(args) -> None:
  from pneumojax.data import prepare, summary
  for resolution in args.resolution:
    data_config = config_lib.default_config().data
    data_config.update(dict(data_dir=args.data_dir, manual_dir=args.manual_dir, archive=args.archive,
                            resolution=resolution, resize=args.resize, skip_unreadable=args.skip_unreadable,
                            val_fraction=args.val_fraction, val_seed=args.val_seed))
    builder = prepare.get_builder(data_config)
    result = summary.summarize(builder, data_config)
    print(json.dumps(result, indent=1) if args.json else summary.format_summary(result))


def _train(args) -> None:
  from pneumojax import train
  from pneumojax.train import preemption
  config = config_lib.load_config(args.config_args)
  try:
    results = train.train_and_evaluate(config, args.workdir)
  except preemption.Interrupted as e:
    logging.getLogger('pneumojax').warning('%s', e)
    raise SystemExit(e.exit_code) from None
  shown = ('checkpoint_step', 'val', 'val_at_val_threshold', 'test', 'test_at_val_threshold')  # those it has
  print(json.dumps({k: results[k] for k in shown if k in results}, indent=1))


def _eval(args) -> None:
  from pneumojax import api
  overrides = {k: getattr(args, k) for k in ('threshold_rule', 'target_sensitivity', 'bootstrap_samples',
                                               'bootstrap_seed') if getattr(args, k) is not None}
  results = api.load_run(args.workdir, args.step).evaluate(args.split, **overrides)
  print(json.dumps({k: results[k] for k in ('split', 'checkpoint_step', 'threshold', 'operating_points')},
                   indent=1, default=str))


def _report(args) -> None:
  from pneumojax import api
  print(api.load_run(args.workdir).write_report(args.split))


def _explain(args) -> None:
  from pneumojax import api
  for path in api.load_run(args.workdir).explain_files(args.images, args.out):
    print(path)


def _predict(args) -> None:
  from pneumojax import api
  print(json.dumps(api.load_run(args.workdir).predict_files(args.inputs, args.out, args.batch_size), indent=1))


def _sweep(args) -> None:
  from pneumojax.studies import sweep, tables
  definition = sweep.load_sweep(args.file)
  out = args.out or f'experiments/results/{definition.name}'
  if args.dry_run or args.collect_only:
    if args.dry_run:
      for run in sweep.expand(definition, args.seeds):
        print(f'{out}/{run.name}')
    if args.collect_only:
      print(tables.write_tables(out)[1].read_text())
    return
  from pneumojax.studies import launchers
  from pneumojax.train import preemption
  try:
    if args.launcher == 'slurm':
      executor = launchers.slurm_executor(f'{out}/slurm/%j', args.partition, args.gpus_per_run, args.cpus_per_run,
                                          args.time)
      statuses = launchers.submit_slurm(definition, out, executor, args.config_args, args.seeds)
    elif args.parallel > 1:
      statuses = launchers.run_parallel(definition, out, args.config_args, args.seeds, args.parallel)
    else:
      statuses = sweep.run_sweep(definition, out, args.config_args, args.seeds)
  except preemption.Interrupted as e:  # The runs saved a checkpoint; the same command resumes the sweep.
    logging.getLogger('pneumojax').warning('%s', e)
    raise SystemExit(e.exit_code) from None
  print(tables.write_tables(out)[1].read_text())
  print('\n'.join(f'{name}: {status}' for name, status in statuses.items()))
  failed = [name for name, status in statuses.items() if status.startswith(('failed', 'interrupted'))]
  if failed:
    raise SystemExit(f'pneumojax sweep: {len(failed)} of {len(statuses)} runs failed or were interrupted (see '
                     f'sweep_error.txt in their workdirs, or their job logs): {", ".join(failed)}')


def _table(args) -> None:
  from pneumojax.studies import tables
  print(tables.write_tables(args.dir)[1].read_text())


def _reproduce(args) -> None:
  from pneumojax.studies import reproduction
  print(reproduction.write(args.results, args.out, args.setups))


def _ablations(args) -> None:
  from pneumojax.studies import ablations
  print(ablations.write(args.ablations, args.results, args.out))


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='pneumojax', description=__doc__)
  commands = parser.add_subparsers(dest='command', required=True)

  prepare = commands.add_parser('prepare', help='build the TFDS dataset from the downloaded data and report on it')
  prepare.add_argument('--manual_dir', help='folder with the extracted chest_xray/ or archive.zip / '
                       'ChestXRay2017.zip, or the zip itself (default $PNEUMOJAX_MANUAL_DIR)')
  prepare.add_argument('--archive', help='which zip in --manual_dir to read, if it holds several')
  prepare.add_argument('--data_dir', help='where TFDS writes (default $PNEUMOJAX_DATA_DIR, then the TFDS default)')
  prepare.add_argument('--resolution', type=int, nargs='+', default=[128], help='stored sizes: 28 64 128 224 299')
  prepare.add_argument('--resize', choices=['squash', 'crop'], default='squash')
  prepare.add_argument('--skip_unreadable', action='store_true',
                       help='leave out files that cannot be decoded (they are listed in the report)')
  prepare.add_argument('--val_fraction', type=float, default=0.1)
  prepare.add_argument('--val_seed', type=int, default=0)
  prepare.add_argument('--json', action='store_true', help='print the report as JSON')
  prepare.set_defaults(run=_prepare)

  train = commands.add_parser(
      'train', help='train and evaluate a config',
      usage='pneumojax train --workdir DIR --config experiments/NAME.py[:ARG] [--config.a.b=VALUE ...]')
  train.add_argument('--workdir', required=True, help='checkpoints, logs and results; an existing one resumes')
  train.set_defaults(run=_train)

  evaluate = commands.add_parser('eval', help='evaluate the best (or a given) checkpoint of a run on a split')
  evaluate.add_argument('--workdir', required=True)
  evaluate.add_argument('--split', default='test', help='test, val, train, val_pd or train_pd')
  evaluate.add_argument('--step', type=int, help='a checkpoint step (default: the best on validation)')
  evaluate.add_argument('--threshold_rule', choices=['sensitivity', 'youden'],
                        help="how the validation split chooses the threshold (default: the run's config.eval)")
  evaluate.add_argument('--target_sensitivity', type=float, help='for --threshold_rule=sensitivity')
  evaluate.add_argument('--bootstrap_samples', type=int, help='patient resamples for the 95%% intervals')
  evaluate.add_argument('--bootstrap_seed', type=int)
  evaluate.set_defaults(run=_eval)

  report = commands.add_parser('report', help="write one self-contained HTML page of a run's evaluation")
  report.add_argument('--workdir', required=True)
  report.add_argument('--split', default='test', help='the evaluated split to report (evaluated first if needed)')
  report.set_defaults(run=_report)

  explain = commands.add_parser('explain', help='Grad-CAM and occlusion maps of image files, as PNG overlays')
  explain.add_argument('--workdir', required=True)
  explain.add_argument('--images', nargs='+', required=True, help='JPEG or PNG files')
  explain.add_argument('--out', help='folder for the PNGs (default: WORKDIR/explain)')
  explain.set_defaults(run=_explain)

  predict = commands.add_parser('predict', help="the best checkpoint's predictions on image files, as CSV")
  predict.add_argument('--workdir', required=True)
  predict.add_argument('inputs', nargs='+', metavar='FILE_OR_FOLDER', help='images, or folders searched for them')
  predict.add_argument('--out', default='predictions.csv', help='the CSV to write (default: predictions.csv)')
  predict.add_argument('--batch_size', type=int, default=64)
  predict.set_defaults(run=_predict)

  sweep = commands.add_parser(
      'sweep', help='train a grid of config overrides x seeds (experiments/ablations/*.py), then tabulate',
      usage='pneumojax sweep FILE [--out DIR] [--seeds S ...] [--parallel N | --launcher slurm --partition P '
            '--gpus_per_run G --cpus_per_run C --time MINUTES] [--collect_only] [--dry_run] [--config.a.b=VALUE ...]')
  sweep.add_argument('file', help='a sweep file defining get_sweep(), e.g. experiments/ablations/resolution.py')
  sweep.add_argument('--out', help='folder of the runs and tables (default: experiments/results/<sweep name>)')
  sweep.add_argument('--seeds', type=int, nargs='+', help="seeds (default: the sweep file's)")
  sweep.add_argument('--collect_only', action='store_true', help='only rebuild the tables from the results found')
  sweep.add_argument('--dry_run', action='store_true', help='list the runs (workdirs) and exit')
  sweep.add_argument('--parallel', type=int, default=1, metavar='N',
                     help='on this host, N runs at once, each on its own GPU and share of the CPU cores')
  sweep.add_argument('--launcher', choices=['local', 'slurm'], default='local',
                     help='local: on this host; slurm: one SLURM array task per run, through submitit '
                          "(pip install 'pneumojax[cluster]')")
  sweep.add_argument('--partition', help='--launcher slurm: the SLURM partition')
  sweep.add_argument('--gpus_per_run', type=int, default=1, help='--launcher slurm: GPUs of each task (default 1)')
  sweep.add_argument('--cpus_per_run', type=int, help='--launcher slurm: CPU cores of each task')
  sweep.add_argument('--time', type=int, metavar='MINUTES',
                     help="--launcher slurm: each task's time limit; a run past it is requeued and resumes")
  sweep.set_defaults(run=_sweep)

  table = commands.add_parser('table', help='every results.json under DIR -> DIR/results.csv and DIR/results.md')
  table.add_argument('dir')
  table.set_defaults(run=_table)

  reproduce = commands.add_parser('reproduce', help='write experiments/REPRODUCTION.md from the recorded results')
  reproduce.add_argument('--results', default='experiments/results', help='where the recorded runs are')
  reproduce.add_argument('--out', default='experiments/REPRODUCTION.md')
  reproduce.add_argument('--setups', default='experiments/papers.json', help="the papers' numbers and our setups")
  reproduce.set_defaults(run=_reproduce)

  ablations = commands.add_parser('ablations', help='write experiments/ABLATIONS.md from the recorded sweep runs')
  ablations.add_argument('--ablations', default='experiments/ablations', help='the sweep files')
  ablations.add_argument('--results', default='experiments/results', help='where the sweeps recorded their runs')
  ablations.add_argument('--out', default='experiments/ABLATIONS.md')
  ablations.set_defaults(run=_ablations)

  from pneumojax import bench  # Here, not above: its imports add a root log handler, which would mute ours.
  speed = commands.add_parser('bench', help='train/eval step speed, compile time, memory and FLOP utilisation',
                              description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  bench.build_parser(speed)
  speed.set_defaults(run=bench.run)
  return parser


def _our_logs(record: logging.LogRecord) -> bool:
  """Info from pneumojax and CLU's console writer; warnings and errors from everyone (orbax is chatty)."""
  return (record.levelno >= logging.WARNING or record.name.startswith('pneumojax')
          or f'{os.sep}clu{os.sep}' in record.pathname)


def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
  for handler in logging.getLogger().handlers:
    handler.addFilter(_our_logs)
  parser = build_parser()
  args, rest = parser.parse_known_args(argv)
  if args.command == 'train':
    args.config_args = rest  # --config and --config.* overrides, for ml_collections
  elif args.command in ('sweep', 'bench'):
    if any(not arg.startswith('--config.') for arg in rest):
      parser.error(f'{args.command} takes only --config.a.b=VALUE overrides besides its options, not: '
                   f'{" ".join(rest)}')
    if args.command == 'sweep' and args.launcher == 'slurm' and args.parallel != 1:
      parser.error('--parallel is for --launcher local: SLURM runs each run as its own task')
    if args.command == 'sweep' and args.launcher == 'local' and (args.partition or args.cpus_per_run or args.time):
      parser.error('--partition, --cpus_per_run and --time are for --launcher slurm')
    args.config_args = rest
  elif rest:
    parser.error(f'unrecognised arguments: {" ".join(rest)}')
  args.run(args)
  return 0


if __name__ == '__main__':
  sys.exit(main())
