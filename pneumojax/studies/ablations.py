"""`pneumojax ablations`: experiments/ABLATIONS.md, what each ablation's choice is worth, from the recorded runs.

For every sweep file in experiments/ablations/ (the first line of its docstring is the question), the page lists each
setting of its grid with the mean ± sd over seeds of the test metrics with the checkpoint and the threshold chosen
on validation (`test_at_val_threshold`: ROC-AUC, accuracy, balanced accuracy, sensitivity, specificity) and the wall
time, then the paired difference of each setting from the first one over the seeds both have (the same seeds give
the same initialisation and data order): its mean and 95% t-interval. An interval that holds 0 is reported as no
difference beyond seed noise. The checkpoint-selection sweep instead compares, within each run, the checkpoint chosen
on the test set (`test_selected`, Kermany et al.'s protocol) with the one chosen on val_pd, and so do the recorded
paper setups that report it. Every number is read from the runs' results.json files.
"""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import scipy.stats

from pneumojax import config as config_lib
from pneumojax.studies import sweep as sweep_lib
from pneumojax.studies import tables
from pneumojax.train import files

SECTION = 'test_at_val_threshold'
METRICS = ('auc', 'accuracy', 'balanced_accuracy', 'sensitivity', 'specificity')
NAMES = {'auc': 'ROC-AUC', 'accuracy': 'accuracy', 'balanced_accuracy': 'balanced accuracy',
         'sensitivity': 'sensitivity', 'specificity': 'specificity'}
COMPARED = ('auc', 'balanced_accuracy')  # the paired differences and the finding
CONFIDENCE = 0.95


@dataclasses.dataclass
class Setting:
  label: str
  runs: dict = dataclasses.field(default_factory=dict)  # seed -> results.json's content, of the finished runs
  swept: dict = dataclasses.field(default_factory=dict)  # seed -> its sweep_lib.Run
  missing: list = dataclasses.field(default_factory=list)  # seeds not run (or not finished) yet


def _question(path: Path) -> str:
  doc = (Path(path).read_text().split('"""') + ['', ''])[1].strip()
  return doc.splitlines()[0].removeprefix('Ablation: ') if doc else Path(path).stem


def settings(definition: sweep_lib.Sweep, results_dir: Path) -> list[Setting]:
  """The grid's settings in the sweep's order, with the finished runs under results_dir/<sweep name>/."""
  by_label = {}
  for run in sweep_lib.expand(definition):
    label = run.name.rsplit('__seed=', 1)[0].replace('seed=', '') or 'as configured'
    setting = by_label.setdefault(label, Setting(label))
    path = results_dir / definition.name / run.name / files.RESULTS
    if path.exists():
      setting.runs[run.seed], setting.swept[run.seed] = json.loads(path.read_text()), run
    else:
      setting.missing.append(run.seed)
  return list(by_label.values())


def _value(results: dict, section: str, metric: str) -> float:
  return tables.metric_values([{'results': results}], section, metric)[0] if section in results else math.nan


def mean_sd(values) -> str:
  values = [v for v in values if not math.isnan(v)]
  if not values:
    return '–'
  if len(values) == 1:
    return f'{values[0]:.3f}'
  return f'{np.mean(values):.3f} ± {np.std(values, ddof=tables.DDOF):.3f}'


def paired(differences) -> tuple[float, float, float]:
  """(mean, low, high): the mean of per-seed differences and its 95% t-interval (NaN bounds below two seeds)."""
  differences = np.asarray(differences, float)
  mean = float(np.mean(differences))
  if len(differences) < 2:
    return mean, math.nan, math.nan
  half = scipy.stats.t.ppf((1 + CONFIDENCE) / 2, len(differences) - 1) * np.std(differences, ddof=1) / math.sqrt(
      len(differences))
  return mean, mean - half, mean + half


def _interval(mean: float, low: float, high: float) -> str:
  if math.isnan(mean):
    return '–'
  if math.isnan(low):
    return f'{mean:+.3f} (one seed: no interval)'
  return f'{mean:+.3f} [{low:+.3f}, {high:+.3f}]'


def _verdict(name: str, low: float, high: float) -> str:
  if math.isnan(low):
    return f'{name}: one seed, no interval'
  if low <= 0 <= high:
    return f'{name}: no difference beyond seed noise'
  return f'{name} {"higher" if low > 0 else "lower"}'


def _changes(definition: sweep_lib.Sweep, setting: Setting) -> set[str]:
  """'field=run value (sweep: value)' where a setting's finished runs differ from what the sweep file sets (a
  shortened schedule, say), the seed and data locations left out."""
  changes = set()
  for seed, recorded in setting.runs.items():
    expected = config_lib.flatten(json.loads(sweep_lib.run_config(definition, setting.swept[seed], []).to_json()))
    for key, value in config_lib.flatten(recorded.get('config', {})).items():
      if key not in tables.IGNORED and key in expected and expected[key] != value:
        changes.add(f'{key}={value} (sweep: {expected[key]})')
  return changes


