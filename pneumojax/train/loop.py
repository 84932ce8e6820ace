"""`train_and_evaluate(config, workdir)`: train, evaluate on validation data, checkpoint, resume, report.

Protocol: the checkpoint with the best validation ROC-AUC (`config.data.val_split`, by default patients held
out of the official train split) is the model; the test split is evaluated once, with that checkpoint, at the
end. The test set never chooses anything.
"""

import functools
import json
import logging
import math
import time

import jax
import ml_collections
import numpy as np
from clu import metric_writers, periodic_actions
from etils import epath

from pneumojax import metrics as metrics_lib
from pneumojax import models
from pneumojax.data import paths, pipeline
from pneumojax.train import checkpoint, optim, parallel, step as step_lib
from pneumojax.train.state import create_train_state

RESULTS = 'results.json'
log = logging.getLogger(__name__)


def input_shape(config) -> tuple[int, int, int]:
  size = config.data.image_size or config.data.resolution
  return size, size, config.data.channels


def build_model(config):
  return models.get_model(config.model.name, num_classes=config.model.num_classes, dtype=config.model.dtype,
                          **config.model.kwargs)


def initial_state(config, steps_per_epoch: int, total_steps: int):
  """A fresh train state of the configured model and optimizer, on the host."""
  tx, schedule = optim.make_optimizer(config.optim, steps_per_epoch, total_steps)
  model, shape = build_model(config), input_shape(config)
  # Jitted: initialising op by op takes many seconds for the larger models on CPU.
  init = jax.jit(lambda rng: create_train_state(model, tx, rng, shape))
  return init(jax.random.key_data(jax.random.key(config.seed))), schedule


def evaluate(dp: parallel.DataParallel, state, dataset) -> metrics_lib.EvalMetrics:
  """One pass over an eval dataset (padded batches); every real example counted once."""
  collection = metrics_lib.EvalMetrics.empty()
  for batch in dataset.as_numpy_iterator():
    outputs = dp.eval_step(state, dp.shard(batch))
    collection = collection.merge(metrics_lib.EvalMetrics.single_from_model_output(**outputs))
  return collection


def _scalars(results: dict, prefix: str) -> dict:
  return {f'{prefix}/{k}': v for k, v in results.items() if isinstance(v, (int, float)) and not math.isnan(v)}


def check_batch_sizes(config) -> None:
  for name in ('batch_size', 'eval_batch_size'):
    size = config.train[name]
    if size <= 0 or size % jax.device_count():
      raise ValueError(f'train.{name}={size} must be a positive multiple of the {jax.device_count()} devices: '
                       f'set --config.train.{name} to a multiple of {jax.device_count()}.')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) in `workdir`; returns the test metrics of the best-on-validation checkpoint."""
  workdir = epath.Path(workdir)
  check_batch_sizes(config)
  ckpt = checkpoint.Checkpointer(workdir, keep=config.train.checkpoint_keep)
  ckpt.check_config(config)  # Before any expensive work: a workdir of another model is an error.
  builder = paths.get_builder(config.data)
  process = dict(process_index=jax.process_index(), process_count=jax.process_count())
  train_info = pipeline.split_info(builder, config.data.train_split, config.data)
  batch_size = config.train.batch_size
  steps_per_epoch = train_info.num_examples // batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'train.batch_size={batch_size} exceeds the {train_info.num_examples} training examples.')
  total_steps = config.train.num_steps if config.train.num_steps > 0 else config.train.num_epochs * steps_per_epoch
  eval_every = config.train.eval_every_steps or steps_per_epoch

  state, schedule = initial_state(config, steps_per_epoch, total_steps)
  state = ckpt.restore_latest(state) or state
  start_step = int(state.step)
  class_weights = None
  if config.data.class_balance == 'weights':
    class_weights = step_lib.class_weights_from_counts(train_info.class_counts)
  dp = parallel.DataParallel(config.train.parallel,
                             functools.partial(step_lib.train_step, class_weights=class_weights),
                             step_lib.eval_step)
  state = dp.replicate(state)

  writer = metric_writers.create_default_writer(str(workdir), just_logging=jax.process_index() > 0)
  if start_step == 0:
    writer.write_hparams({k: str(v) for k, v in _flatten(config.to_dict()).items()})
  else:
    log.info('Resuming from the checkpoint at step %d in %s.', start_step, ckpt.directory)
  val_data, val_info = pipeline.eval_dataset(builder, config.data, config.data.val_split,
                                             config.train.eval_batch_size, **process)
  log.info('Training %s on %s (%d images, classes %s) for %d steps of %d images (%d per epoch); '
               'validation on %s (%d images).', config.model.name, train_info.name, train_info.num_examples,
               train_info.class_counts, total_steps, batch_size, steps_per_epoch, val_info.name,
               val_info.num_examples)
  train_batches = pipeline.train_dataset(builder, config.data, batch_size, config.seed, start_step,
                                         **process).as_numpy_iterator()
  progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                             every_steps=config.train.log_every_steps)
  pending, window_start = [], (start_step, time.perf_counter())
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
      writer.write_scalars(step, {**_scalars(train_metrics, 'train'), 'train/learning_rate': float(schedule(step)),
                                  'train/images_per_sec': rate})
      log.info('step %d/%d (epoch %.2f): loss %.4f, accuracy %.4f, %.1f images/s', step, total_steps,
                   step / steps_per_epoch, train_metrics['loss'], train_metrics['accuracy'], rate)
    if end_of_eval_period:
      with progress.timed('eval'):
        val_results = evaluate(dp, state, val_data).compute()
      writer.write_scalars(step, _scalars(val_results, 'val'))
      log.info('step %d validation (%s): auc %.4f, accuracy %.4f, sensitivity %.4f, specificity %.4f',
                   step, val_info.name, val_results['auc'], val_results['accuracy'], val_results['sensitivity'],
                   val_results['specificity'])
      ckpt.save(step, dp.unreplicate(state), config, val_results)
      window_start = (step, time.perf_counter())  # Evaluation time is not training throughput.
  writer.flush()
  return final_test(config, workdir, builder, dp, ckpt, state)


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


def final_test(config, workdir, builder, dp, ckpt, state) -> dict:
  """Evaluates the best-on-validation checkpoint on the test split once; writes results.json."""
  best_step = ckpt.best_step()
  state = dp.replicate(ckpt.restore(best_step, dp.unreplicate(state)))
  ckpt.close()
  process = dict(process_index=jax.process_index(), process_count=jax.process_count())
  results = {}
  for role, split in (('val', config.data.val_split), ('test', config.data.test_split)):
    data, info = pipeline.eval_dataset(builder, config.data, split, config.train.eval_batch_size, **process)
    results[role] = {'split': split, **evaluate(dp, state, data).compute()}
  results['checkpoint_step'] = best_step
  results['protocol'] = (
      f'Checkpoint chosen by the highest ROC-AUC on {config.data.val_split!r} (patient-disjoint: '
      f'{config.data.val_fraction:.0%} of the official train patients, seed {config.data.val_seed}) among the '
      f'evaluations every {config.train.eval_every_steps or "epoch"} (steps); metrics at the fixed threshold 0.5; '
      f'the {config.data.test_split!r} split evaluated once, after training, with that checkpoint.')
  results['config'] = config.to_dict()
  if jax.process_index() == 0:
    (workdir / RESULTS).write_text(json.dumps(results, indent=1, default=str))
  log.info('Test (%s) with the checkpoint of step %d: %s', config.data.test_split, best_step,
               {k: v for k, v in results['test'].items() if k != 'confusion_matrix'})
  return results


def _flatten(tree: dict, prefix: str = '') -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat
