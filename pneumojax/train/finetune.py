"""The fine-tuning trainer (`train.cached_features=False`): train, validate, checkpoint, resume, then the final test.

The whole model trains on augmented batches for `train.num_steps` (or `num_epochs`), is validated (and
checkpointed) every `train.eval_every_steps` (or epoch), and resumes from the latest checkpoint of its workdir.
The protocol and the final test are train/run.py's.
"""

import functools
import logging
import math
import time

import jax
import ml_collections
from clu import metric_writers, periodic_actions
from etils import epath

from pneumojax import config as config_lib
from pneumojax.data import device, pipeline, prepare
from pneumojax.evaluation import metrics as metrics_lib
from pneumojax.train import checkpoint, evaluator, parallel, preemption, run, test_history
from pneumojax.train import step as step_lib

log = logging.getLogger(__name__)


def _scalars(results: dict, prefix: str) -> dict:
  return {f'{prefix}/{k}': v for k, v in results.items() if isinstance(v, (int, float)) and not math.isnan(v)}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, started: float) -> dict:
  """Trains (or resumes) in `workdir`; returns the results of run.finish. `started`: when the run began
  (`time.perf_counter()`), for its recorded wall time."""
  workdir = epath.Path(workdir)
  ckpt = checkpoint.Checkpointer(workdir, keep=config.train.checkpoint_keep)
  ckpt.check_config(config)  # Before any expensive work: a workdir of another model is an error.
  builder = prepare.get_builder(config.data)
  train_info = pipeline.split_info(builder, config.data.train_split, config.data)
  batch_size = config.train.batch_size
  steps_per_epoch = train_info.num_examples // batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'train.batch_size={batch_size} exceeds the {train_info.num_examples} training examples.')
  total_steps = config.train.num_steps if config.train.num_steps > 0 else config.train.num_epochs * steps_per_epoch
  eval_every = config.train.eval_every_steps or steps_per_epoch

  state, schedule = run.initial_state(config, steps_per_epoch, total_steps)
  state = ckpt.restore_latest(state) or run.new_run_state(config, state)
  start_step = int(state.step)
  feed = _TrainFeed(builder, config, train_info, start_step)
  state = feed.dp.replicate(state)
  dp = feed.dp

  writer = metric_writers.create_default_writer(str(workdir), just_logging=jax.process_index() > 0)
  if start_step == 0:
    writer.write_hparams({k: str(v) for k, v in config_lib.flatten(config.to_dict()).items()})
  else:
    log.info('Resuming from the checkpoint at step %d in %s.', start_step, ckpt.directory)
  val_data = run.eval_data(builder, config, dp, config.data.val_split)
  history = None
  if config.eval.report_test_selected:  # The ablation's optimistic protocol; see train/test_history.py.
    test_data = run.eval_data(builder, config, dp, config.data.test_split)
    history = test_history.load(workdir, up_to_step=start_step)
  log.info('Training %s on %s (%d images, classes %s; %s) for %d steps of %d images (%d per epoch) on %d devices; '
           'validation on %s.', config.model.name, train_info.name, train_info.num_examples,
           train_info.class_counts, feed.description, total_steps, batch_size, steps_per_epoch, jax.device_count(),
           config.data.val_split)
  progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                             every_steps=config.train.log_every_steps)
  pending, window_start, step = [], (start_step, time.perf_counter()), start_step
  with preemption.StopOnSignal() as stop:
    while step < total_steps:
      # Up to the next logging, validation or final step, at most one dispatch's worth.
      end = min(_next_multiple(step, config.train.log_every_steps), _next_multiple(step, eval_every), total_steps,
                step + feed.steps_per_dispatch)
      state, chunk_metrics = feed.run(state, end - step)
      pending.append(chunk_metrics)
      for step in range(step + 1, end + 1):  # CLU's periodic actions want every step.
        progress(step)
      end_of_eval_period = step % eval_every == 0 or step == total_steps
      if step % config.train.log_every_steps == 0 or end_of_eval_period:
        train_metrics = _train_summary(pending, workdir, ckpt)
        pending = []
        rate = (step - window_start[0]) * batch_size / (time.perf_counter() - window_start[1])
        window_start = (step, time.perf_counter())
        writer.write_scalars(step, {**_scalars(train_metrics, 'train'), 'train/images_per_sec': rate,
                                    'train/learning_rate': float(schedule(step))})
        log.info('step %d/%d (epoch %.2f): loss %.4f, accuracy %.4f, %.1f images/s', step, total_steps,
                 step / steps_per_epoch, train_metrics['loss'], train_metrics['accuracy'], rate)
      if end_of_eval_period:
        with progress.timed('eval'):
          val_results = evaluator.outputs(dp, state, val_data()).compute()
        writer.write_scalars(step, _scalars(val_results, 'val'))
        log.info('step %d validation (%s): %s', step, config.data.val_split,  # sensitivity etc.: two classes only
                 ', '.join(f'{k} {v:.4f}' for k, v in val_results.items() if isinstance(v, float)))
        if history is not None:
          test_results = test_history.metrics(evaluator.outputs(dp, state, test_data()))
          history = test_history.record(workdir, history, step, test_results, write=jax.process_index() == 0)
        ckpt.save(step, dp.unreplicate(state), config, val_results)
        window_start = (step, time.perf_counter())  # Evaluation time is not training throughput.
      # After this step's validation: a signal during it must not cost the evaluation that may choose the model.
      if stop.should_stop(step):
        _stop(step, dp, state, ckpt, config, workdir, pending, stop.signum)
  writer.flush()
  return run.finish(config, workdir, builder, dp, ckpt, state, started, start_step)