def _grid_section(definition, path, results_dir) -> list[str]:
  found = settings(definition, results_dir)
  lines = [f'## {definition.name}: {_question(path)}', '',
           f'Sweep file `{path}`; base config `{definition.config}`; seeds {list(definition.seeds)}.']
  changed = sorted(set().union(*(_changes(definition, s) for s in found)))
  if changed:
    lines.append(f'Changed from the sweep file in the recorded runs: {", ".join(changed)}.')
  lines += ['', '| setting | seeds | ' + ' | '.join(NAMES[m] for m in METRICS) + ' | wall time (min) |',
            '|---|---|' + '---|' * len(METRICS) + '---|']
  for s in found:
    runs = [s.runs[seed] for seed in sorted(s.runs)]
    walls = [r['run']['wall_time_s'] / 60 for r in runs if 'run' in r]
    cells = [mean_sd([_value(r, SECTION, m) for r in runs]) for m in METRICS]
    seeds = ' '.join(map(str, sorted(s.runs))) or 'none run'
    lines.append(f'| {s.label} | {seeds} | ' + ' | '.join(cells) + f' | {mean_sd(walls)} |')
  base, verdicts, comparisons = found[0], [], []
  for s in found[1:]:
    seeds = sorted(set(base.runs) & set(s.runs))
    if not seeds:
      continue
    parts = []
    for metric in COMPARED:
      mean, low, high = paired([_value(s.runs[i], SECTION, metric) - _value(base.runs[i], SECTION, metric)
                                for i in seeds])
      parts.append(f'{NAMES[metric]} {_interval(mean, low, high)}')
      verdicts.append(f'{s.label} vs {base.label}, {_verdict(NAMES[metric], low, high)}')
    comparisons.append(f'| {s.label} − {base.label} | {" ".join(map(str, seeds))} | ' + ' | '.join(parts) + ' |')
  if comparisons:
    lines += ['', f'Paired differences from **{base.label}** over the same seeds (mean [{CONFIDENCE:.0%} t-interval]):',
              '', '| difference | seeds | ' + ' | '.join(NAMES[m] for m in COMPARED) + ' |', '|---|---|---|---|',
              *comparisons, '', f'**Finding**: {"; ".join(verdicts)}.']
  missing = [f'{s.label} (seeds {", ".join(map(str, s.missing))})' for s in found if s.missing]
  if missing:
    lines += ['', f'Not run yet: {"; ".join(missing)}. `pneumojax sweep {path} $D` runs (or resumes) them.']
  return lines + ['']


def _selection_rows(name: str, runs: list[dict]) -> list[str]:
  """Test-selected minus validation-selected, per run, paired over its runs."""
  runs = [r for r in runs if 'test_selected' in r and 'test' in r]
  if not runs:
    return []
  cells = []
  for metric in ('auc', 'accuracy', 'balanced_accuracy'):
    mean, low, high = paired([_value(r, 'test_selected', metric) - _value(r, 'test', metric) for r in runs])
    cells.append(_interval(mean, low, high))
  # Checkpoint and threshold both chosen on test, against both chosen on val_pd (runs that recorded both).
  both = [r for r in runs if 'at_test_threshold' in r['test_selected'] and 'test_at_val_threshold' in r]
  cells.append(_interval(*paired([tables.recorded_metric(r['test_selected']['at_test_threshold'], 'accuracy')
                                  - _value(r, 'test_at_val_threshold', 'accuracy') for r in both])) if both else '–')
  chosen = mean_sd([_value(r, 'test', 'auc') for r in runs])
  selected = mean_sd([_value(r, 'test_selected', 'auc') for r in runs])
  return [f'| {name} | {len(runs)} | {chosen} | {selected} | ' + ' | '.join(cells) + ' |']


def _selection_section(definition, path, results_dir) -> list[str]:
  own = [r for s in settings(definition, results_dir) for r in s.runs.values()]
  rows = _selection_rows(f'{definition.name} ({definition.config})', own)
  for other in sorted(p for p in results_dir.iterdir() if p.is_dir() and p.name != definition.name):
    runs = [json.loads(p.read_text()) for p in sorted(other.glob(f'*/{files.RESULTS}'))]
    rows += _selection_rows(other.name, runs)
  return [f'## {definition.name}: {_question(path)}', '',
          'Within each run: the test metrics of the checkpoint with the best **test** AUC (`test_selected`, Kermany et '
          'al.\'s protocol) minus those of the checkpoint with the best **val_pd** AUC (`test`), both at the threshold '
          '0.5, paired over the runs of a setup (mean [95% t-interval]); the recorded paper setups that report both '
          'are included. The last column also chooses the threshold: accuracy at the checkpoint and the threshold '
          '(Youden\'s J) chosen on the test outputs minus accuracy at the checkpoint and threshold chosen on val_pd '
          '(runs recorded before test evaluations kept that threshold show –).', '',
          '| setup | runs | test AUC, chosen on val_pd | test AUC, chosen on test | inflation of AUC | of accuracy | '
          'of balanced accuracy | of accuracy, threshold too |', '|---|---|---|---|---|---|---|---|', *rows, '']


def render(ablations_dir='experiments/ablations', results_dir='experiments/results') -> str:
  ablations_dir, results_dir = Path(ablations_dir), Path(results_dir)
  lines = ['# Ablations', '',
           f'Generated by `pneumojax ablations` from the sweep files in `{ablations_dir}` and the runs recorded under '
           f'`{results_dir}/<sweep>/`. Protocol of every run: the checkpoint with the best val_pd ROC-AUC, the '
           'threshold chosen on val_pd by the task\'s rule, the test split evaluated once. Cells: mean ± sample sd '
           f'(ddof={tables.DDOF}) over seeds of the test metrics with that checkpoint and threshold; `$D` below stands '
           'for `--config.data.manual_dir=` followed by the path of the Kaggle archive\'s `chest_xray` folder.', '']
  for path in sorted(ablations_dir.glob('*.py')):
    definition = sweep_lib.load_sweep(str(path))
    if definition.grid:
      lines += _grid_section(definition, path, results_dir)
    else:
      lines += _selection_section(definition, path, results_dir)
  return '\n'.join(lines)


def write(ablations_dir='experiments/ablations', results_dir='experiments/results',
          out='experiments/ABLATIONS.md') -> str:
  Path(out).write_text(render(ablations_dir, results_dir))
  return out
