"""`train_and_evaluate(config, workdir)`: train, evaluate on validation data, checkpoint, resume, report.

Protocol: the checkpoint with the best validation ROC-AUC (`config.data.val_split`, by default patients held
out of the official train split) is the model; the test split is evaluated once, with that checkpoint, at the
end. The test set never chooses anything, except in the separately labelled `test_selected` entry that
`config.eval.report_test_selected` adds for the ablation of that choice (train/test_selected.py).
"""

import functools
import logging
import math
import time

import jax
import ml_collections
from clu import metric_writers, periodic_actions
from etils import epath

from pneumojax import metrics as metrics_lib
from pneumojax import files, models, provenance, threshold
from pneumojax.data import paths, pipeline
from pneumojax.train import checkpoint, distributed, optim, parallel, preemption, test_selected, validate
from pneumojax.train import step as step_lib
from pneumojax.train.state import create_train_state, with_pretrained

RESULTS = 'results.json'
log = logging.getLogger(__name__)


def input_shape(config) -> tuple[int, int, int]:
  size = config.data.image_size or config.data.resolution
  return size, size, config.data.channels


def build_model(config):
  return models.get_model(config.model.name, num_classes=config.model.num_classes, dtype=config.model.dtype,
                          freeze_batch_norm=config.model.freeze_batch_norm, **config.model.kwargs)


def initial_state(config, steps_per_epoch: int, total_steps: int):
  """A fresh train state of the configured model and optimizer, on the host."""
  tx, schedule = optim.make_optimizer(config.optim, steps_per_epoch, total_steps)
  model, shape = build_model(config), input_shape(config)
  # Jitted: initialising op by op takes many seconds for the larger models on CPU.
  init = jax.jit(lambda rng: create_train_state(model, tx, rng, shape))
  return init(jax.random.key_data(jax.random.key(config.seed))), schedule


def new_run_state(config, state):
  """How a new run starts from a fresh `state`: with the pretrained variables of `model.init_from`, if set."""
  return with_pretrained(state, config.model.init_from) if config.model.init_from else state


def evaluate(dp: parallel.DataParallel, state, dataset) -> metrics_lib.EvalMetrics:
  """One pass over an eval dataset (padded batches); every real example counted once."""
  collection = metrics_lib.EvalMetrics.empty()
  for batch in dataset.as_numpy_iterator():
    outputs = dp.eval_step(state, dp.shard(batch))
    collection = collection.merge(metrics_lib.EvalMetrics.single_from_model_output(**outputs))
  return collection


def _scalars(results: dict, prefix: str) -> dict:
  return {f'{prefix}/{k}': v for k, v in results.items() if isinstance(v, (int, float)) and not math.isnan(v)}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) in `workdir`; returns the test metrics of the best-on-validation checkpoint."""
  started = time.perf_counter()  # results.json's wall time: everything this call does, compilation included.
  distributed.initialize(config.distributed)  # First: nothing may start JAX's backends before it.
  validate.validate(config, workdir)
  if config.train.cached_features:
    from pneumojax.train import linear_probe  # Imported here: it builds on this module.
    return linear_probe.train_and_evaluate(config, workdir, started=started)
  workdir = epath.Path(workdir)
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
  state = ckpt.restore_latest(state) or new_run_state(config, state)
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
  test_history = None
  if config.eval.report_test_selected:  # The ablation's optimistic protocol; see train/test_selected.py.
    test_data, _ = pipeline.eval_dataset(builder, config.data, config.data.test_split,
                                         config.train.eval_batch_size, **process)
    test_history = test_selected.load(workdir, up_to_step=start_step)
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
          val_results = evaluate(dp, state, val_data).compute()
        writer.write_scalars(step, _scalars(val_results, 'val'))
        log.info('step %d validation (%s): %s', step, val_info.name,  # sensitivity etc. for two classes only
                 ', '.join(f'{k} {v:.4f}' for k, v in val_results.items() if isinstance(v, float)))
        if test_history is not None:
          test_history = test_selected.record(workdir, test_history, step, evaluate(dp, state, test_data).compute(),
                                              write=jax.process_index() == 0)
        ckpt.save(step, dp.unreplicate(state), config, val_results)
        window_start = (step, time.perf_counter())  # Evaluation time is not training throughput.
      # After this step's validation: a signal during it must not cost the evaluation that may choose the model.
      if stop.should_stop(step):
        _stop(step, dp, state, ckpt, config, workdir, pending, stop.signum)
  writer.flush()
  return final_test(config, workdir, builder, dp, ckpt, state, started=started, start_step=start_step)


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


def final_test(config, workdir, builder, dp, ckpt, state, started: float | None = None, start_step: int = 0) -> dict:
  """Evaluates the best-on-validation checkpoint on the test split once; writes results.json.

  `started` (a `time.perf_counter()` value) is when the run began, for the recorded wall time; `start_step` the
  step it resumed from (0: a fresh run).
  """
  best_step, best_state = ckpt.restore_best(dp.unreplicate(state))
  state = dp.replicate(best_state)
  ckpt.close()
  process = dict(process_index=jax.process_index(), process_count=jax.process_count())
  results, collected = {}, {}
  for role, split in (('val', config.data.val_split), ('test', config.data.test_split)):
    data, info = pipeline.eval_dataset(builder, config.data, split, config.train.eval_batch_size, **process)
    collected[role] = evaluate(dp, state, data)
    results[role] = {'split': split, **collected[role].compute()}
  # Chosen on the validation outputs only; `pneumojax predict` reads it from the workdir.
  point = threshold.operating_point(collected['val'].outputs.compute(), config.eval, config.data.val_split,
                                    best_step)
  if point:
    results['test_at_val_threshold'] = {'split': config.data.test_split, **point,
                                        **collected['test'].compute(point['threshold'])}
  results['checkpoint_step'] = best_step
  decision = (f'metrics at the fixed threshold 0.5 and, in test_at_val_threshold, at the threshold chosen on the '
              f'{config.data.val_split!r} outputs of that checkpoint ({point["rule"]})' if point
              else 'the most probable class predicted')
  every = f'{config.train.eval_every_steps} steps' if config.train.eval_every_steps else 'epoch'
  held_out = (f' (patient-disjoint: {config.data.val_fraction:.0%} of the official train patients, seed '
              f'{config.data.val_seed})' if config.data.val_split == 'val_pd' else '')
  results['protocol'] = (
      f'Checkpoint chosen by the highest ROC-AUC on {config.data.val_split!r}{held_out} among the evaluations '
      f'every {every}; {decision}; the {config.data.test_split!r} split evaluated once, after training, with '
      'that checkpoint.')
  if config.eval.report_test_selected:
    results['test_selected'] = test_selected.entry(config, test_selected.load(workdir))
  results['config'] = config.to_dict()
  results['run'] = provenance.run_info(time.perf_counter() - (started or time.perf_counter()), start_step)
  if jax.process_index() == 0:
    files.write_json_atomic(workdir / RESULTS, results)
    if point:
      threshold.save(workdir, point)
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
