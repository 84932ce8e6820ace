"""The sweep runner (finish, skip, resume, failures), the results tables, the test-selected report, run provenance
in results.json, the paper configs and ablation files, and REPRODUCTION.md."""

import csv
import glob
import importlib.util
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from pneumojax import cli, models, provenance, reproduction, results_table, sweep, weights
from pneumojax.train import checkpoint, linear_probe, loop, test_selected, validate
from tests.test_train import tiny_config

ROOT = Path(__file__).resolve().parents[1]
LEARNING_RATES = [1e-3, 3e-3]
SEEDS = [0, 1]


def _write_sweep(tmp_path, tfds_dir, grid, seeds, num_steps=4):
  """A config file of the tests' tiny CNN (64 px, 4 steps, validation every 2) and a sweep file over it."""
  (tmp_path / 'tiny.py').write_text(
      'from tests.test_train import tiny_config\n\n\n'
      f'def get_config():\n  return tiny_config({str(tfds_dir)!r}, {num_steps})\n')
  (tmp_path / 'grid.py').write_text(
      f'def get_sweep():\n  return {{"config": {str(tmp_path / "tiny.py")!r}, "grid": {grid!r}, "seeds": {seeds!r},\n'
      '          "overrides": {"train.eval_every_steps": 2, "eval.report_test_selected": True}}\n')
  return sweep.load_sweep(str(tmp_path / 'grid.py'))


@pytest.fixture(scope='module')
def swept(builder64, tfds_dir, tmp_path_factory):
  """A 2 learning rates x 2 seeds sweep of 4-step runs, one of them interrupted at step 2 beforehand."""
  tmp_path = tmp_path_factory.mktemp('sweep')
  definition = _write_sweep(tmp_path, tfds_dir, {'optim.learning_rate': LEARNING_RATES}, SEEDS)
  out = tmp_path / 'out'
  runs = sweep.expand(definition)
  interrupted = runs[-1]
  config = sweep.run_config(definition, interrupted, [])
  config.train.num_steps = 2  # "killed" after its step-2 checkpoint: results.json removed below
  loop.train_and_evaluate(config, str(out / interrupted.name))
  (out / interrupted.name / loop.RESULTS).unlink()
  statuses = sweep.run_sweep(definition, out)
  return definition, out, runs, interrupted, statuses


def test_sweep_runs_every_combination_and_resumes_the_interrupted_one(swept):
  _definition, out, runs, interrupted, statuses = swept
  assert [r.name for r in runs] == ['optim.learning_rate=0.001__seed=0', 'optim.learning_rate=0.001__seed=1',
                                    'optim.learning_rate=0.003__seed=0', 'optim.learning_rate=0.003__seed=1']
  assert statuses == {r.name: 'resumed' if r is interrupted else 'trained' for r in runs}
  for run in runs:
    results = json.loads((out / run.name / loop.RESULTS).read_text())
    assert results['config']['optim']['learning_rate'] == run.overrides['optim.learning_rate']
    assert results['config']['seed'] == run.seed
    with checkpoint.Checkpointer(out / run.name) as ckpt:
      assert ckpt.latest_step() == 4  # trained to the end
    # It continued from its step-2 checkpoint, not from step 0; the others started afresh.
    assert results['run']['resumed_from_step'] == (2 if run is interrupted else 0)
    assert f'--workdir {out / run.name}' in results['run']['command']
    assert f'--config.optim.learning_rate={run.overrides["optim.learning_rate"]}' in results['run']['command']


def test_rerun_skips_finished_runs_without_training(swept, monkeypatch):
  definition, out, runs, _, _ = swept
  mtimes = {r.name: (out / r.name / loop.RESULTS).stat().st_mtime_ns for r in runs}

  def must_not_train(*args, **kwargs):
    raise AssertionError('a finished run was trained again')
  monkeypatch.setattr(loop, 'train_and_evaluate', must_not_train)
  assert sweep.run_sweep(definition, out) == {r.name: 'skipped' for r in runs}
  assert {r.name: (out / r.name / loop.RESULTS).stat().st_mtime_ns for r in runs} == mtimes


def test_a_finished_run_of_another_config_is_not_taken_for_this_one(swept, monkeypatch):
  definition, out, _runs, _, _ = swept
  monkeypatch.setattr(loop, 'train_and_evaluate', lambda *a, **k: pytest.fail('must not train'))
  statuses = sweep.run_sweep(definition, out, ['--config.train.batch_size=16'])
  assert all(s.startswith('failed: ValueError') and 'train.batch_size' in s for s in statuses.values()), statuses


