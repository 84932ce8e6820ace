"""`pneumojax reproduce`: experiments/REPRODUCTION.md, our recorded results beside the papers' numbers.

The papers' numbers live in `SETUPS` below, each setup with the directory its runs are recorded in
(`experiments/results/<setup name>/<run>/results.json`, one run per seed) and the command that makes them. Every
number of ours in the page is read from those results files (and, for a single seed's 95% interval, from the
run's `eval/test/metrics.json` written by `pneumojax eval`); a setup without results is listed as not run here,
with its estimated cost where one has been entered (`estimate`). The sweeps' ablation tables (results.md under
each sweep's folder) are linked, not copied.
"""

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from pneumojax import results_table

METRICS = ('accuracy', 'sensitivity', 'specificity', 'auc')
_DATA = '--config.data.manual_dir=../shared/data/chest_xray'
_VAL = ('checkpoint (epoch) chosen by ROC-AUC on val_pd (10% of the train patients, patient-disjoint); test '
        'evaluated once at threshold 0.5')
_IMAGES = 'our images: a third-party 224 px squashed, re-encoded copy of the data'


@dataclasses.dataclass(frozen=True)
class Setup:
  name: str            # experiments/results/<name>/
  source: str
  paper_setup: str
  paper: dict          # metric -> the paper's number, in %
  config: str          # --config FILE:ARG
  deviations: str
  estimate: str = ''   # estimated cost of one run, from the benchmarks (experiments/bench/README.md)

  def command(self) -> str:
    return (f'pneumojax train --config {self.config} --workdir experiments/results/{self.name}/seed0 '
            f'--config.seed=0 {_DATA}')


_KERMANY = 'Kermany et al., Cell 2018'
_KERMANY_SETUP = 'InceptionV3 ImageNet, frozen conv layers, retrained softmax; {task}'
_KERMANY_PAPER = {'binary': {'accuracy': 92.8, 'sensitivity': 93.2, 'specificity': 90.1, 'auc': 96.8},
                  'bacteria_vs_virus': {'accuracy': 90.7, 'sensitivity': 88.6, 'specificity': 90.9, 'auc': 94.0}}
_KERMANY_TASKS = {'binary': 'normal vs pneumonia', 'bacteria_vs_virus': 'bacterial vs viral'}
_BACKBONE_NOTE = {
    'inception_v3': 'the paper backbone; its ImageNet weights were not available offline here (user-converted); '
                    '299 px upsampled from 224',
    'mobilenet_v2': 'backbone MobileNetV2 alpha 0.35 (real ImageNet weights), not InceptionV3',
    'efficientnet_lite0': 'backbone EfficientNet-Lite0 (real ImageNet weights), not InceptionV3',
}
_JAIN_ACCURACY = {'model1': 85.26, 'model2': 92.31, 'vgg16': 87.28, 'vgg19': 88.46, 'resnet50': 77.56,
                  'inception_v3': 70.99}