def _next_multiple(step: int, every: int) -> int:
  return (step // every + 1) * every


class _TrainFeed:
  """The training batches of a run: on the devices when the train split fits `data.device_memory_mb` (made inside
  the step, `train.steps_per_dispatch` steps per dispatch; data/device.py), else from the tf.data pipeline, one
  step per dispatch. `run(state, n)` trains n steps and returns (state, metrics to summarise)."""

  def __init__(self, builder, config, train_info, start_step: int):
    class_weights = None
    if config.data.class_balance == 'weights':
      class_weights = step_lib.class_weights_from_counts(train_info.class_counts)
    train_step = functools.partial(step_lib.train_step, class_weights=class_weights)
    eval_options = {}
    if device.eval_on_devices(config.data):
      eval_options = dict(make_eval_batch=functools.partial(device.eval_batch, data_config=config.data),
                          eval_chunk=config.train.eval_batch_size // jax.device_count())
    on_devices = device.fits(config.data, train_info.num_examples)
    if on_devices:
      # Several steps per dispatch spare accelerators the host's per-step overhead; XLA:CPU runs a step inside a
      # scan far slower (parallel.py), and a CPU step is long enough to hide the overhead.
      self.steps_per_dispatch = config.train.steps_per_dispatch or (
          1 if jax.default_backend() == 'cpu' else config.train.log_every_steps)
      make_batch = functools.partial(device.train_batch, seed=config.seed, batch_size=config.train.batch_size,
                                     data_config=config.data, class_counts=train_info.class_counts,
                                     axis_name=parallel.AXIS)
      self.dp = parallel.DataParallel(config.train.parallel, train_step=train_step, make_train_batch=make_batch,
                                      steps_per_dispatch=self.steps_per_dispatch, **eval_options)
      self._arrays = self.dp.replicate(device.read_split(builder, config.data.train_split, config.data).arrays())
      self.description = f'on the devices, {self.steps_per_dispatch} steps per dispatch'
    else:
      self.steps_per_dispatch = 1
      self.dp = parallel.DataParallel(config.train.parallel, train_step=train_step, **eval_options)
      self._batches = pipeline.train_dataset(builder, config.data, config.train.batch_size, config.seed, start_step,
                                             jax.process_index(), jax.process_count()).as_numpy_iterator()
      self.description = 'from the tf.data pipeline'
    self._on_devices = on_devices

  def run(self, state, num_steps: int):
    if self._on_devices:
      state, metrics = self.dp.train_steps(state, self._arrays, num_steps)
      return state, (metrics, num_steps)
    metrics = []
    for _ in range(num_steps):
      state, step_metrics = self.dp.train_step(state, self.dp.shard(next(self._batches)))
      metrics.append(step_metrics)
    return state, (metrics, None)


def _stop(step, dp, state, ckpt, config, workdir, pending, signum):
  """Saves the state at this step boundary, unless its validation just did, and raises Interrupted (the caller
  exits with 128 + signum)."""
  if ckpt.latest_step() != step:
    if pending:  # steps not yet summarised: never save a NaN state
      _train_summary(pending, workdir, ckpt)
    ckpt.save(step, dp.unreplicate(state), config)
  ckpt.close()
  raise preemption.Interrupted(
      f'Stopped by signal {signum} at step {step}; a checkpoint of this step is in {ckpt.directory}. '
      'Run the same command again to resume.', signum)


def _train_summary(pending, workdir, ckpt) -> dict:
  """Averages the pending steps' metrics on the host (blocking until they have run); stops on a NaN/inf loss before
  anything is saved."""
  collection = metrics_lib.TrainMetrics.empty()
  for step_metrics in _steps_metrics(pending):
    collection = collection.merge(metrics_lib.TrainMetrics.single_from_model_output(**step_metrics))
  summary = {k: float(v) for k, v in collection.compute().items()}
  if not all(math.isfinite(v) for v in summary.values()):
    ckpt.close()
    raise FloatingPointError(
        f'The training loss became {summary["loss"]} (train metrics {summary}). Nothing was saved after it: '
        f'the last good checkpoint (step {ckpt.latest_step()}) is kept in {workdir}. Lower '
        '--config.optim.learning_rate or set --config.optim.grad_clip_norm, then start again in a new workdir '
        '(or in this one, to resume from that checkpoint).')
  return summary


def _steps_metrics(pending) -> list[dict[str, float]]:
  """Each step's metrics from `_TrainFeed.run`'s: a list of per-step device metrics, or one dispatch's stacked
  metrics of which the first n steps are real. The metrics agree on all devices: one copy is read."""
  first_copy = lambda tree: jax.device_get(jax.tree.map(lambda x: x.addressable_data(0), tree))
  steps = []
  for metrics, num_steps in pending:
    if num_steps is None:
      steps += [{k: v.item() for k, v in first_copy(m).items()} for m in metrics]
    else:
      stacked = {k: v.reshape(-1) for k, v in first_copy(metrics).items()}
      steps += [{k: float(v[i]) for k, v in stacked.items()} for i in range(num_steps)]
  return steps
