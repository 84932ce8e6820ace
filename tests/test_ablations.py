"""ABLATIONS.md: every number on the page comes from the sweep's results files (means, sds, paired intervals)."""

import json
import shutil

import numpy as np
import scipy.stats

from pneumojax.studies import ablations, reproduction
from pneumojax.train import files
from tests.helpers import REPO


def _results(out, run):
  return json.loads((out / run.name / files.RESULTS).read_text())


def test_the_page_is_computed_from_the_results_files(swept, tmp_path):
  definition, out, runs, _, _ = swept
  sweeps, results = tmp_path / 'ablations', tmp_path / 'results'
  sweeps.mkdir()
  shutil.copy(out.parent / 'grid.py', sweeps / 'grid.py')
  shutil.copytree(out, results / 'grid', ignore=shutil.ignore_patterns('checkpoints', 'events.*'))
  # An empty grid over the same config: the checkpoint-selection comparison, on the first setting's runs.
  (sweeps / 'selection.py').write_text((out.parent / 'grid.py').read_text().replace(
      repr(definition.grid), '{}'))
  first = [r for r in runs if r.overrides['optim.learning_rate'] == runs[0].overrides['optim.learning_rate']]
  for run in first:
    shutil.copytree(out / run.name, results / 'selection' / f'seed={run.seed}',
                    ignore=shutil.ignore_patterns('checkpoints', 'events.*'))
  page = ablations.render(sweeps, results)

  by_rate = {}
  for run in runs:
    by_rate.setdefault(run.overrides['optim.learning_rate'], {})[run.seed] = _results(out, run)
  (base_rate, base), (other_rate, other) = list(by_rate.items())
  for rate, members in by_rate.items():
    aucs = [r['test_at_val_threshold']['auc'] for r in members.values()]
    assert f'| optim.learning_rate={rate} | {" ".join(map(str, sorted(members)))} | ' \
           f'{np.mean(aucs):.3f} ± {np.std(aucs, ddof=1):.3f} |' in page
  differences = [other[s]['test_at_val_threshold']['auc'] - base[s]['test_at_val_threshold']['auc'] for s in base]
  half = scipy.stats.t.ppf(0.975, len(differences) - 1) * np.std(differences, ddof=1) / np.sqrt(len(differences))
  mean = np.mean(differences)
  assert f'ROC-AUC {mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]' in page
  auc_verdict = ('ROC-AUC: no difference beyond seed noise' if mean - half <= 0 <= mean + half
                 else f'ROC-AUC {"higher" if mean - half > 0 else "lower"}')
  assert auc_verdict in page.split('**Finding**: ')[1].split('\n')[0]
  # Balanced accuracy, compared the same way (the second metric of the finding).
  differences = [other[s]['test_at_val_threshold']['balanced_accuracy']
                 - base[s]['test_at_val_threshold']['balanced_accuracy'] for s in base]
  half = scipy.stats.t.ppf(0.975, len(differences) - 1) * np.std(differences, ddof=1) / np.sqrt(len(differences))
  mean = np.mean(differences)
  assert f'balanced accuracy {mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]' in page

  inflation = [_results(out, r)['test_selected']['auc'] - _results(out, r)['test']['auc'] for r in first]
  half = scipy.stats.t.ppf(0.975, len(inflation) - 1) * np.std(inflation, ddof=1) / np.sqrt(len(inflation))
  assert f'{np.mean(inflation):+.3f} [{np.mean(inflation) - half:+.3f}, {np.mean(inflation) + half:+.3f}]' in \
      page.split('## selection')[1]
  # Checkpoint and threshold both chosen on test, against both chosen on val_pd.
  both = [_results(out, r) for r in first]
  gain = [r['test_selected']['at_test_threshold']['accuracy'] - r['test_at_val_threshold']['accuracy'] for r in both]
  half = scipy.stats.t.ppf(0.975, len(gain) - 1) * np.std(gain, ddof=1) / np.sqrt(len(gain))
  assert f'{np.mean(gain):+.3f} [{np.mean(gain) - half:+.3f}, {np.mean(gain) + half:+.3f}] |' in \
      page.split('## selection')[1]


def test_settings_not_run_yet_are_listed_with_the_command(swept, tmp_path):
  out = swept[1]
  (tmp_path / 'ablations').mkdir()
  shutil.copy(out.parent / 'grid.py', tmp_path / 'ablations' / 'grid.py')
  page = ablations.render(tmp_path / 'ablations', tmp_path / 'results')
  assert 'none run' in page and 'Not run yet' in page and 'pneumojax sweep' in page


def test_the_committed_pages_are_what_the_commands_make_of_the_committed_results(monkeypatch):
  """ABLATIONS.md and REPRODUCTION.md are generated, never edited: a stale page (results added, page not rebuilt)
  fails here. Rebuild with `pneumojax ablations` and `pneumojax reproduce`."""
  monkeypatch.chdir(REPO)
  assert (REPO / 'experiments' / 'ABLATIONS.md').read_text() == ablations.render()
  assert (REPO / 'experiments' / 'REPRODUCTION.md').read_text() == reproduction.render(
      'experiments/results', out_dir='experiments')
