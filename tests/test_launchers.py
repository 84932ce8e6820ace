"""Sweeps beyond one process: `--parallel N` on this host, and `--launcher slurm` through submitit (its local
executor here: the same pickled jobs, the same requeue after a timeout signal, without a cluster)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pneumojax import cli, train
from pneumojax.studies import launchers, sweep
from pneumojax.train import checkpoint, files
from tests.helpers import REPO, SWEPT_LEARNING_RATES, write_sweep

submitit = pytest.importorskip('submitit')


def _run_interval(workdir) -> tuple[float, float]:
  """(start, end) of a run's last invocation: results.json is written at its end, after `wall_time_s`."""
  path = workdir / files.RESULTS
  end = path.stat().st_mtime
  return end - json.loads(path.read_text())['run']['wall_time_s'], end


def _checkpoint_times(workdir) -> list[float]:
  return sorted(p.stat().st_mtime for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())


def _wait_for(condition, timeout_s=300):
  deadline = time.monotonic() + timeout_s
  while not condition():
    assert time.monotonic() < deadline, 'timed out'
    time.sleep(0.1)


def test_each_parallel_run_gets_its_own_gpu_and_cores(monkeypatch):
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '3,5')
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1, 2, 3, 4})
  assert launchers.device_shares(2) == [{'gpu': '3', 'cores': [0, 2, 4]}, {'gpu': '5', 'cores': [1, 3]}]
  with pytest.raises(ValueError, match="--parallel 3: .* 5 CPU cores and, by CUDA_VISIBLE_DEVICES='3,5', 2 GPUs"):
    launchers.device_shares(3)
  monkeypatch.delenv('CUDA_VISIBLE_DEVICES')
  assert [share['gpu'] for share in launchers.device_shares(3)] == ['0', '1', '2']


def test_parallel_runs_at_once_and_resumes_the_interrupted_one(tmp_path, tfds_dir, builder64):
  definition = write_sweep(tmp_path, tfds_dir, {'optim.learning_rate': SWEPT_LEARNING_RATES}, [0], num_steps=6)
  out = tmp_path / 'out'
  first, second = sweep.expand(definition)
  config = sweep.run_config(definition, second, [])
  config.train.num_steps = 2  # "killed" after its step-2 checkpoint
  train.train_and_evaluate(config, str(out / second.name))
  (out / second.name / files.RESULTS).unlink()
  cli.main(['sweep', str(tmp_path / 'grid.py'), '--out', str(out), '--parallel', '2'])
  for run in (first, second):
    results = json.loads((out / run.name / files.RESULTS).read_text())
    assert results['run']['resumed_from_step'] == (2 if run is second else 0)
    with checkpoint.Checkpointer(out / run.name) as ckpt:
      assert ckpt.latest_step() == 6
  # At once: each run started before the other ended (run one after the other, one would start after the other's end).
  a, b = _run_interval(out / first.name), _run_interval(out / second.name)
  assert a[0] < b[1] and b[0] < a[1], (a, b)
  assert (out / 'results.md').exists() and 'learning_rate' in (out / 'results.csv').read_text()


