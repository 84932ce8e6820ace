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
from pneumojax.data import pipeline, prepare
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
  process = dict(process_index=jax.process_index(), process_count=jax.process_count())
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
  class_weights = None
  if config.data.class_balance == 'weights':
    class_weights = step_lib.class_weights_from_counts(train_info.class_counts)
  dp = parallel.DataParallel(config.train.parallel,
                             train_step=functools.partial(step_lib.train_step, class_weights=class_weights))
  state = dp.replicate(state)

  writer = metric_writers.create_default_writer(str(workdir), just_logging=jax.process_index() > 0)
  if start_step == 0:
    writer.write_hparams({k: str(v) for k, v in config_lib.flatten(config.to_dict()).items()})
  else:
    log.info('Resuming from the checkpoint at step %d in %s.', start_step, ckpt.directory)
  val_data, val_info = pipeline.eval_dataset(builder, config.data, config.data.val_split,
                                             config.train.eval_batch_size, **process)
  history = None
  if config.eval.report_test_selected:  # The ablation's optimistic protocol; see train/test_history.py.
    test_data, _ = pipeline.eval_dataset(builder, config.data, config.data.test_split,
                                         config.train.eval_batch_size, **process)
    history = test_history.load(workdir, up_to_step=start_step)
  log.info('Training %s on %s (%d images, classes %s) for %d steps of %d images (%d per epoch); '
           'validation on %s (%d images).', config.model.name, train_info.name, train_info.num_examples,
           train_info.class_counts, total_steps, batch_size, steps_per_epoch, val_info.name, val_info.num_examples)
  train_batches = pipeline.train_dataset(builder, config.data, batch_size, config.seed, start_step,
                                         **process).as_numpy_iterator()
  progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                             every_steps=config.train.log_every_steps)
  pending, window_start = [], (start_step, time.perf_counter())
  with preemption.StopOnSignal() as stop:
    for step in range(start_step + 1, total_steps + 1):
      state, step_metrics = dp.train_step(state, dp.shard(next(train_batches)))
      pending.append(step_metrics)
      progress(step)
      end_of_eval_period = step % eval_every == 0 or step == total_steps
      if step % config.train.log_every_steps == 0 or end_of_eval_period:
        train_metrics = _train_summary(dp, pending, workdir, ckpt)
        pending = []
        rate = (step - window_start[0]) * batch_size / (time.perf_counter() - window_start[1])
        window_start = (step, time.perf_counter())
        writer.write_scalars(step, {**_scalars(train_metrics, 'train'), 'train/images_per_sec': rate,
                                    'train/learning_rate': float(schedule(step))})
        log.info('step %d/%d (epoch %.2f): loss %.4f, accuracy %.4f, %.1f images/s', step, total_steps,
                 step / steps_per_epoch, train_metrics['loss'], train_metrics['accuracy'], rate)
      if end_of_eval_period:
        with progress.timed('eval'):
          val_results = evaluator.outputs(dp, state, val_data.as_numpy_iterator()).compute()
        writer.write_scalars(step, _scalars(val_results, 'val'))
        log.info('step %d validation (%s): %s', step, val_info.name,  # sensitivity etc. for two classes only
                 ', '.join(f'{k} {v:.4f}' for k, v in val_results.items() if isinstance(v, float)))
        if history is not None:
          test_results = evaluator.outputs(dp, state, test_data.as_numpy_iterator()).compute()
          history = test_history.record(workdir, history, step, test_results, write=jax.process_index() == 0)
        ckpt.save(step, dp.unreplicate(state), config, val_results)
        window_start = (step, time.perf_counter())  # Evaluation time is not training throughput.
      # After this step's validation: a signal during it must not cost the evaluation that may choose the model.
      if stop.should_stop(step):
        _stop(step, dp, state, ckpt, config, workdir, pending, stop.signum)
  writer.flush()
  return run.finish(config, workdir, builder, dp, ckpt, state, started, start_step)


def _stop(step, dp, state, ckpt, config, workdir, pending, signum):
  """Saves the state at this step boundary, unless its validation just did, and raises Interrupted (the caller
  exits with 128 + signum)."""
  if ckpt.latest_step() != step:
    if pending:  # steps not yet summarised: never save a NaN state
      _train_summary(dp, pending, workdir, ckpt)
    ckpt.save(step, dp.unreplicate(state), config)
  ckpt.close()
  raise preemption.Interrupted(
      f'Stopped by signal {signum} at step {step}; a checkpoint of this step is in {ckpt.directory}. '
      'Run the same command again to resume.', signum)


def _train_summary(dp, pending, workdir, ckpt) -> dict:
  """Averages the pending steps' metrics on the host; stops on a NaN/inf loss before anything is saved."""
  collection = metrics_lib.TrainMetrics.empty()
  for step_metrics in pending:
    collection = collection.merge(metrics_lib.TrainMetrics.single_from_model_output(**dp.metrics_to_host(step_metrics)))
  summary = {k: float(v) for k, v in collection.compute().items()}
  if not all(math.isfinite(v) for v in summary.values()):
    ckpt.close()
    raise FloatingPointError(
        f'The training loss became {summary["loss"]} (train metrics {summary}). Nothing was saved after it: '
        f'the last good checkpoint (step {ckpt.latest_step()}) is kept in {workdir}. Lower '
        '--config.optim.learning_rate or set --config.optim.grad_clip_norm, then start again in a new workdir '
        '(or in this one, to resume from that checkpoint).')
  return summary
