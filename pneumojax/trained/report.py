"""`pneumojax report`: one self-contained HTML page of a run's evaluation (images embedded, no other files).

The page holds the protocol (which split chose the checkpoint and the threshold), the metrics table with
their confidence intervals, the plots of `pneumojax eval` and the run's config. It reads
`workdir/eval/<split>/`, running the evaluation first if it is not there or is of another checkpoint.
"""

import base64
import html
import json
import logging
import math

from etils import epath

from pneumojax.trained import evaluate

REPORT = 'report.html'
_METRICS = {'accuracy': 'Accuracy', 'balanced_accuracy': 'Balanced accuracy (mean recall of the classes)',
            'auc': 'ROC-AUC', 'pr_auc': 'PR-AUC (average precision)',
            'sensitivity': 'Sensitivity (recall)', 'specificity': 'Specificity',
            'precision': 'Precision (PPV)', 'f1': 'F1'}
_FIGURES = {
    'roc.png': 'ROC curve; markers: the operating points.',
    'pr.png': 'Precision-recall curve; markers: the operating points.',
    'confusion_matrix.png': 'Confusion matrices (rows: true class, columns: predicted class).',
    'calibration.png': 'Calibration: predicted probability against the observed frequency.',
    'training_curves.png': 'Training curves (train: averages over logging windows; validation: every evaluation).',
    'errors.png': 'The most confident errors, with their file names.',
}
_STYLE = ('body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}'
          'table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.3em .6em;text-align:right}'
          'th:first-child,td:first-child{text-align:left}figure{margin:1.5em 0}img{max-width:100%}'
          'pre{background:#f4f4f4;padding:1em;overflow:auto;font-size:85%}')
log = logging.getLogger(__name__)


def write_report(run, split: str = 'test', chosen_on_validation: bool = True) -> epath.Path:
  """Writes `workdir/report.html` of `run` (trained/load.py) on `split`; returns its path. `chosen_on_validation`:
  whether the run's checkpoint is its best on validation (else named by the user)."""
  workdir = epath.Path(run.workdir)
  eval_dir = workdir / 'eval' / split
  if not _evaluated(eval_dir, run.step):
    log.info('%s has no evaluation of checkpoint %d on %r yet: running it.', workdir, run.step, split)
    evaluate.write(run, evaluate.evaluate(run, split, chosen_on_validation))
  results = json.loads((eval_dir / evaluate.METRICS).read_text())
  title = f'{results["model"]} on {results["task"]}: {workdir.name}'
  parts = [f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
           f'<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>',
           '<h2>Protocol</h2>', f'<p>{html.escape(results["protocol"])}</p>',
           f'<h2>Metrics on {html.escape(split)} ({results["num_examples"]} images, {results["num_patients"]} '
           'patients)</h2>', _metrics_table(results), '<h2>Figures</h2>']
  for name, caption in _FIGURES.items():
    if (eval_dir / name).exists():
      data = base64.b64encode((eval_dir / name).read_bytes()).decode()
      parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{name}">'
                   f'<figcaption>{html.escape(caption)}</figcaption></figure>')
  parts += ['<h2>Configuration</h2>', f'<pre>{html.escape(run.config.to_json(indent=1))}</pre>', '</body></html>']
  path = workdir / REPORT
  path.write_text('\n'.join(parts))
  log.info('Report of %s -> %s', workdir, path)
  return path


def _evaluated(eval_dir: epath.Path, step: int) -> bool:
  path = eval_dir / evaluate.METRICS
  return path.exists() and json.loads(path.read_text())['checkpoint_step'] == step


def _cell(value: float, interval: list[float]) -> str:
  if math.isnan(value):
    return 'undefined'
  if any(math.isnan(x) for x in interval):  # Undefined on some resample.
    return f'{value:.3f} <small>(no interval)</small>'
  return f'{value:.3f} <small>({interval[0]:.3f}&ndash;{interval[1]:.3f})</small>'


def _label(name: str, class_names: list[str]) -> str:
  if name.startswith('auc_class_'):
    return f'ROC-AUC, {class_names[int(name.rsplit("_", 1)[1])]} vs rest'
  if name == 'auc' and len(class_names) > 2:
    return 'ROC-AUC (macro mean of one-vs-rest)'
  return _METRICS[name]


def _metrics_table(results) -> str:
  ops = results['operating_points']
  names = [k for k in next(iter(ops.values()))['ci95'] if k in _METRICS or k.startswith('auc_class_')]
  header = ''.join(f'<th>{html.escape(name)}' + ('' if op['threshold'] is None else f' {op["threshold"]:.4f}')
                   + '</th>' for name, op in ops.items())
  rows = [f'<tr><th>Metric ({results["bootstrap"]["confidence"]:.0%} CI)</th>{header}</tr>']
  for name in names:
    cells = ''.join(f'<td>{_cell(op[name], op["ci95"][name])}</td>' for op in ops.values())
    rows.append(f'<tr><td>{html.escape(_label(name, results["class_names"]))}</td>{cells}</tr>')
  return '<table>' + ''.join(rows) + '</table>'