def test_a_signal_stops_the_parallel_runs_with_a_checkpoint_and_a_rerun_resumes(tmp_path, tfds_dir, builder64):
  write_sweep(tmp_path, tfds_dir, {'optim.learning_rate': SWEPT_LEARNING_RATES}, [0], num_steps=400)
  out = tmp_path / 'out'
  command = [sys.executable, '-m', 'pneumojax.cli', 'sweep', str(tmp_path / 'grid.py'), '--out', str(out),
             '--parallel', '2', '--config.train.eval_every_steps=20']
  env = {**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu'}
  names = [run.name for run in sweep.expand(sweep.load_sweep(str(tmp_path / 'grid.py')))]
  process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  _wait_for(lambda: all((out / name / 'checkpoints').is_dir() and _checkpoint_times(out / name) for name in names))
  process.send_signal(signal.SIGINT)
  output = process.communicate(timeout=300)[0]
  assert process.returncode == 130, output
  assert 'stopped by signal 2 (2 runs ended, 0 not started)' in output
  stopped_at = {}
  for name in names:
    assert not (out / name / files.RESULTS).exists()
    with checkpoint.Checkpointer(out / name) as ckpt:
      stopped_at[name] = ckpt.latest_step()
    assert 0 < stopped_at[name] < 400  # a checkpoint of the step it stopped at
  # The rerun, shortened: both resume from where they stopped.
  rerun = subprocess.run(command + [f'--config.train.num_steps={max(stopped_at.values()) + 20}'],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stdout + rerun.stderr
  for name in names:
    assert json.loads((out / name / files.RESULTS).read_text())['run']['resumed_from_step'] == stopped_at[name]


def _local_slurm(monkeypatch):
  """`--launcher slurm` with submitit's local executor in place of SLURM."""
  slurm_executor = submitit.AutoExecutor
  monkeypatch.setattr(submitit, 'AutoExecutor', lambda folder, cluster: slurm_executor(folder, cluster='local'))
  monkeypatch.setenv('PYTHONPATH', str(REPO))


def test_slurm_launcher_runs_one_job_per_run_and_tables_collect_them(tmp_path, tfds_dir, builder64, monkeypatch):
  _local_slurm(monkeypatch)
  definition = write_sweep(tmp_path, tfds_dir, {'optim.learning_rate': SWEPT_LEARNING_RATES}, [0])
  out = tmp_path / 'out'
  cli.main(['sweep', str(tmp_path / 'grid.py'), '--out', str(out), '--launcher', 'slurm', '--partition', 'gpu',
            '--gpus_per_run', '0', '--time', '10'])
  runs = sweep.expand(definition)
  for run in runs:
    results = json.loads((out / run.name / files.RESULTS).read_text())
    assert results['config']['optim']['learning_rate'] == run.overrides['optim.learning_rate']
  assert len(list((out / 'slurm').glob('*/*_result.pkl'))) == 2  # one job each, with its result and logs
  csv_text = (out / 'results.csv').read_text()
  cli.main(['table', str(out)])
  assert (out / 'results.csv').read_text() == csv_text and csv_text.count('\n') == 3  # header and two groups


def test_slurm_jobs_ask_for_the_partition_gpus_cpus_and_time(tmp_path, monkeypatch):
  (tmp_path / 'srun').write_text('#!/bin/sh\n')  # what submitit looks for to believe it is on a SLURM cluster
  (tmp_path / 'srun').chmod(0o755)
  monkeypatch.setenv('PATH', f'{tmp_path}{os.pathsep}{os.environ["PATH"]}')
  executor = launchers.slurm_executor(tmp_path, 'gpu', 2, 16, 240)
  script = executor._executor._make_submission_file_text('python -m submitit.core._submit x', 'uid')
  for line in ('#SBATCH --partition=gpu', '#SBATCH --gpus-per-node=2', '#SBATCH --cpus-per-task=16',
               '#SBATCH --time=240', '#SBATCH --ntasks-per-node=1', '#SBATCH --signal=USR2@90'):
    assert line in script, script


def test_a_requeued_slurm_job_resumes_from_its_checkpoint(tmp_path, tfds_dir, builder64, monkeypatch):
  _local_slurm(monkeypatch)
  definition = write_sweep(tmp_path, tfds_dir, {'optim.learning_rate': [1e-3]}, [0], num_steps=200)
  run, out = sweep.expand(definition)[0], tmp_path / 'out'
  job_fn = launchers.SlurmRun(definition, run, out, ['--config.train.eval_every_steps=50'])
  delayed = job_fn.checkpoint()
  assert delayed.function is job_fn and not delayed.args  # the hook resubmits the same run
  executor = launchers.slurm_executor(tmp_path / 'jobs', None, 0, None, 10)
  job = executor.submit(job_fn)
  _wait_for(lambda: (out / run.name / 'checkpoints').is_dir() and _checkpoint_times(out / run.name))
  # The time-limit signal (USR2) to the job's task, as SLURM sends it: submitit's handler calls the checkpoint()
  # hook and requeues the job, which runs the same run again.
  controller = job._process.pid
  task, = map(int, (Path('/proc') / str(controller) / 'task' / str(controller) / 'children').read_text().split())
  os.kill(task, signal.SIGUSR2)
  assert job.result() == 'resumed'
  results = json.loads((out / run.name / files.RESULTS).read_text())
  assert 0 < results['run']['resumed_from_step'] < 200
  assert 'Requeued job' in job.stdout() + job.stderr()
