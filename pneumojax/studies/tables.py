"""Every results.json under a directory -> one CSV and one Markdown table, mean and sd over seeds.

Runs are grouped by their config with the seed (and where the data lives) left out: the config fields that differ
between the collected runs label the groups. Per group: n runs, their seeds, mean wall time, and the mean and
sample standard deviation (ddof=1; empty for a single run) of each test metric, for the headline `test` entry
(checkpoint chosen on validation, threshold 0.5) and, where present, `test_at_val_threshold` (threshold chosen on
validation) and `test_selected` (checkpoint chosen on the test set: optimistic); then the validation metrics, `val`
(threshold 0.5) and, for runs that did not read the test split (`eval.evaluate_test=False`, a recipe search),
`val_at_val_threshold`: optimistic, as that split chose the checkpoint and the threshold, but what a search compares
without looking at the test. A metric that is NaN in a run (undefined) makes its group's mean NaN. Balanced
accuracy, which results recorded before it lack, is derived from what they hold (`recorded_metric`).

  pneumojax table DIR      # writes DIR/results.csv and DIR/results.md
"""

import csv
import json
import math
from pathlib import Path

import numpy as np

from pneumojax import config as config_lib
from pneumojax.train import files

METRICS = ('accuracy', 'balanced_accuracy', 'sensitivity', 'specificity', 'precision', 'f1', 'auc')
SECTIONS = ('test', 'test_at_val_threshold', 'test_selected', 'val', 'val_at_val_threshold')
DDOF = 1
IGNORED = ('seed', *config_lib.DATA_LOCATION_FIELDS)
_SECTION_TITLES = {
    'test': 'test, checkpoint chosen on validation, threshold 0.5 (headline)',
    'test_at_val_threshold': 'test, checkpoint and threshold chosen on validation',
    'test_selected': 'test, checkpoint chosen on the TEST set (Kermany et al.\'s protocol; optimistic)',
    'val': 'validation, the split that chose the checkpoint, threshold 0.5 (optimistic)',
    'val_at_val_threshold': 'validation, the split that chose the checkpoint and the threshold (optimistic; the test '
                            'split not read)',
}


def find_results(root) -> list[Path]:
  return sorted(Path(root).rglob(files.RESULTS))


def load_runs(root) -> list[dict]:
  """[{'path', 'workdir', 'config' (flat, without retired fields), 'results'}] of every results.json under `root`,
  by path."""
  runs = []
  for path in find_results(root):
    results = json.loads(path.read_text())
    config = config_lib.flatten(config_lib.without_retired(results.get('config', {})))
    runs.append({'path': path, 'workdir': path.parent, 'config': config, 'results': results})
  return runs


def _key(value) -> str:
  return json.dumps(value, sort_keys=True, default=str)


def varying_fields(runs: list[dict]) -> list[str]:
  """The config fields whose values differ between `runs`, the seed and data locations left out."""
  fields = sorted({k for run in runs for k in run['config']} - set(IGNORED))
  return [k for k in fields if len({_key(run['config'].get(k)) for run in runs}) > 1]


def group_runs(runs: list[dict]) -> list[tuple[dict, list[dict]]]:
  """[(label {field: value}, runs)], the groups in the order of their first run."""
  fields = varying_fields(runs)
  groups = {}
  for run in runs:
    label = {k: run['config'].get(k) for k in fields}
    groups.setdefault(_key(label), (label, []))[1].append(run)
  return list(groups.values())


def _mean_sd(values: list[float]) -> tuple[float, float]:
  values = np.asarray(values, float)
  sd = float(np.std(values, ddof=DDOF)) if len(values) > DDOF else math.nan
  return float(np.mean(values)), sd


def recorded_metric(entry: dict, name: str) -> float:
  """Metric `name` of a recorded metrics dict (a results.json entry such as `test`); NaN if it is not there.

  Entries recorded before balanced accuracy was computed lack it: it is derived from the entry, as the mean of
  sensitivity and specificity for two classes, else as the mean recall of the rows of the confusion matrix (NaN
  where a class has no example, as when it is computed).
  """
  if name in entry or name != 'balanced_accuracy':
    return float(entry.get(name, math.nan))
  if 'sensitivity' in entry and 'specificity' in entry:
    return (float(entry['sensitivity']) + float(entry['specificity'])) / 2
  if 'confusion_matrix' in entry:
    matrix = np.asarray(entry['confusion_matrix'], float)
    per_class = matrix.sum(axis=1)
    return float(np.mean(np.diag(matrix) / per_class)) if per_class.all() else math.nan
  return math.nan