# Costs of the setups not run here, from measured numbers: FLOPs per image (`pneumojax bench`, XLA's count), the
# ~38 GFLOP/s XLA:CPU training reaches on this 2-core machine (ResNet-50: 3 x 7.99 GFLOP x 1.6 images/s), and the
# H200 speeds of experiments/bench/README.md (bfloat16). A frozen backbone's backward pass may or may not be
# computed, hence ranges. Epochs x 4,607 train_pd images, plus a validation per epoch.
_CPU, _H200 = 'this 2-core CPU', 'one H200'
_ESTIMATES = {
    **{f'kermany2018_{task}_inception_v3': f'one forward pass over the {n} images (train_pd, val_pd, test) at '
       f'11.0 GFLOP/img: about {minutes} min on {_CPU}, under a minute on {_H200}; the softmax epochs take seconds'
       for task, n, minutes in (('binary', '5,840', 30), ('bacteria_vs_virus', 'about 4,270', 20))},
    'kermany2018_bacteria_vs_virus_efficientnet_lite0': f'about 3-6 min on {_CPU}: the binary task\'s runs, '
                                                        'with more images, took 2.8-6.0 min here',
    'medmnist_28_resnet50': f'100 epochs at 5.9 GFLOP/img train: about 20 h on {_CPU}; 2.7 PFLOP, well under an '
                            f'hour on {_H200} (28 px batches use it poorly; not measured)',
    'medmnist_224_resnet18': f'100 epochs at 9.6 GFLOP/img train: about 30 h on {_CPU}; on {_H200} about 1 min of '
                             'steps at the 9,554 images/s measured (ResNet-18, bfloat16, batch 64), plus the '
                             'input pipeline',
    'jain2020_vgg16': f'20 epochs, frozen VGG16 (29.7 GFLOP/img forward): 20-60 h on {_CPU}; on {_H200} the '
                      'step runs at 4,765 images/s (measured, bfloat16, batch 64), so the augmenting input '
                      'pipeline sets the pace: minutes',
    'jain2020_vgg19': f'20 epochs, frozen VGG19 (37.7 GFLOP/img forward): 25-75 h on {_CPU}; minutes on {_H200}',
    'jain2020_resnet50': f'20 epochs, frozen ResNet50 (8.0 GFLOP/img forward): 5-16 h on {_CPU}; on {_H200} '
                         '6,078 images/s measured (train step, bfloat16, batch 256): pipeline-bound, minutes',
    'jain2020_inception_v3': f'20 epochs, frozen InceptionV3 at 224 px (6.2 GFLOP/img forward): 4-12 h on '
                             f'{_CPU}; minutes on {_H200}',
}

SETUPS = (
    *(Setup(f'kermany2018_{task}_{backbone}', _KERMANY, _KERMANY_SETUP.format(task=_KERMANY_TASKS[task]),
            _KERMANY_PAPER[task], f'experiments/kermany2018.py:{backbone},{task}',
            f'{_BACKBONE_NOTE[backbone]}; softmax trained with our hyperparameters (Adam 1e-3, 50 epochs); '
            f'{_IMAGES}; the paper chose its model on the test set (our test_selected line)',
            estimate=_ESTIMATES.get(f'kermany2018_{task}_{backbone}', ''))
      for task in ('binary', 'bacteria_vs_virus') for backbone in ('inception_v3', 'mobilenet_v2',
                                                                    'efficientnet_lite0')),
    Setup('medmnist_28_resnet18', 'MedMNIST v2 (PneumoniaMNIST, 28 px)', 'ResNet-18 from scratch, Adam 1e-3, '
          '100 epochs, batch 128, lr x0.1 at 50% and 75%, best val AUC', {'accuracy': 85.4, 'auc': 94.4},
          'experiments/medmnist.py:28,resnet18',
          f'val_pd (patient-disjoint, 609 images) instead of MedMNIST\'s random 524-image val; {_IMAGES}, '
          'centre-cropped and downscaled; 28 px stem assumed'),
    Setup('medmnist_28_resnet50', 'MedMNIST v2 (PneumoniaMNIST, 28 px)', 'ResNet-50 from scratch, as ResNet-18',
          {'accuracy': 85.4, 'auc': 94.8}, 'experiments/medmnist.py:28,resnet50',
          f'val_pd instead of MedMNIST\'s random val; {_IMAGES}, centre-cropped and downscaled; 28 px stem assumed',
          _ESTIMATES['medmnist_28_resnet50']),
    Setup('medmnist_224_resnet18', 'MedMNIST+ (Doerrich et al. 2024), 224 px', 'best end-to-end ResNet-18',
          {'accuracy': 91.1, 'auc': 98.0}, 'experiments/medmnist.py:224,resnet18',
          'MedMNIST v2\'s training recipe, not MedMNIST+\'s; val_pd; our 224 px images are a crop of squashed '
          'copies, not MedMNIST+\'s crops of the originals', _ESTIMATES['medmnist_224_resnet18']),
    *(Setup(f'jain2020_{model}', 'Jain et al., Measurement 2020', name, {'accuracy': accuracy},
            f'experiments/jain2020.py:{model}',
            ('layers assumed (paper tables not consulted); ' if model.startswith('model') else
             'ImageNet weights not available offline here (user-converted); frozen backbone + new head; ')
            + f'all training hyperparameters ours; {_IMAGES}; val_pd', _ESTIMATES.get(f'jain2020_{model}', ''))
      for model, name, accuracy in zip(_JAIN_ACCURACY, ('Model 1 (2 conv layers)', 'Model 2 (3 conv layers)',
                                                        'VGG16', 'VGG19', 'ResNet50', 'InceptionV3'),
                                       _JAIN_ACCURACY.values())),
)


