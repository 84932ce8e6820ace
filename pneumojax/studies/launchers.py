"""Where a sweep's runs train, besides one after the other in this process (sweep.run_sweep):

- `run_parallel` (`pneumojax sweep FILE --parallel N`): N runs at once on this host, each in its own process
  with its own share of the host: one GPU (the i-th of $CUDA_VISIBLE_DEVICES, else GPU i) and every N-th CPU core.
  N must not exceed the host's GPUs (a process whose GPU does not exist would fall back to the CPU).
- `submit_slurm` (`--launcher slurm`): one SLURM array task per run, through submitit. A task preempted or
  reaching its time limit is requeued by submitit's `checkpoint` hook (SlurmRun.checkpoint: the same run again),
  and the rerun resumes from the run's latest checkpoint, as any rerun of `pneumojax train` does.

Every launcher trains each run with sweep.run_recorded: the same workdirs (`OUT/<run name>`), finished runs
skipped, interrupted ones resumed, failures recorded in sweep_error.txt, and `pneumojax table OUT` collects the
results of any of them. A signal (Ctrl-C, SIGTERM) to `--parallel` is passed on to the runs in progress, which stop
at a step boundary with a checkpoint; no further run starts.
"""

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
from pathlib import Path

from pneumojax.studies import sweep as sweep_lib
from pneumojax.studies import tables
from pneumojax.train import preemption

log = logging.getLogger(__name__)


def device_shares(count: int) -> list[dict]:
  """One share of this host per parallel run: {'gpu': its CUDA_VISIBLE_DEVICES entry, 'cores': CPU cores}."""
  visible = os.environ.get('CUDA_VISIBLE_DEVICES')
  gpus = visible.split(',') if visible else [str(i) for i in range(count)]
  cores = sorted(os.sched_getaffinity(0))
  if count > len(cores) or count > len(gpus):
    raise ValueError(f'--parallel {count}: this process may use {len(cores)} CPU cores and, by '
                     f'CUDA_VISIBLE_DEVICES={visible!r}, {len(gpus)} GPUs; give at most that many.')
  return [{'gpu': gpus[i], 'cores': cores[i::count]} for i in range(count)]


def _log_to_stderr(run_name: str) -> None:
  """In a run's own process: pneumojax's progress and everyone's warnings, each line naming the run."""
  logging.basicConfig(level=logging.WARNING, format=f'%(asctime)s {run_name} %(levelname)s %(message)s')
  logging.getLogger('pneumojax').setLevel(logging.INFO)


def _train_in_share(sweep, run, out, config_args, share, status) -> None:
  """A child process: one run on its share of the host; sends its status back through the `status` pipe."""
  os.setsid()  # Signals reach it from the parent only, once (a second Ctrl-C would stop it at once).
  os.environ['CUDA_VISIBLE_DEVICES'] = share['gpu']  # Before JAX starts its backends, at the first computation.
  os.sched_setaffinity(0, share['cores'])
  _log_to_stderr(run.name)
  try:
    status.send(sweep_lib.run_recorded(sweep, run, out, config_args))
  except preemption.Interrupted as e:
    status.send(f'interrupted: {e}')


def run_parallel(sweep, out, config_args=(), seeds=None, parallel: int = 2) -> dict[str, str]:
  """Runs every run of `sweep` under `out`, `parallel` at a time (`device_shares`), then writes the tables; returns
  {run name: status}. Raises preemption.Interrupted once the runs in progress have stopped after a signal."""
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  pending = sweep_lib.check_runs(sweep, config_args, seeds)
  free, active, statuses, stopped = device_shares(parallel), {}, {}, []
  context = multiprocessing.get_context('spawn')  # A fresh interpreter: JAX must not be forked.

  def pass_on(signum, frame):
    stopped.append(signum)
    for process, *_ in active.values():
      os.kill(process.pid, signum)

  previous = {signum: signal.signal(signum, pass_on) for signum in (signal.SIGINT, signal.SIGTERM)}
  try:
    while active or (pending and not stopped):
      while pending and free and not stopped:
        run, share = pending.pop(0), free.pop(0)
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_train_in_share, args=(sweep, run, out, list(config_args), share, send),
                                  name=run.name)
        process.start()
        send.close()
        active[process.sentinel] = (process, receive, run, share)
        log.info('Sweep %s: %s started on GPU %s, cores %s.', sweep.name, run.name, share['gpu'], share['cores'])
      for sentinel in multiprocessing.connection.wait(list(active)):
        process, receive, run, share = active.pop(sentinel)
        process.join()
        statuses[run.name] = (receive.recv() if receive.poll() else
                              f'failed: its process ended with exit code {process.exitcode}')
        free.append(share)
        log.info('Sweep %s: %s: %s', sweep.name, run.name, statuses[run.name])
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
  if stopped:
    raise preemption.Interrupted(f'Sweep {sweep.name} stopped by signal {stopped[0]} ({len(statuses)} runs ended, '
                                 f'{len(pending)} not started); run the same command again to resume.', stopped[0])
  tables.write_tables(out)
  return statuses


class SlurmRun:
  """One run of a sweep as a submitit job (a callable). Requeued after a preemption or its time limit, it is the
  same run again (`checkpoint`), which resumes from the run's latest checkpoint."""

  def __init__(self, sweep, run, out, config_args):
    self.sweep, self.run, self.out, self.config_args = sweep, run, str(out), list(config_args)

  def __call__(self) -> str:
    _log_to_stderr(self.run.name)
    try:
      return sweep_lib.run_recorded(self.sweep, self.run, self.out, self.config_args)
    except preemption.Interrupted as e:  # SIGTERM without a requeue: the job ends; a rerun of the sweep resumes.
      return f'interrupted: {e}'

  def checkpoint(self, *args, **kwargs):
    import submitit
    return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def slurm_executor(folder, partition: str | None, gpus_per_run: int, cpus_per_run: int | None,
                   time_min: int | None, cluster: str | None = 'slurm'):
  """A submitit executor of one task per job on one node; logs and job files go to `folder`."""
  try:
    import submitit
  except ImportError as e:
    raise SystemExit("--launcher slurm needs submitit: pip install 'pneumojax[cluster]'") from e
  executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
  executor.update_parameters(nodes=1, tasks_per_node=1, gpus_per_node=gpus_per_run, cpus_per_task=cpus_per_run,
                             timeout_min=time_min, slurm_partition=partition)
  return executor


def submit_slurm(sweep, out, executor, config_args=(), seeds=None) -> dict[str, str]:
  """Submits every run of `sweep` as one array of jobs of `executor`, waits for them and writes the tables;
  returns {run name: status}. Interrupting the wait leaves the jobs running: `pneumojax table OUT` collects them."""
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  runs = sweep_lib.check_runs(sweep, config_args, seeds)
  executor.update_parameters(name=f'pneumojax-{sweep.name}')
  with executor.batch():
    jobs = [executor.submit(SlurmRun(sweep, run, out, config_args)) for run in runs]
  log.info('Sweep %s: %d jobs submitted (%s); logs in %s. Waiting for them; interrupting the wait leaves them '
           'running, and `pneumojax table %s` collects their results.', sweep.name, len(jobs),
           ', '.join(job.job_id for job in jobs), executor.folder, out)
  statuses = {}
  for run, job in zip(runs, jobs):
    try:
      statuses[run.name] = job.result()
    except Exception as e:  # noqa: BLE001 -- a job that died (killed, out of memory): reported with its log.
      statuses[run.name] = f'failed: job {job.job_id} ({type(e).__name__}; see {job.paths.stderr})'
  tables.write_tables(out)
  return statuses
