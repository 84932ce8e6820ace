"""`pneumojax <command>`: prepare, train, eval."""

import argparse
import json
import sys

from pneumojax.config import default_config


def _prepare(args) -> None:
  from pneumojax.data import paths, report  # Deferred: TensorFlow takes seconds to import.
  for resolution in args.resolution:
    data_config = default_config().data
    data_config.update(dict(data_dir=args.data_dir, manual_dir=args.manual_dir, archive=args.archive,
                            resolution=resolution, resize=args.resize, skip_unreadable=args.skip_unreadable,
                            val_fraction=args.val_fraction, val_seed=args.val_seed))
    builder = paths.get_builder(data_config)
    result = report.data_report(builder, data_config)
    print(json.dumps(result, indent=1) if args.json else report.format_report(result))


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='pneumojax', description=__doc__)
  commands = parser.add_subparsers(dest='command', required=True)

  prepare = commands.add_parser('prepare', help='build the TFDS dataset from the downloaded data and report on it')
  prepare.add_argument('--manual_dir', help='folder with the extracted chest_xray/ or archive.zip / '
                       'ChestXRay2017.zip (default $PNEUMOJAX_MANUAL_DIR)')
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
  return parser


def main(argv=None) -> int:
  args, rest = build_parser().parse_known_args(argv)
  if rest and args.command == 'prepare':
    build_parser().error(f'unrecognised arguments: {" ".join(rest)}')
  args.run(args, *([rest] if args.command != 'prepare' else []))
  return 0


if __name__ == '__main__':
  sys.exit(main())
