"""`pneumojax sweep FILE`: a grid of config overrides x seeds, one workdir per run, then the results tables.

A sweep file (`experiments/ablations/NAME.py`) defines `get_sweep()`, returning a dict:

  config:    the base config, as for `--config`: 'experiments/quickstart.py' or 'experiments/kermany2018.py:ARG'
  grid:      {key: values}; every combination of the values is one run (x each seed). A dotted key is a config
             field with a list of values; a plain key names an axis whose values are {label: {field: value}}, for
             fields that change together (e.g. 'mode': {'frozen': {...}, 'finetuned': {...}}).
  overrides: {field: value} for every run (optional; `--config.a.b=v` on the command line takes precedence)
  seeds:     [0, 1, 2] (`--seeds` on the command line takes precedence)

Each run trains in `OUT/<name>`, the name made of the grid values and the seed (`data.resolution=64__seed=0`).
A workdir with results.json is finished and skipped (after checking that it holds the same config); one with
checkpoints but no results.json was interrupted and resumes from its latest checkpoint (pneumojax.train); a
cached-features run, which cannot resume, starts again (its old checkpoints are moved aside). Runs go one after
the other in this process (no per-run import cost), or N at once on this host, or one SLURM job each
(studies/launchers.py); a run that fails is recorded in its workdir's
`sweep_error.txt` and the sweep goes on; the command exits non-zero at the end naming the failed runs. A signal
(SIGTERM, Ctrl-C) stops the run at a step boundary with a checkpoint and ends the sweep: run it again to resume.
"""

import dataclasses
import importlib.util
import itertools
import json
import logging
import re
import time
import traceback
from pathlib import Path

import jax

from pneumojax import config as config_lib
from pneumojax.studies import tables
from pneumojax.train import files, preemption, provenance

ERROR = 'sweep_error.txt'
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Sweep:
  name: str
  config: str
  grid: dict
  seeds: tuple[int, ...]
  overrides: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  seed: int
  overrides: dict  # flat {field: value}, the grid's values for this run and its seed


def load_sweep(path: str) -> Sweep:
  """The sweep defined by `get_sweep()` in the Python file `path`."""
  spec = importlib.util.spec_from_file_location(f'sweep_{Path(path).stem}', path)
  if spec is None or not Path(path).is_file():
    raise SystemExit(f'pneumojax: no sweep file {path}')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  definition = module.get_sweep()
  unknown = set(definition) - {'config', 'grid', 'seeds', 'overrides', 'name'}
  if unknown:
    raise ValueError(f'{path}: get_sweep() returned unknown keys {sorted(unknown)}.')
  return Sweep(name=definition.get('name', Path(path).stem), config=definition['config'],
               grid=dict(definition.get('grid', {})), seeds=tuple(definition.get('seeds', (0,))),
               overrides=dict(definition.get('overrides', {})))


def _slug(value) -> str:
  text = '-'.join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
  return re.sub(r'[^A-Za-z0-9._-]+', '-', text).strip('-') or 'none'


def run_name(labels: list[tuple[str, object]], seed: int) -> str:
  """A readable, filesystem-safe workdir name: `key=value` parts and the seed, joined by '__'."""
  return '__'.join([f'{key}={_slug(value)}' for key, value in labels] + [f'seed={seed}'])


def expand(sweep: Sweep, seeds=None) -> list[Run]:
  """Every run of the grid x seeds, in a stable order (grid values as listed, seeds innermost)."""
  axes = []
  for key, values in sweep.grid.items():
    if '.' in key:  # a config field and its values
      axes.append([((key, v), {key: v}) for v in values])
    else:  # a named axis: label -> several fields
      if not isinstance(values, dict):
        raise ValueError(f"Sweep {sweep.name}: the grid axis {key!r} (no '.') must map labels to override dicts.")
      axes.append([((key, label), dict(fields)) for label, fields in values.items()])
  runs = []
  for combination in itertools.product(*axes):
    labels = [label for label, _ in combination]
    fields = {k: v for _, overrides in combination for k, v in overrides.items()}
    for seed in (sweep.seeds if seeds is None else seeds):
      runs.append(Run(run_name(labels, seed), seed, {**fields, 'seed': seed}))
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise ValueError(f'Sweep {sweep.name}: two runs would share a workdir name: {names}.')
  return runs


def _cli_value(value) -> str:
  if isinstance(value, (tuple, list)):
    return '(' + ','.join(map(str, value)) + (',)' if len(value) == 1 else ')')
  return str(value)


