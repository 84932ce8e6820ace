"""`pneumojax reproduce`: experiments/REPRODUCTION.md, our recorded results beside the papers' numbers.

The papers' numbers are data, in experiments/papers.json: each setup with the directory its runs are recorded in
(`experiments/results/<setup name>/<run>/results.json`, one run per seed), our config that makes them and how
it deviates from the paper. Every number of ours in the page is read from those results files (and, for a single
seed's 95% interval, from the run's `eval/test/metrics.json` written by `pneumojax eval`); a setup without
results is listed as not run here, with its estimated cost where one has been entered (`estimate`); runs that did
not read the test split (`eval.evaluate_test=False`) are left out, and counted. The sweeps' ablation tables
(results.md under each sweep's folder) are linked, not copied.
"""

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from pneumojax import config as config_lib
from pneumojax.studies import tables

PAPERS = 'experiments/papers.json'
METRICS = ('accuracy', 'balanced_accuracy', 'sensitivity', 'specificity', 'auc')
_HEADERS = [m.replace('_', ' ') for m in METRICS]
_RULE_FIELDS = ('eval.threshold_rule', 'eval.target_sensitivity')
# How a run was spread over devices and processes, not what it computes (BatchNorm statistics and dropout masks are
# those of the global batch): not a change from the paper setup.
_EXECUTION_PREFIX = 'distributed.'
_VAL = ('checkpoint (epoch) chosen by ROC-AUC on val_pd (10% of the train patients, patient-disjoint); test '
        'evaluated once at threshold 0.5')


@dataclasses.dataclass(frozen=True)
class Setup:
  name: str            # experiments/results/<name>/
  source: str
  paper_setup: str
  paper: dict          # metric -> the paper's number, in %
  config: str          # --config FILE:ARG
  deviations: str
  estimate: str = ''   # estimated cost of one run, from the benchmarks (experiments/bench/README.md)
  train_flags: str = ''  # added to the train command (where the data is)

  def command(self) -> str:
    return (f'pneumojax train --config {self.config} --workdir experiments/results/{self.name}/seed0 '
            f'--config.seed=0 {self.train_flags}')


def load_setups(path=PAPERS) -> tuple[Setup, ...]:
  """The setups of a papers file (experiments/papers.json)."""
  papers = json.loads(Path(path).read_text())
  return tuple(Setup(**{**setup, 'paper': _with_balanced_accuracy(setup['paper'])}, train_flags=papers['train_flags'])
               for setup in papers['setups'])


def _with_balanced_accuracy(paper: dict) -> dict:
  """The paper's numbers, with balanced accuracy as the mean of its sensitivity and specificity where it reports
  both (no paper here reports it)."""
  if 'balanced_accuracy' in paper or not {'sensitivity', 'specificity'} <= set(paper):
    return paper
  return {**paper, 'balanced_accuracy': round((paper['sensitivity'] + paper['specificity']) / 2, 2)}


def _stats(values: list[float]) -> dict:
  values = np.asarray(values, float) * 100
  return {'mean': float(np.mean(values)), 'n': len(values),
          'sd': float(np.std(values, ddof=tables.DDOF)) if len(values) > 1 else math.nan,
          'min': float(np.min(values)), 'max': float(np.max(values))}


def _interval(run: dict, metric: str, point: str = 'fixed threshold') -> list[float] | None:
  """The 95% patient-bootstrap interval of a run's test metric at an operating point of `pneumojax eval` ('fixed
  threshold' 0.5 or 'validation-chosen threshold'), if it ran on the checkpoint of results.json."""
  path = run['workdir'] / 'eval' / 'test' / 'metrics.json'
  if not path.exists():
    return None
  evaluated = json.loads(path.read_text())
  if evaluated.get('checkpoint_step') != run['results'].get('checkpoint_step'):
    return None  # Evaluated another checkpoint than results.json's.
  interval = evaluated['operating_points'].get(point, {}).get('ci95', {}).get(metric)
  return [100 * v for v in interval] if interval else None


def _ours(runs: list[dict], section: str, metric: str) -> str:
  values = tables.metric_values(runs, section, metric)
  if not values:
    return '–'
  s = _stats(values)
  if s['n'] == 1:
    interval = _interval(runs[0], metric) if section == 'test' else None
    return f'{s["mean"]:.1f} [{interval[0]:.1f}, {interval[1]:.1f}]' if interval else f'{s["mean"]:.1f}'
  return f'{s["mean"]:.1f} ± {s["sd"]:.1f} ({s["min"]:.1f}–{s["max"]:.1f})'


def _difference(runs: list[dict], section: str, metric: str, paper: float | None) -> str:
  values = tables.metric_values(runs, section, metric)
  if paper is None or not values:
    return '–'
  return f'{_stats(values)["mean"] - paper:+.1f}'


