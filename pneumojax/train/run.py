"""What the trainers (train/finetune.py, train/linear_probe.py) share: the model and train state of a config, how a
new run starts, and how a run finishes, by the final test of its best checkpoint written to results.json.

Protocol: the checkpoint with the best validation ROC-AUC (`config.data.val_split`, by default patients held
out of the official train split) is the model; the test split is evaluated once, with that checkpoint, at the
end. The test set never chooses anything, except in the separately labelled `test_selected` entry that
`config.eval.report_test_selected` adds for the ablation of that choice (train/test_history.py). With
`config.eval.evaluate_test=False` (searching a recipe on validation data) the test split is not read at all.
"""

import logging
import time

import jax

from pneumojax import models
from pneumojax.data import device, pipeline, tasks
from pneumojax.train import evaluator, files, optim, parallel, provenance, test_history
from pneumojax.train.state import create_train_state, with_pretrained

log = logging.getLogger(__name__)


def build_model(config):
  """The configured model, with one output per class of `data.task`, its BatchNorm and dropout over the global
  batch of the devices' `parallel.AXIS`."""
  return models.get_model(config.model.name, num_classes=tasks.num_classes(config.data), dtype=config.model.dtype,
                          freeze_batch_norm=config.model.freeze_batch_norm, layers=config.model.layers,
                          batch_axis=parallel.AXIS, **config.model.kwargs)


def initial_state(config, steps_per_epoch: int, total_steps: int):
  """(a fresh train state of the configured model and optimizer on the host, the learning-rate schedule)."""
  tx, schedule = optim.make_optimizer(config.optim, steps_per_epoch, total_steps)
  model, shape = build_model(config), pipeline.input_shape(config.data)
  # Jitted: initialising op by op takes many seconds for the larger models on CPU.
  init = jax.jit(lambda rng: create_train_state(model, tx, rng, shape))
  return init(jax.random.key_data(jax.random.key(config.seed))), schedule


def abstract_state(config):
  """The configured train state as shapes and dtypes (`jax.ShapeDtypeStruct`s), computing nothing: the template a
  checkpoint is restored into. The optimizer's schedule length does not change the state's structure."""
  tx, _ = optim.make_optimizer(config.optim, steps_per_epoch=1, total_steps=1)
  model, shape = build_model(config), pipeline.input_shape(config.data)
  return jax.eval_shape(lambda rng: create_train_state(model, tx, rng, shape),
                        jax.random.key_data(jax.random.key(config.seed)))


def new_run_state(config, state):
  """How a new run starts from a fresh `state`: with the pretrained variables of `model.init_from`, if set."""
  return with_pretrained(state, config.model.init_from) if config.model.init_from else state


def eval_batches(builder, config, split: str):
  """One pass over `split` as this process's numpy batches, the last one padded and masked (for the evaluator)."""
  dataset, _ = pipeline.eval_dataset(builder, config.data, split, config.train.eval_batch_size, jax.process_index(),
                                     jax.process_count())
  return dataset.as_numpy_iterator()


def eval_data(builder, config, dp, split: str):
  """`split` for the evaluator, as a function giving one pass over it: the split put on the devices once, where `dp`
  evaluates on the devices and the split fits (data/device.py), else this process's tf.data batches."""
  size = config.train.eval_batch_size
  num_examples = -(-pipeline.split_info(builder, split, config.data).num_examples // size) * size
  if dp.evaluates_on_devices and device.eval_on_devices(config.data) and device.fits(config.data, num_examples):
    data = device.read_split(builder, split, config.data, pad_to=size)
    rows = num_examples // jax.process_count()  # This process's contiguous share of every array.
    local = {k: v[jax.process_index() * rows:(jax.process_index() + 1) * rows] for k, v in data.arrays().items()}
    on_devices = dp.put_sharded(split, local)
    return lambda: on_devices
  return lambda: eval_batches(builder, config, split)


def finish(config, workdir, builder, dp, ckpt, state, started: float, start_step: int = 0) -> dict:
  """Evaluates the best-on-validation checkpoint on the test split once; writes results.json (and threshold.json).

  With `config.eval.evaluate_test=False` the test split is not read: results.json holds the validation metrics
  only, `val` and `val_at_val_threshold` (at the threshold chosen on those same outputs). `state` is the run's
  last state, replicated by `dp`; `started` (a `time.perf_counter()` value) is when the run began, for the
  recorded wall time; `start_step` the step it resumed from (0: a fresh run).
  """
  best_step, best_state = ckpt.restore_best(dp.unreplicate(state))
  state = dp.replicate(best_state)
  ckpt.close()
  val, test = config.data.val_split, config.data.test_split
  evaluated = (val, test) if config.eval.evaluate_test else (val,)
  collected, point = evaluator.evaluate(config, dp, state, best_step,
                                        {split: eval_data(builder, config, dp, split)() for split in evaluated})
  results = {'val': {'split': val, **collected[val].compute()}}
  if config.eval.evaluate_test:
    results['test'] = {'split': test, **collected[test].compute()}
    if point:
      results['test_at_val_threshold'] = {'split': test, **point, **collected[test].compute(point['threshold'])}
  elif point:
    results['val_at_val_threshold'] = {
        'split': val, **point, **collected[val].compute(point['threshold']),
        'protocol': f'OPTIMISTIC: the threshold was chosen on these same {val!r} outputs, and the checkpoint by their '
                    'ROC-AUC; for comparing recipes on validation data, not a held-out estimate.'}
  results['checkpoint_step'] = best_step
  at_val = 'test_at_val_threshold' if config.eval.evaluate_test else 'val_at_val_threshold'
  decision = (f'metrics at the fixed threshold 0.5 and, in {at_val}, at the threshold chosen on the {val!r} outputs '
              f'of that checkpoint ({point["rule"]})' if point else 'the most probable class predicted')
  every = f'{config.train.eval_every_steps} steps' if config.train.eval_every_steps else 'epoch'
  held_out = (f' (patient-disjoint: {config.data.val_fraction:.0%} of the official train patients, seed '
              f'{config.data.val_seed})' if val == 'val_pd' else '')
  tested = (f'the {test!r} split evaluated once, after training, with that checkpoint' if config.eval.evaluate_test
            else f'the {test!r} split was not read (eval.evaluate_test=False): validation metrics only, measured on '
                 'the split that chose the checkpoint and the threshold')
  results['protocol'] = (
      f'Checkpoint chosen by the highest ROC-AUC on {val!r}{held_out} among the evaluations every {every}; '
      f'{decision}; {tested}.')
  if config.eval.report_test_selected:
    results['test_selected'] = test_history.entry(config, test_history.load(workdir))
  results['config'] = config.to_dict()
  results['run'] = provenance.run_info(time.perf_counter() - started, start_step)
  if jax.process_index() == 0:
    files.save_results(workdir, results)
    if point:  # `pneumojax predict` labels images with it.
      files.save_threshold(workdir, point)
  logged = ('test', 'test_at_val_threshold') if config.eval.evaluate_test else ('val', 'val_at_val_threshold')
  for name in (name for name in logged if name in results):
    log.info('%s (%s) with the checkpoint of step %d: %s', name, results[name]['split'], best_step,
             {k: v for k, v in results[name].items() if isinstance(v, (int, float))})
  return results