def _stats(values: list[float]) -> dict:
  values = np.asarray(values, float) * 100
  return {'mean': float(np.mean(values)), 'n': len(values),
          'sd': float(np.std(values, ddof=results_table.DDOF)) if len(values) > 1 else math.nan,
          'min': float(np.min(values)), 'max': float(np.max(values))}


def _interval(run: dict, metric: str) -> list[float] | None:
  """The 95% patient-bootstrap interval of a run's test metric at threshold 0.5, if `pneumojax eval` ran."""
  path = run['workdir'] / 'eval' / 'test' / 'metrics.json'
  if not path.exists():
    return None
  evaluated = json.loads(path.read_text())
  if evaluated.get('checkpoint_step') != run['results'].get('checkpoint_step'):
    return None  # Evaluated another checkpoint than results.json's.
  interval = evaluated['operating_points'].get('fixed threshold', {}).get('ci95', {}).get(metric)
  return [100 * v for v in interval] if interval else None


def _ours(runs: list[dict], section: str, metric: str) -> str:
  values = results_table.metric_values(runs, section, metric)
  if not values:
    return '–'
  s = _stats(values)
  if s['n'] == 1:
    interval = _interval(runs[0], metric) if section == 'test' else None
    return f'{s["mean"]:.1f} [{interval[0]:.1f}, {interval[1]:.1f}]' if interval else f'{s["mean"]:.1f}'
  return f'{s["mean"]:.1f} ± {s["sd"]:.1f} ({s["min"]:.1f}–{s["max"]:.1f})'


def _difference(runs: list[dict], section: str, metric: str, paper: float | None) -> str:
  values = results_table.metric_values(runs, section, metric)
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
  walls = [r['results']['run']['wall_time_s'] for r in runs if 'run' in r['results']]
  if not walls:
    return 'not recorded'
  resumed = any(r['results']['run'].get('resumed_from_step') for r in runs if 'run' in r['results'])
  return f'{np.mean(walls) / 60:.1f} min' + (' (a resumed run: its last part only)' if resumed else '')


def _config_changes(setup: Setup, runs: list[dict]) -> list[str]:
  """'field=run value (config: file value)' for every field the runs changed from the setup's config file (by
  command-line overrides), the seed and data locations left out: a shortened schedule is stated, not hidden."""
  from pneumojax import cli  # Deferred: ml_collections' flags only for this.
  try:
    default = results_table.flatten(json.loads(cli.load_config(['--config', setup.config]).to_json()))
  except SystemExit:
    return ['(the config file could not be loaded here to compare)']
  changes = set()
  for run in runs:
    for key, value in run['config'].items():
      if key not in results_table.IGNORED and key in default and default[key] != value:
        changes.add(f'{key}={value} (config: {default[key]})')
  return sorted(changes)