def _hardware(run: dict) -> str:
  info = run['results'].get('run')
  if not info:
    return 'not recorded'
  hw = info['hardware']
  return f'{hw["device_count"]}x {hw["device_kind"]} ({hw["backend"]}), {hw["cpu_count"]} CPUs'


def _wall(runs: list[dict]) -> str:
  """The mean wall time of the runs made in one go; a resumed run recorded only its last part, so it is named
  apart instead of pulling the mean down."""
  whole, parts = [], []
  for r in runs:
    run = r['results'].get('run')
    if run and run.get('resumed_from_step'):
      parts.append(f'seed {r["config"].get("seed")} resumed at step {run["resumed_from_step"]}: its last part '
                   f'{run["wall_time_s"] / 60:.1f} min')
    elif run:
      whole.append(run['wall_time_s'])
  return '; '.join(([f'{np.mean(whole) / 60:.1f} min'] if whole else []) + parts) or 'not recorded'


def _by_changes(setup: Setup, runs: list[dict]) -> list[tuple[list[str], list[dict]]]:
  """[(changes, runs)]: the runs grouped by how they changed the setup's config file (by command-line overrides),
  each change as 'field=run value (config: file value)', so that a shortened schedule is stated, not hidden, and
  its seeds are never averaged with the full one's; the fewest changes (the config as it is) first. The seed and
  data locations are left out, and so is the threshold rule: the line of the val-chosen threshold names each run's
  recorded rule."""
  try:
    default = config_lib.flatten(json.loads(config_lib.load_config(['--config', setup.config]).to_json()))
  except SystemExit:
    return [(['(the config file could not be loaded here to compare)'], runs)]
  groups = {}
  for run in runs:
    changes = tuple(sorted(
        f'{key}={value} (config: {default[key]})' for key, value in run['config'].items()
        if key not in (*tables.IGNORED, *_RULE_FIELDS) and not key.startswith(_EXECUTION_PREFIX) and key in default
        and default[key] != value))
    groups.setdefault(changes, []).append(run)
  return sorted(((list(changes), members) for changes, members in groups.items()), key=lambda group: len(group[0]))


def _setup_rows(setup: Setup, runs: list[dict], changes: list[str]) -> list[str]:
  rows = []
  lines = [('test', f'ours, {_VAL}' + (f'; changed from the config: {", ".join(changes)}' if changes else ''), runs)]
  # One line per threshold rule (recorded with the threshold): runs chosen by different rules are not averaged.
  by_rule = {}
  for r in runs:
    if 'test_at_val_threshold' in r['results']:
      by_rule.setdefault(r['results']['test_at_val_threshold'].get('rule'), []).append(r)
  for rule, members in by_rule.items():
    lines.append(('test_at_val_threshold', f'ours, the same checkpoint at the threshold chosen on val_pd ({rule})',
                  members))
  if any('test_selected' in r['results'] for r in runs):
    lines.append(('test_selected', 'ours, checkpoint chosen on the TEST set (Kermany et al.\'s protocol; optimistic)',
                  runs))
  for section, protocol, members in lines:
    cells = []
    for metric in METRICS:
      paper = setup.paper.get(metric)
      cells.append(f'{_ours(members, section, metric)} / {"–" if paper is None else paper} / '
                   f'{_difference(members, section, metric, paper)}')
    rows.append(f'| {setup.name} | {protocol} | {len(tables.metric_values(members, section, "auc"))} | '
                + ' | '.join(cells) + ' |')
  return rows


def _paper_numbers(setup: Setup) -> str:
  return ' / '.join('–' if setup.paper.get(m) is None else f'{setup.paper[m]}' for m in METRICS)


def _headline(results_dir: Path, setups_file) -> list[str]:
  """The page's first section: the best recipe's runs (papers.json's `headline`) beside the honest published
  numbers, at the checkpoint and threshold chosen on validation data."""
  headline = json.loads(Path(setups_file).read_text()).get('headline')
  if not headline:
    return []
  folder, section = results_dir / headline['name'], 'test_at_val_threshold'
  runs = [r for r in (tables.load_runs(folder) if folder.is_dir() else []) if section in r['results']]
  rows = []
  if runs:
    first, rule = runs[0], runs[0]['results'][section].get('rule')
    rows.append(f'| pneumojax, `{headline["config"]}` (threshold: {rule}) | {len(runs)} | '
                + ' | '.join(_ours(runs, section, metric) for metric in METRICS) + f' | {_wall(runs)} |')
    intervals = [_interval(first, metric, 'validation-chosen threshold') for metric in METRICS]
    if any(intervals):
      values = [100 * tables.recorded_metric(first['results'][section], m) for m in METRICS]
      rows.append(f'| seed {first["config"].get("seed")}: its value [95% patient-bootstrap interval] | 1 | '
                  + ' | '.join('–' if i is None else f'{v:.1f} [{i[0]:.1f}, {i[1]:.1f}]'
                               for v, i in zip(values, intervals)) + ' | |')
  else:
    rows.append(f'| `{headline["config"]}`: not run yet (`pneumojax train --config {headline["config"]} --workdir '
                f'{folder}/seed0 --config.seed=0`) |' + ' |' * (len(METRICS) + 2))
  rows += [f'| {paper["method"]} | | {paper["accuracy"]} | ' + ' | '.join(['–'] * (len(METRICS) - 2))
           + f' | {paper["auc"]} | |' for paper in headline['published']]
  return ['## Headline: the best recipe beside the honest published numbers', '',
          f'{headline["about"]}. Goal: {headline["goal"]}. Ours: the checkpoint (epoch) with the best val_pd ROC-AUC '
          'and the threshold chosen on val_pd, then the 624 test images evaluated once; mean ± sample sd '
          f'(ddof={tables.DDOF}) over seeds and the range, in %. Published: as reported (mean ± sd where given), '
          'the checkpoint not chosen on the test set unless said.', '',
          '| method | n | ' + ' | '.join(_HEADERS) + ' | train time per seed |',
          '|---|---|' + '---|' * len(METRICS) + '---|', *rows, '']


