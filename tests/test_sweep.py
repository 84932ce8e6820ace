"""The sweep runner: every combination run, finished runs skipped, interrupted ones resumed, failures recorded."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from pneumojax import cli, train
from pneumojax.studies import sweep
from pneumojax.train import checkpoint, files, preflight, test_history
from tests.helpers import SWEPT_LEARNING_RATES, refuse_to_read_split, write_sweep


def test_sweep_runs_every_combination_and_resumes_the_interrupted_one(swept):
  _definition, out, runs, interrupted, statuses = swept
  assert [r.name for r in runs] == ['optim.learning_rate=0.001__seed=0', 'optim.learning_rate=0.001__seed=1',
                                    'optim.learning_rate=0.003__seed=0', 'optim.learning_rate=0.003__seed=1']
  assert statuses == {r.name: 'resumed' if r is interrupted else 'trained' for r in runs}
  for run in runs:
    results = json.loads((out / run.name / files.RESULTS).read_text())
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
  mtimes = {r.name: (out / r.name / files.RESULTS).stat().st_mtime_ns for r in runs}

  def must_not_train(*args, **kwargs):
    raise AssertionError('a finished run was trained again')
  monkeypatch.setattr(train, 'train_and_evaluate', must_not_train)
  assert sweep.run_sweep(definition, out) == {r.name: 'skipped' for r in runs}
  assert {r.name: (out / r.name / files.RESULTS).stat().st_mtime_ns for r in runs} == mtimes


def test_a_finished_run_of_another_config_is_not_taken_for_this_one(swept, monkeypatch):
  definition, out, _runs, _, _ = swept
  monkeypatch.setattr(train, 'train_and_evaluate', lambda *a, **k: pytest.fail('must not train'))
  statuses = sweep.run_sweep(definition, out, ['--config.train.batch_size=16'])
  assert all(s.startswith('failed: ValueError') and 'train.batch_size' in s for s in statuses.values()), statuses


def test_test_selected_entry_is_labelled_and_the_headline_stays_val_selected(swept):
  _, out, runs, _, _ = swept
  for run in runs:
    workdir = out / run.name
    results = json.loads((workdir / files.RESULTS).read_text())
    history = {h['step']: h['metrics'] for h in test_history.load(workdir)}
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


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, tfds_dir, monkeypatch):
  write_sweep(tmp_path, tfds_dir, {'data.class_balance': ['bogus', 'none']}, [0])

  def fake_train(config, workdir):  # validates as the real one does, then "trains" instantly
    preflight.check(config, workdir)
    Path(workdir, files.RESULTS).write_text(json.dumps({'config': config.to_dict(), 'test': {'auc': 0.5}}))
  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  with pytest.raises(SystemExit, match=r'1 of 2 runs failed.*data.class_balance=bogus__seed=0'):
    cli.main(['sweep', str(tmp_path / 'grid.py'), '--out', str(tmp_path / 'out')])
  assert 'data.class_balance' in (tmp_path / 'out' / 'data.class_balance=bogus__seed=0' / sweep.ERROR).read_text()
  assert (tmp_path / 'out' / 'data.class_balance=none__seed=0' / files.RESULTS).exists()
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
  definition = write_sweep(tmp_path, tfds_dir, {'optim.learning_rate': SWEPT_LEARNING_RATES}, [0])
  with pytest.raises(ValueError, match='optim.learning_rate is set by the sweep grid'):
    sweep.run_sweep(definition, tmp_path / 'out', ['--config.optim.learning_rate=0.1'])


def test_a_finished_run_saved_with_a_retired_config_field_is_skipped(swept, tmp_path, monkeypatch):
  definition, out, runs, _, _ = swept
  copy = tmp_path / 'out'
  shutil.copytree(out / runs[0].name, copy / runs[0].name, ignore=shutil.ignore_patterns('checkpoints'))
  results = json.loads((copy / runs[0].name / files.RESULTS).read_text())
  results['config']['model']['num_classes'] = 2  # as runs recorded it before data.task set it
  (copy / runs[0].name / files.RESULTS).write_text(json.dumps(results))
  monkeypatch.setattr(train, 'train_and_evaluate', lambda *a, **k: pytest.fail('must not train'))
  config = sweep.run_config(definition, runs[0], [])
  assert sweep.run_one(config, copy / runs[0].name, 'pneumojax train ...') == 'skipped'


def test_a_sweep_of_val_only_runs_never_reads_the_test_split_and_tabulates_validation(builder64, tfds_dir, tmp_path,
                                                                                      monkeypatch):
  definition = write_sweep(tmp_path, tfds_dir, {'optim.learning_rate': SWEPT_LEARNING_RATES}, [0], num_steps=2)
  refuse_to_read_split(monkeypatch, 'test')
  out = tmp_path / 'out'
  # The search protocol: the test split switched off for every run (and with it the sweep's test-selected report).
  statuses = sweep.run_sweep(definition, out, ['--config.eval.evaluate_test=False',
                                               '--config.eval.report_test_selected=False'])
  assert list(statuses.values()) == ['trained', 'trained'], statuses
  with open(out / 'results.csv') as f:
    rows = {float(row['optim.learning_rate']): row for row in csv.DictReader(f)}
  assert not [column for column in next(iter(rows.values())) if column.startswith('test')]
  table = (out / 'results.md').read_text()
  assert '## validation, the split that chose the checkpoint and the threshold' in table and '## test' not in table
  for run in sweep.expand(definition):
    recorded = json.loads((out / run.name / files.RESULTS).read_text())
    assert not [k for k in recorded if k.startswith('test')]
    row = rows[run.overrides['optim.learning_rate']]
    for section in ('val', 'val_at_val_threshold'):
      for metric in ('balanced_accuracy', 'auc'):
        assert float(row[f'{section}.{metric}.mean']) == pytest.approx(recorded[section][metric], rel=1e-9)
    at_val = recorded['val_at_val_threshold']
    assert (f'| optim.learning_rate={run.overrides["optim.learning_rate"]} | 1 | 0 | {at_val["accuracy"]:.3f} | '
            f'{at_val["balanced_accuracy"]:.3f} |') in table
