"""REPRODUCTION.md: our numbers from the results files, beside the papers' numbers of experiments/papers.json."""

import json
import shutil

import numpy as np

from pneumojax.studies import reproduction
from pneumojax.train import files
from tests.helpers import REPO

PAPERS = REPO / 'experiments' / 'papers.json'


def _record(out, runs, setup_dir):
  """The tiny sweep's runs, as if recorded under setup_dir (their results files only)."""
  for run in runs:
    shutil.copytree(out / run.name, setup_dir / run.name, ignore=shutil.ignore_patterns('checkpoints', 'events.*'))


def test_reproduction_page_numbers_come_from_the_results_files(swept, tmp_path):
  _, out, runs, _, _ = swept
  results_dir = tmp_path / 'results'
  setup = reproduction.load_setups(PAPERS)[1]  # kermany2018_binary_mobilenet_v2
  _record(out, runs[:2], results_dir / setup.name)  # two seeds of one config stand in for that setup's runs
  page = reproduction.render(results_dir, PAPERS)
  accuracies = [100 * json.loads((out / r.name / files.RESULTS).read_text())['test']['accuracy'] for r in runs[:2]]
  mean, sd = np.mean(accuracies), np.std(accuracies, ddof=1)
  assert f'{mean:.1f} ± {sd:.1f} ({min(accuracies):.1f}–{max(accuracies):.1f}) / 92.8 / {mean - 92.8:+.1f}' in page
  assert 'TEST set' in page  # the test-selected line, labelled
  at_val = [100 * json.loads((out / r.name / files.RESULTS).read_text())['test_at_val_threshold']['sensitivity']
            for r in runs[:2]]
  assert 'threshold chosen on val_pd' in page
  assert f'{np.mean(at_val):.1f} ± {np.std(at_val, ddof=1):.1f} ({min(at_val):.1f}–{max(at_val):.1f}) / 93.2' in page
  # The tiny runs differ from the setup's config file, and the row says how (e.g. another model).
  assert 'changed from the config: ' in page and '(config: mobilenet_v2)' in page
  not_run = page.split('## Not run here')[1]
  assert setup.name not in not_run and 'kermany2018_binary_inception_v3' in not_run and 'jain2020_model1' in not_run


def test_runs_of_different_threshold_rules_get_a_line_each(swept, tmp_path):
  _, out, runs, _, _ = swept
  results_dir = tmp_path / 'results'
  setup = reproduction.load_setups(PAPERS)[1]
  _record(out, runs[:2], results_dir / setup.name)
  older = results_dir / setup.name / runs[0].name / files.RESULTS
  recorded = json.loads(older.read_text())  # as recorded before the default rule and balanced accuracy changed
  recorded['test_at_val_threshold']['rule'] = 'highest threshold with sensitivity >= 0.95'
  for section in ('test', 'test_at_val_threshold', 'test_selected'):
    del recorded[section]['balanced_accuracy']
  older.write_text(json.dumps(recorded))
  page = reproduction.render(results_dir, PAPERS).split('## Paper setups')[1]
  lines = [line for line in page.splitlines() if 'threshold chosen on val_pd' in line]
  assert len(lines) == 2
  old_rule = next(line for line in lines if 'sensitivity >= 0.95) | 1 |' in line)
  assert any("(Youden's J" in line and ') | 1 |' in line for line in lines)
  at_val = recorded['test_at_val_threshold']
  balanced = 100 * (at_val['sensitivity'] + at_val['specificity']) / 2  # derived: the file lacks it
  assert f'| {100 * at_val["accuracy"]:.1f} / 92.8 / ' in old_rule and f'| {balanced:.1f} / 91.65 / ' in old_rule


def test_the_headline_leads_the_page_with_the_recipe_at_the_val_chosen_threshold(swept, tmp_path):
  _, out, runs, _, _ = swept
  results_dir = tmp_path / 'results'
  assert 'not run yet' in reproduction.render(results_dir, PAPERS).split('## Paper setups')[0]
  _record(out, runs[:2], results_dir / 'best')  # two seeds of one config stand in for the recipe's runs
  headline = reproduction.render(results_dir, PAPERS).split('## Paper setups')[0]
  at_val = [json.loads((out / r.name / files.RESULTS).read_text())['test_at_val_threshold'] for r in runs[:2]]
  row = next(line for line in headline.splitlines() if line.startswith('| pneumojax, `experiments/best.py`'))
  for metric in ('accuracy', 'balanced_accuracy', 'specificity'):
    values = [100 * a[metric] for a in at_val]
    assert f'{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f} ({min(values):.1f}–{max(values):.1f})' in row
  assert "(threshold: Youden's J" in row and '| 2 |' in row
  assert '| 91.56 ± 0.27 |' in headline and 'not run yet' not in headline  # the published rows beside it


def test_seeds_of_another_schedule_get_their_own_line_and_the_device_split_is_no_change(swept, tmp_path):
  _, out, runs, _, _ = swept
  results_dir = tmp_path / 'results'
  setup = reproduction.load_setups(PAPERS)[1]
  _record(out, runs[:3], results_dir / setup.name)
  edited = {}
  for run, change in zip(runs[:3], ({'distributed': {'cpu_devices': 3}}, {}, {'train': {'num_epochs': 999}})):
    path = results_dir / setup.name / run.name / files.RESULTS
    recorded = json.loads(path.read_text())
    for section, fields in change.items():
      recorded['config'][section].update(fields)
    path.write_text(json.dumps(recorded))
    edited[run.name] = recorded
  page = reproduction.render(results_dir, PAPERS).split('## Paper setups')[1]
  headline_lines = [line for line in page.splitlines() if '| ours, checkpoint (epoch) chosen' in line]
  assert len(headline_lines) == 2  # runs 0 and 1 (split over 3 devices or not) averaged; run 2 alone
  shortened = next(line for line in headline_lines if 'train.num_epochs=999' in line)
  assert '| 1 |' in shortened and f'| {100 * edited[runs[2].name]["test"]["accuracy"]:.1f} / 92.8 /' in shortened
  together = next(line for line in headline_lines if line != shortened)
  accuracies = [100 * edited[r.name]['test']['accuracy'] for r in runs[:2]]
  assert '| 2 |' in together and f'{np.mean(accuracies):.1f} ± {np.std(accuracies, ddof=1):.1f}' in together
  assert 'cpu_devices' not in page.split('## Setups')[0]
  assert 'Runs with ' in page and 'train.num_epochs=999 (config: ' in page.split('## Setups')[1]


def test_a_resumed_run_is_named_apart_from_the_mean_wall_time(swept, tmp_path):
  _, out, runs, _, _ = swept
  results_dir = tmp_path / 'results'
  setup = reproduction.load_setups(PAPERS)[1]
  _record(out, runs[:2], results_dir / setup.name)  # two seeds of one config
  for run, (wall_s, resumed_from) in zip(runs[:2], ((60.0, 0), (30.0, 7))):
    path = results_dir / setup.name / run.name / files.RESULTS
    recorded = json.loads(path.read_text())
    recorded['run'].update(wall_time_s=wall_s, resumed_from_step=resumed_from)
    path.write_text(json.dumps(recorded))
  resumed_seed = json.loads(path.read_text())['config']['seed']
  details = reproduction.render(results_dir, PAPERS).split('## Setups')[1]
  # The whole run's minute, not a mean with the resumed run's last half minute.
  assert f'wall time per run 1.0 min; seed {resumed_seed} resumed at step 7: its last part 0.5 min.' in details