def render(results_dir, setups_file=PAPERS, out_dir='.') -> str:
  """The page's Markdown; links are relative to `out_dir`, the folder the page is written to."""
  results_dir, setups = Path(results_dir), load_setups(setups_file)
  lines = ['# Reproduction of published results', '',
           (f'Generated by `pneumojax reproduce` from the results.json files under `{results_dir}` and the papers\' '
            f'numbers kept in `{setups_file}`. Every number of ours comes from a results file. Cells: '
            'ours / paper / ours − paper, in % on the 624 test images (balanced accuracy: the mean of sensitivity and '
            'specificity, for the papers computed from their reported ones). Ours: one seed shows its value and, where '
            '`pneumojax eval` was run on it, the 95% patient-bootstrap interval in brackets; several seeds show '
            f'mean ± sample sd (ddof={tables.DDOF}) and the range. Headline lines choose the checkpoint on '
            'validation data and use the threshold 0.5; the line below each uses the same checkpoint at a '
            'threshold chosen on validation data by the rule it names (runs of different rules get a line each); a '
            '"TEST set" line is the optimistic protocol of Kermany et al., shown only for comparison.'), '',
           *_headline(results_dir, setups_file), '## Paper setups', '',
           '| setup | protocol | n | ' + ' | '.join(_HEADERS) + ' |', '|---|---|---|' + '---|' * len(METRICS)]
  details, missing = [], []
  for setup in setups:
    found = tables.load_runs(results_dir / setup.name) if (results_dir / setup.name).is_dir() else []
    runs = [r for r in found if 'test' in r['results']]  # not runs that never read the test split (a search)
    if not runs:
      missing.append(setup)
      continue
    details += [f'### {setup.name}', '', f'- Paper: {setup.source}: {setup.paper_setup}.',
                f'- Deviations: {setup.deviations}.']
    for changes, members in _by_changes(setup, runs):
      lines += _setup_rows(setup, members, changes)
      which = f'Runs with {", ".join(changes)}' if changes else 'Runs of the config as it is'
      details += [
          (f'- {which}: seeds {", ".join(str(r["config"].get("seed")) for r in members)}; checkpoint steps '
           f'{", ".join(str(r["results"].get("checkpoint_step")) for r in members)}; hardware '
           f'{"; ".join(sorted({_hardware(r) for r in members}))}; wall time per run {_wall(members)}.')]
    commands = sorted({r['results'].get('run', {}).get('command') or 'not recorded' for r in runs})
    details += ['- Commands:', *[f'  - `{c}`' for c in commands],
                *([f'- Left out: {len(found) - len(runs)} run(s) with validation metrics only '
                   '(eval.evaluate_test=False).'] if len(found) > len(runs) else []), '']
  if not details:
    lines.append('| no results recorded yet |' + ' |' * (2 + len(METRICS)))
  lines += ['', '## Setups', ''] + (details or ['No results recorded yet.', ''])
  if missing:
    lines += ['## Not run here', '',
              '| setup | paper | paper ' + ' / '.join(_HEADERS) + ' | deviations | command | estimated cost |',
              '|---|---|---|---|---|---|']
    lines += [f'| {s.name} | {s.source}: {s.paper_setup} | {_paper_numbers(s)} | {s.deviations} | `{s.command()}` | '
              f'{s.estimate or "not estimated"} |' for s in missing]
    lines.append('')
  names = {s.name for s in setups}
  sweeps = sorted(p for p in results_dir.glob('*/results.md') if p.parent.name not in names)
  if sweeps:
    lines += ['## Ablations (sweep tables)', '',
              *[f'- [{p.parent.name}]({os.path.relpath(p, out_dir)})' for p in sweeps], '']
  return '\n'.join(lines)


def write(results_dir='experiments/results', out='experiments/REPRODUCTION.md', setups_file=PAPERS) -> str:
  Path(out).write_text(render(results_dir, setups_file, Path(out).parent))
  return out