def test_table_means_and_sds_match_the_results_files(swept):
  _, out, runs, _, _ = swept
  with open(out / 'results.csv') as f:
    rows = {float(row['optim.learning_rate']): row for row in csv.DictReader(f)}
  assert sorted(rows) == LEARNING_RATES
  for lr in LEARNING_RATES:
    files = [json.loads((out / r.name / loop.RESULTS).read_text()) for r in runs
             if r.overrides['optim.learning_rate'] == lr]
    row = rows[lr]
    assert int(row['n']) == len(SEEDS) and row['seeds'] == '0 1'
    for section in ('test', 'test_at_val_threshold', 'test_selected'):
      for metric in results_table.METRICS:
        values = np.array([f[section][metric] for f in files], float)
        # Sample standard deviation over seeds: ddof=1.
        np.testing.assert_allclose(float(row[f'{section}.{metric}.mean']), values.mean(), rtol=1e-9)
        np.testing.assert_allclose(float(row[f'{section}.{metric}.sd']), values.std(ddof=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(float(row['wall_time_s_mean']), np.mean([f['run']['wall_time_s'] for f in files]))
  table = (out / 'results.md').read_text()
  first = [json.loads((out / r.name / loop.RESULTS).read_text())['test']['auc'] for r in runs[:2]]
  assert f'{np.mean(first):.3f} ± {np.std(first, ddof=1):.3f}' in table
  assert 'optim.learning_rate=0.001' in table and 'TEST set' in table


def test_test_selected_entry_is_labelled_and_the_headline_stays_val_selected(swept):
  _, out, runs, _, _ = swept
  for run in runs:
    workdir = out / run.name
    results = json.loads((workdir / loop.RESULTS).read_text())
    history = {h['step']: h['metrics'] for h in test_selected.load(workdir)}
    assert sorted(history) == [2, 4]  # every validation evaluation, also across the interruption
    with checkpoint.Checkpointer(workdir) as ckpt:
      val_best = ckpt.best_step()
    assert results['checkpoint_step'] == val_best
    # The headline is the val-chosen checkpoint's test metrics; the test-selected one maximises test AUC.
    assert results['test']['auc'] == pytest.approx(history[val_best]['auc'], abs=1e-6)
    chosen = results['test_selected']
    assert chosen['auc'] == max(h['auc'] for h in history.values())
    assert chosen['auc'] == pytest.approx(history[chosen['checkpoint_step']]['auc'])
    assert chosen['accuracy'] == pytest.approx(history[chosen['checkpoint_step']]['accuracy'])
    assert chosen['auc'] >= results['test']['auc'] - 1e-6
    assert 'OPTIMISTIC' in chosen['protocol'] and 'Kermany' in chosen['protocol']
    assert 'test_selected' not in results['protocol'] and "'val_pd'" in results['protocol']


def test_test_selected_ties_go_to_the_earliest_and_nan_ranks_last():
  history = [{'step': 1, 'metrics': {'auc': float('nan')}}, {'step': 2, 'metrics': {'auc': 0.8}},
             {'step': 3, 'metrics': {'auc': 0.8}}, {'step': 4, 'metrics': {'auc': 0.7}}]
  assert test_selected.best(history)['step'] == 2


def test_results_record_wall_time_hardware_versions_and_commit(swept):
  _, out, runs, _, _ = swept
  run = json.loads((out / runs[0].name / loop.RESULTS).read_text())['run']
  assert run['wall_time_s'] > 0
  assert run['hardware']['backend'] == 'cpu' and run['hardware']['device_count'] >= 1
  assert run['hardware']['cpu_count'] >= 1 and run['hardware']['platform']
  assert run['versions']['jax'] and run['versions']['flax']
  if (ROOT / '.git').exists():
    assert len(run['git']['commit']) == 40


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, tfds_dir, monkeypatch):
  _write_sweep(tmp_path, tfds_dir, {'data.class_balance': ['bogus', 'none']}, [0])

  def fake_train(config, workdir):  # validates as the real one does, then "trains" instantly
    validate.validate(config, workdir)
    Path(workdir, loop.RESULTS).write_text(json.dumps({'config': config.to_dict(), 'test': {'auc': 0.5}}))
  monkeypatch.setattr(loop, 'train_and_evaluate', fake_train)
  with pytest.raises(SystemExit, match=r'1 of 2 runs failed.*data.class_balance=bogus__seed=0'):
    cli.main(['sweep', str(tmp_path / 'grid.py'), '--out', str(tmp_path / 'out')])
  assert 'data.class_balance' in (tmp_path / 'out' / 'data.class_balance=bogus__seed=0' / sweep.ERROR).read_text()
  assert (tmp_path / 'out' / 'data.class_balance=none__seed=0' / loop.RESULTS).exists()
  assert (tmp_path / 'out' / 'results.md').exists()


def test_run_names_are_readable_unique_and_filesystem_safe():
  definition = sweep.Sweep('s', 'c.py', {'optim.step_epochs': [(0.5, 0.75), (0.3,)], 'data.note': ['a/b c'],
                                         'mode': {'frozen': {'x.y': 1}, 'tuned': {'x.y': 2}}}, (0, 1))
  names = [r.name for r in sweep.expand(definition)]
  assert len(names) == len(set(names)) == 8
  assert names[0] == 'optim.step_epochs=0.5-0.75__data.note=a-b-c__mode=frozen__seed=0'
  assert all('/' not in n and ' ' not in n for n in names)
  assert sweep.expand(definition)[1].overrides == {'optim.step_epochs': (0.5, 0.75), 'data.note': 'a/b c',
                                                   'x.y': 1, 'seed': 1}


def test_command_line_overrides_of_grid_fields_are_refused(tmp_path, tfds_dir):
  definition = _write_sweep(tmp_path, tfds_dir, {'optim.learning_rate': LEARNING_RATES}, [0])
  with pytest.raises(ValueError, match='optim.learning_rate is set by the sweep grid'):
    sweep.run_sweep(definition, tmp_path / 'out', ['--config.optim.learning_rate=0.1'])


def _config_args(path: str) -> list[str]:
  """Every ARG an experiments/*.py config takes (its module's lists), or none."""
  spec = importlib.util.spec_from_file_location('config_under_test', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  name = Path(path).stem
  if name == 'kermany2018':
    return [f'{b},{t}' for b in module.BACKBONES for t in module.TASKS]
  if name == 'jain2020':
    return list(module.MODELS)
  if name == 'medmnist':
    return [f'{r},{m}' for r in module.RESOLUTIONS for m in module.MODELS]
  return ['']


CONFIGS = sorted(glob.glob(str(ROOT / 'experiments' / '*.py')))
ABLATIONS = sorted(glob.glob(str(ROOT / 'experiments' / 'ablations' / '*.py')))


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: Path(p).stem)
def test_every_experiment_config_loads_and_validates(path, tmp_path):
  for arg in _config_args(path):
    config = cli.load_config(['--config', f'{path}:{arg}' if arg else path])
    validate.validate(config, str(tmp_path))
    if config.train.cached_features:
      assert config.model.init_from, 'a linear probe needs pretrained weights'


def test_paper_configs_keep_the_papers_hyperparameters():
  med = cli.load_config(['--config', str(ROOT / 'experiments/medmnist.py:28,resnet50')])
  assert (med.optim.name, med.optim.learning_rate, med.optim.schedule, tuple(med.optim.step_epochs),
          med.optim.step_factor, med.train.batch_size, med.train.num_epochs, med.data.resize,
          med.data.resolution, med.model.name) == ('adam', 1e-3, 'step', (0.5, 0.75), 0.1, 128, 100, 'crop', 28,
                                                   'resnet50')
  kermany = cli.load_config(['--config', str(ROOT / 'experiments/kermany2018.py:mobilenet_v2,bacteria_vs_virus')])
  assert kermany.train.cached_features and kermany.data.task == 'bacteria_vs_virus'
  assert kermany.model.kwargs.alpha == 0.35 and kermany.eval.report_test_selected
  with pytest.raises(SystemExit, match='BACKBONE'):
    cli.load_config(['--config', str(ROOT / 'experiments/kermany2018.py:resnet18')])


@pytest.mark.parametrize('path', ABLATIONS, ids=lambda p: Path(p).stem)
def test_every_ablation_sweep_loads_and_each_run_validates(path, tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)  # sweep files name their base config relative to the repository
  definition = sweep.load_sweep(path)
  runs = sweep.expand(definition)
  assert len(runs) >= 2 and len({r.name for r in runs}) == len(runs)
  for run in runs:
    config = sweep.run_config(definition, run, [])
    validate.validate(config, str(tmp_path))
    for key, value in run.overrides.items():
      node = config
      for part in key.split('.'):
        node = node[part]
      assert node == value, key


def test_reproduction_page_numbers_come_from_the_results_files(swept, tmp_path):
  _, out, runs, _, _ = swept
  results_dir = tmp_path / 'results'
  setup = reproduction.SETUPS[1]  # kermany2018_binary_mobilenet_v2
  for run in runs[:2]:  # two seeds of one config stand in for that setup's runs
    shutil.copytree(out / run.name, results_dir / setup.name / run.name,
                    ignore=shutil.ignore_patterns('checkpoints', 'events.*'))
  page = reproduction.render(results_dir)
  accuracies = [100 * json.loads((out / r.name / loop.RESULTS).read_text())['test']['accuracy'] for r in runs[:2]]
  mean, sd = np.mean(accuracies), np.std(accuracies, ddof=1)
  assert f'{mean:.1f} ± {sd:.1f} ({min(accuracies):.1f}–{max(accuracies):.1f}) / 92.8 / {mean - 92.8:+.1f}' in page
  assert 'TEST set' in page  # the test-selected line, labelled
  at_val = [100 * json.loads((out / r.name / loop.RESULTS).read_text())['test_at_val_threshold']['sensitivity']
            for r in runs[:2]]
  assert ('threshold chosen on val_pd' in page
          and f'{np.mean(at_val):.1f} ± {np.std(at_val, ddof=1):.1f} ({min(at_val):.1f}–{max(at_val):.1f}) / 93.2' in page)
  # The tiny runs differ from the setup's config file, and the row says how (e.g. another model).
  assert 'changed from the config: ' in page and '(config: mobilenet_v2)' in page
  not_run = page.split('## Not run here')[1]
  assert setup.name not in not_run and 'kermany2018_binary_inception_v3' in not_run and 'jain2020_model1' in not_run


def test_train_head_evaluates_the_test_features_after_every_epoch():
  from pneumojax.config import default_config
  from pneumojax.models.head import Head
  rng = np.random.default_rng(0)

  def split(n):  # separable features: the label shifts the first coordinate
    labels = rng.integers(0, 2, n)
    return {'features': (rng.normal(size=(n, 8)) + 3 * labels[:, None] * np.eye(8)[0]).astype(np.float32),
            'label': labels}
  config = default_config()
  config.train.update({'num_epochs': 3, 'batch_size': 32, 'eval_batch_size': 64})
  config.optim.update({'learning_rate': 0.1, 'schedule': 'constant'})
  head = Head(num_classes=2)
  initial = head.init(jax.random.key(0), np.zeros((1, 8), np.float32), train=False)['params']
  epochs = list(linear_probe.train_head(config, head, initial, split(160), split(50), test=split(70)))
  assert [epoch for epoch, _, _ in epochs] == [1, 2, 3]
  for _, _, val_results in epochs:
    assert val_results['num_examples'] == 50 and val_results['test']['num_examples'] == 70
  assert epochs[-1][2]['test']['auc'] > 0.9


@pytest.mark.slow  # Two ResNet compilations: over a minute on a 2-core CPU.
def test_cached_features_run_reports_test_selected_beside_the_val_selected_epoch(builder64, tfds_dir, tmp_path,
                                                                                  monkeypatch):
  extracted, extract = [], linear_probe.extract_features

  def features_of_a_subset(model, variables, dataset):  # the real backbone pass, on the first batch only: fast
    features = extract(model, variables, dataset.take(1))
    extracted.append(len(features['label']))
    return features
  monkeypatch.setattr(linear_probe, 'extract_features', features_of_a_subset)
  config = tiny_config(tfds_dir, -1)
  config.data.channels = 3
  config.model.update({'name': 'resnet18', 'init_from': str(tmp_path / 'pretrained')})
  config.model.kwargs = {'num_filters': 4}  # replaces tiny_config's simple_cnn widths
  config.train.update({'cached_features': True, 'num_epochs': 4, 'batch_size': 256})
  config.eval.report_test_selected = True
  backbone = models.get_model('resnet18', num_filters=4, features_only=True)
  init = jax.jit(lambda: backbone.init(jax.random.key(0), np.zeros((1, 64, 64, 3)), train=False))  # op by op is slow
  weights.save(tmp_path / 'pretrained', init())
  results = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  history = {h['step']: h['metrics'] for h in test_selected.load(tmp_path / 'run')}
  assert extracted == [256, 256, 256]  # train, val and (for the report) test features
  assert sorted(history) == [1, 2, 3, 4] and all(h['num_examples'] == 256 for h in history.values())
  with checkpoint.Checkpointer(tmp_path / 'run') as ckpt:
    assert results['checkpoint_step'] == ckpt.best_step()
  assert results['test']['num_examples'] == 624  # the headline: the whole test split, val-chosen epoch
  chosen = results['test_selected']
  assert chosen['auc'] == max(h['auc'] for h in history.values()) and chosen['num_evaluations'] == 4
  assert chosen['auc'] == history[chosen['checkpoint_step']]['auc'] and 'OPTIMISTIC' in chosen['protocol']
  assert results['run']['wall_time_s'] > 0


@pytest.mark.parametrize('argv, expected', [
    (['/x/pneumojax/cli.py', 'train', '--workdir', 'w'], 'pneumojax train --workdir w'),  # python -m pneumojax.cli
    (['/venv/bin/pneumojax', 'train'], 'pneumojax train'),
    (['experiments/sweep.py', '--seeds', '0'], 'sweep.py --seeds 0')])
def test_recorded_command_is_the_command_as_typed(monkeypatch, argv, expected):
  monkeypatch.setattr(provenance.sys, 'argv', argv)
  assert provenance.command_line() == expected