def run_config(sweep: Sweep, run: Run, config_args: list[str]):
  """The run's config: the base config, the sweep's overrides, `config_args` (`--config.a.b=v`), the grid."""
  given = {arg.split('=', 1)[0].removeprefix('--config.') for arg in config_args}
  clash = given & set(run.overrides)
  if clash:
    raise ValueError(f'{", ".join(sorted(clash))} is set by the sweep grid (or the seed); leave it off the command '
                     'line (use --seeds for seeds).')
  config = config_lib.load_config(['--config', sweep.config, *config_args])
  config.update_from_flattened_dict({k: v for k, v in sweep.overrides.items() if k not in given})
  config.update_from_flattened_dict(run.overrides)
  return config


def run_command(sweep: Sweep, run: Run, workdir: Path, config_args: list[str]) -> str:
  """The `pneumojax train` command equivalent to the run, recorded in its results.json."""
  given = {arg.split('=', 1)[0].removeprefix('--config.') for arg in config_args}
  fixed = [f'--config.{k}={_cli_value(v)}' for k, v in sweep.overrides.items() if k not in given]
  grid = [f'--config.{k}={_cli_value(v)}' for k, v in run.overrides.items()]
  return ' '.join(['pneumojax train', f'--config {sweep.config}', f'--workdir {workdir}', *fixed, *config_args, *grid])


def run_one(config, workdir: Path, command: str) -> str:
  """Trains one run unless finished; returns 'skipped', 'resumed' or 'trained'. Raises what training raises."""
  from pneumojax import train  # Deferred: TensorFlow takes seconds to import.
  results = workdir / files.RESULTS
  if results.exists():
    # Where the data lives does not change a run: it may differ between a finished run and a rerun of the sweep.
    differing = [field for field in config_lib.differences(json.loads(results.read_text())['config'], config)
                 if field not in config_lib.DATA_LOCATION_FIELDS]
    if differing:
      raise ValueError(f'{workdir} holds a finished run of another config (differing: {", ".join(differing)}). '
                       'Left untouched: use another --out, or remove that workdir.')
    return 'skipped'
  checkpoints = workdir / 'checkpoints'
  resumed = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())
  if resumed and config.train.cached_features:  # cannot resume (train/linear_probe.py): start it again
    aside = workdir / f'checkpoints.incomplete-{time.strftime("%Y%m%d-%H%M%S")}'
    checkpoints.rename(aside)
    log.warning('%s: an unfinished cached-features run cannot resume; its checkpoints were moved to %s.',
                workdir, aside)
    resumed = False
  with provenance.recorded_command(command):
    train.train_and_evaluate(config, str(workdir))
  return 'resumed' if resumed else 'trained'


def check_runs(sweep: Sweep, config_args, seeds=None) -> list[Run]:
  """The runs of `sweep` (`expand`), after checking that `config_args` set none of the fields the grid sets."""
  runs = expand(sweep, seeds)
  given = {arg.split('=', 1)[0].removeprefix('--config.') for arg in config_args}
  clash = given & {k for run in runs for k in run.overrides}
  if clash:  # Before any run: every run would fail the same way.
    raise ValueError(f'{", ".join(sorted(clash))} is set by the sweep grid (or the seed); leave it off the command '
                     'line (use --seeds for seeds).')
  return runs


def run_recorded(sweep: Sweep, run: Run, out, config_args=()) -> str:
  """Trains one run of `sweep` in `out/<run name>` (run_one) and returns its status. A failure is recorded in the
  workdir's sweep_error.txt and returned as 'failed: ...'; a signal's preemption.Interrupted is raised."""
  workdir = Path(out) / run.name
  try:
    config = run_config(sweep, run, list(config_args))
    status = run_one(config, workdir, run_command(sweep, run, workdir, list(config_args)))
    (workdir / ERROR).unlink(missing_ok=True)
    return status
  except preemption.Interrupted:
    raise  # A signal ends the sweep; its checkpoint is saved and a rerun resumes.
  except Exception as e:  # noqa: BLE001 -- one failed run must not end the sweep: recorded, reported at the end.
    log.error('Sweep %s: run %s failed: %s: %s', sweep.name, run.name, type(e).__name__, e)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / ERROR).write_text(traceback.format_exc())
    return f'failed: {type(e).__name__}: {e}'
  finally:
    jax.clear_caches()  # Compiled programs of one run are of no use to the next; free their memory.


def run_sweep(sweep: Sweep, out: str | Path, config_args: list[str] = (), seeds=None) -> dict[str, str]:
  """Runs every run of `sweep` under `out`, one after the other in this process, then writes the tables; returns
  {run name: status or 'failed: ...'}."""
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  runs = check_runs(sweep, config_args, seeds)
  statuses = {}
  for i, run in enumerate(runs, 1):
    log.info('Sweep %s: run %d/%d, %s.', sweep.name, i, len(runs), out / run.name)
    statuses[run.name] = run_recorded(sweep, run, out, config_args)
  tables.write_tables(out)
  return statuses