def metric_values(runs: list[dict], section: str, metric: str) -> list[float]:
  """The metric of each run that has the section (NaN where a run lacks the metric, e.g. three classes; balanced
  accuracy derived where older results lack it)."""
  return [recorded_metric(r['results'][section], metric) for r in runs if section in r['results']]


def summarize(runs: list[dict]) -> list[dict]:
  """One row per group: 'group', 'n', 'seeds', 'wall_time_s', 'workdirs' and '<section>.<metric>.mean/sd/n'."""
  rows = []
  for label, members in group_runs(runs):
    walls = [r['results'].get('run', {}).get('wall_time_s') for r in members]
    walls = [w for w in walls if w is not None]
    row = {'group': label, 'n': len(members), 'seeds': sorted(r['config'].get('seed') for r in members),
           'wall_time_s': float(np.mean(walls)) if walls else math.nan,
           'workdirs': [str(r['workdir']) for r in members]}
    for section in SECTIONS:
      for metric in METRICS:
        values = metric_values(members, section, metric)
        if values:
          row[f'{section}.{metric}.mean'], row[f'{section}.{metric}.sd'] = _mean_sd(values)
          row[f'{section}.{metric}.n'] = len(values)
    rows.append(row)
  return rows


def _label(group: dict) -> str:
  return ', '.join(f'{k}={v}' for k, v in group.items()) or 'all runs'


def write_csv(rows: list[dict], path) -> None:
  fields = sorted({k for row in rows for k in row['group']})
  metric_columns = [f'{s}.{m}.{x}' for s in SECTIONS for m in METRICS for x in ('mean', 'sd', 'n')
                    if any(f'{s}.{m}.{x}' in row for row in rows)]
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow([*fields, 'n', 'seeds', 'wall_time_s_mean', *metric_columns, 'workdirs'])
    for row in rows:
      writer.writerow([*(row['group'].get(k, '') for k in fields), row['n'], ' '.join(map(str, row['seeds'])),
                       row['wall_time_s'], *(row.get(c, '') for c in metric_columns), ';'.join(row['workdirs'])])


def _cell(row: dict, section: str, metric: str) -> str:
  mean = row.get(f'{section}.{metric}.mean')
  if mean is None:
    return '–'
  sd = row[f'{section}.{metric}.sd']
  return f'{mean:.3f}' if math.isnan(sd) else f'{mean:.3f} ± {sd:.3f}'


def markdown(rows: list[dict], title: str = 'Results') -> str:
  lines = [f'# {title}', '',
           (f'Mean ± sample standard deviation (ddof={DDOF}) over the runs of each group (seeds); a single run shows '
            'its value alone. Groups differ in the config fields named; wall time is the mean seconds per run.'), '']
  for section in SECTIONS:
    if not any(f'{section}.auc.mean' in row for row in rows):
      continue
    lines += [f'## {_SECTION_TITLES[section]}', '',
              '| group | n | seeds | ' + ' | '.join(METRICS) + ' | wall time (s) |',
              '|---|---|---|' + '---|' * len(METRICS) + '---|']
    for row in rows:
      if f'{section}.auc.mean' not in row:
        continue
      cells = [_cell(row, section, m) for m in METRICS]
      wall = '–' if math.isnan(row['wall_time_s']) else f'{row["wall_time_s"]:.0f}'
      lines.append(f'| {_label(row["group"])} | {row[f"{section}.auc.n"]} | {" ".join(map(str, row["seeds"]))} | '
                   + ' | '.join(cells) + f' | {wall} |')
    lines.append('')
  return '\n'.join(lines)


def write_tables(root, title: str | None = None) -> tuple[Path, Path]:
  """Writes root/results.csv and root/results.md from every results.json under `root`."""
  root = Path(root)
  rows = summarize(load_runs(root))
  csv_path, md_path = root / 'results.csv', root / 'results.md'
  write_csv(rows, csv_path)
  md_path.write_text(markdown(rows, title or f'Results under {root}'))
  return csv_path, md_path