def _setup_rows(setup: Setup, runs: list[dict]) -> list[str]:
  rows = []
  changes = _config_changes(setup, runs)
  lines = [('test', f'ours, {_VAL}' + (f'; changed from the config: {", ".join(changes)}' if changes else ''))]
  if any('test_at_val_threshold' in r['results'] for r in runs):
    rule = next(r['results']['test_at_val_threshold'].get('rule') for r in runs
                if 'test_at_val_threshold' in r['results'])
    lines.append(('test_at_val_threshold', f'ours, the same checkpoint at the threshold chosen on val_pd ({rule})'))
  if any('test_selected' in r['results'] for r in runs):
    lines.append(('test_selected', 'ours, checkpoint chosen on the TEST set (Kermany et al.\'s protocol; optimistic)'))
  for section, protocol in lines:
    cells = []
    for metric in METRICS:
      paper = setup.paper.get(metric)
      cells.append(f'{_ours(runs, section, metric)} / {"–" if paper is None else paper} / '
                   f'{_difference(runs, section, metric, paper)}')
    rows.append(f'| {setup.name} | {protocol} | {len(results_table.metric_values(runs, section, "auc"))} | '
                + ' | '.join(cells) + ' |')
  return rows


def _paper_numbers(setup: Setup) -> str:
  return ' / '.join('–' if setup.paper.get(m) is None else f'{setup.paper[m]}' for m in METRICS)


def render(results_dir, out_dir='.') -> str:
  """The page's Markdown; links are relative to `out_dir`, the folder the page is written to."""
  results_dir = Path(results_dir)
  lines = ['# Reproduction of published results', '',
           (f'Generated by `pneumojax reproduce` from the results.json files under `{results_dir}` and the papers\' '
            'numbers kept in `pneumojax/reproduction.py`. Every number of ours comes from a results file. Cells: '
            'ours / paper / ours − paper, in % on the 624 test images. Ours: one seed shows its value and, where '
            '`pneumojax eval` was run on it, the 95% patient-bootstrap interval in brackets; several seeds show '
            f'mean ± sample sd (ddof={results_table.DDOF}) and the range. Headline lines choose the checkpoint on '
            'validation data and use the threshold 0.5; the line below each uses the same checkpoint at a '
            'threshold chosen on validation data; a "TEST set" line is the optimistic protocol of Kermany et al., '
            'shown only for comparison.'), '',
           '| setup | protocol | n | ' + ' | '.join(METRICS) + ' |', '|---|---|---|' + '---|' * len(METRICS)]
  details, missing = [], []
  for setup in SETUPS:
    runs = results_table.load_runs(results_dir / setup.name) if (results_dir / setup.name).is_dir() else []
    if not runs:
      missing.append(setup)
      continue
    lines += _setup_rows(setup, runs)
    commands = sorted({r['results'].get('run', {}).get('command') or 'not recorded' for r in runs})
    details += [f'### {setup.name}', '', f'- Paper: {setup.source}: {setup.paper_setup}.',
                f'- Deviations: {setup.deviations}.',
                (f'- Seeds: {", ".join(str(r["config"].get("seed")) for r in runs)}; checkpoint steps: '
                 f'{", ".join(str(r["results"].get("checkpoint_step")) for r in runs)}.'),
                f'- Hardware: {"; ".join(sorted({_hardware(r) for r in runs}))}. Wall time per run: {_wall(runs)}.',
                '- Commands:', *[f'  - `{c}`' for c in commands], '']
  if not details:
    lines.append('| no results recorded yet | | | | | | |')
  lines += ['', '## Setups', ''] + (details or ['No results recorded yet.', ''])
  if missing:
    lines += ['## Not run here', '',
              '| setup | paper | paper ' + '/'.join(METRICS) + ' | deviations | command | estimated cost |',
              '|---|---|---|---|---|---|']
    lines += [f'| {s.name} | {s.source}: {s.paper_setup} | {_paper_numbers(s)} | {s.deviations} | `{s.command()}` | '
              f'{s.estimate or "not estimated"} |' for s in missing]
    lines.append('')
  names = {s.name for s in SETUPS}
  sweeps = sorted(p for p in results_dir.glob('*/results.md') if p.parent.name not in names)
  if sweeps:
    lines += ['## Ablations (sweep tables)', '',
              *[f'- [{p.parent.name}]({os.path.relpath(p, out_dir)})' for p in sweeps], '']
  return '\n'.join(lines)


def write(results_dir='experiments/results', out='experiments/REPRODUCTION.md') -> str:
  Path(out).write_text(render(results_dir, Path(out).parent))
  return out
