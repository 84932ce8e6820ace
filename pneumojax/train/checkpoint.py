"""Orbax checkpoints of a run: per step, the train state's arrays, the resolved config and validation metrics.

Layout: `workdir/checkpoints/<step>/{state, config, metrics}`. Orbax writes a step into
`<step>.orbax-checkpoint-tmp-<time>` and renames it once complete, so a run killed mid-save leaves only a
temporary directory, which is never listed nor restored (on GCS orbax checks a commit file instead).
Retention: the latest `keep` steps plus the best one by validation AUC. A step that cannot be read (damaged on
disk) is moved aside to `checkpoints/damaged-<step>-<time>`, kept for inspection, where Orbax never lists it.
A run resumes only with the config it was saved with, but for the fields of MAY_CHANGE_ON_RESUME.

Saves are asynchronous: `save` returns once the arrays are copied to host memory. Call it from every process
(orbax writes from the primary one), and `close()` (or use `with`) before exiting so the last save lands.
"""

import json
import logging
import math
import time

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

from pneumojax import config as config_lib

BEST_METRIC = 'auc'
# Config fields that may differ when a run is resumed (`check_config`), and why; any other difference is refused:
# the seed, data, model, optimizer and batch size define the train state; eval_every_steps which steps compete for
# the best checkpoint; report_test_selected whether every evaluation's test metrics are recorded.
MAY_CHANGE_ON_RESUME = (
    *config_lib.DATA_LOCATION_FIELDS,  # where the data is, not what it is
    'train.num_epochs', 'train.num_steps',  # extending a run (a decaying schedule follows the new length from here)
    'train.log_every_steps', 'train.checkpoint_keep',  # logging; how many latest steps are kept besides the best
    'train.steps_per_dispatch',  # how many steps run per dispatch: the same steps either way
    'train.eval_batch_size',  # memory: every example is still evaluated once
    # How the run executes: jit or pmap, over which processes and devices, with which layer implementations (a
    # resumed run may find other hardware; the device count is not in the config either).
    'train.parallel', 'distributed', 'model.layers',
    # Applied after training, to the chosen checkpoint (evaluate_test: whether the test split is then evaluated; no
    # training step reads it, so a run searched on validation data resumes at its end to be tested once):
    'eval.threshold_rule', 'eval.target_sensitivity', 'eval.bootstrap_samples', 'eval.bootstrap_seed',
    'eval.evaluate_test',
)
log = logging.getLogger(__name__)


class MismatchError(ValueError):
  """The workdir holds checkpoints of another config, model or train state; they are left untouched."""


def _best_score(metrics) -> float:
  """Validation AUC, higher is better; an undefined (NaN) AUC ranks below every real one."""
  auc = metrics[BEST_METRIC]
  return -math.inf if math.isnan(auc) else auc


def _arrays(state) -> dict:
  """The saved part of a TrainState: its arrays. `apply_fn` and `tx` come from the code."""
  return {'step': state.step, 'params': state.params, 'batch_stats': state.batch_stats,
          'opt_state': state.opt_state, 'rng': state.rng}


def _may_change_on_resume(field: str) -> bool:
  return any(field == f or field.startswith(f'{f}.') for f in MAY_CHANGE_ON_RESUME)


def _shapes(tree) -> dict:
  return {path: tuple(getattr(leaf, 'shape', ()))
          for path, leaf in ocp.tree.to_flat_dict(tree, sep='/').items()}


class Checkpointer:
  """Saves and restores a run's checkpoints under `workdir/checkpoints`; never deletes them on a mismatch."""

  def __init__(self, workdir, keep: int = 2):
    self.workdir = epath.Path(workdir)
    if '://' not in str(workdir):  # Orbax needs an absolute path; a relative --workdir is relative to here.
      self.workdir = self.workdir.resolve()
    self.directory = self.workdir / 'checkpoints'
    preservation = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(n=keep),
        checkpoint_managers.BestN(get_metric_fn=_best_score, n=1, keep_checkpoints_without_metrics=False),
    ])
    self._manager = ocp.CheckpointManager(
        self.directory,
        # Handlers up front, so that a fresh manager can read metadata before any save or restore.
        item_handlers={'state': ocp.StandardCheckpointHandler(), 'config': ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(
            preservation_policy=preservation,
            best_fn=_best_score,  # Only for `best_step()`; retention is the policy above.
            create=False))  # The first save creates the directory; evaluating a wrong path must not.
    if self.directory.exists():
      incomplete = sorted(p.name for p in self.directory.glob('*.orbax-checkpoint-tmp-*'))
      if incomplete:
        log.warning('Ignoring %d incomplete checkpoint(s) in %s, left by an interrupted save: %s.',
                    len(incomplete), self.directory, ', '.join(incomplete))

  def save(self, step: int, state, config: ml_collections.ConfigDict, metrics: dict | None = None) -> bool:
    """Saves the (unreplicated) `state` at `step`; False if a checkpoint at `step` or later exists.

    `metrics` (JSON-serialisable, with 'auc') are the step's validation metrics; a step without them is
    kept only while it is among the latest `keep`.
    """
    return self._manager.save(step, metrics=metrics, args=ocp.args.Composite(
        # Host copies: every process holds the same replicated state, and Orbax saves host arrays once, from
        # the primary process (process-local device arrays cannot be saved in a multi-process run).
        state=ocp.args.StandardSave(jax.device_get(_arrays(state))),
        config=ocp.args.JsonSave(json.loads(config.to_json()))))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the highest validation AUC; None if no step has metrics."""
    return self._manager.best_step()

  def restore(self, step: int, target):
    """`target` (a TrainState, concrete or from `jax.eval_shape`) with its arrays read from `step`.

    Arrays (and the step: int or array) take the type, dtype and sharding of `target`. A checkpoint whose
    array tree or shapes differ from `target`'s (another model in the same workdir) raises ValueError and
    is left untouched.
    """
    self._manager.wait_until_finished()
    if step not in self._manager.all_steps():
      raise FileNotFoundError(f'No checkpoint at step {step} in {self.directory} (saved steps: '
                              f'{list(self._manager.all_steps())}).')
    self._check_shapes(step, _arrays(target))
    abstract = jax.tree.map(ocp.tree.to_shape_dtype_struct, jax.device_get(_arrays(target)))
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    return target.replace(**restored['state'])

  def restore_latest(self, target):
    """The latest readable checkpoint restored into `target`, or None if there is none (a fresh run).

    Later steps that cannot be read (damaged on disk) are moved aside (`_set_aside`). If no step can be read,
    nothing is moved (the cause may be the reader, not the files) and FileNotFoundError says so.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    unreadable = []
    for step in steps:
      try:
        restored = self.restore(step, target)
      except MismatchError:
        raise
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        log.warning('Checkpoint step %d in %s cannot be read (%s: %s); trying the step before it.',
                    step, self.directory, type(e).__name__, e)
        unreadable.append(step)
      else:
        self._set_aside(unreadable)  # Also when empty: every process reaches the same barrier.
        return restored
    if steps:
      raise FileNotFoundError(f'None of the checkpoints {steps} in {self.directory} can be read. Move that '
                              'folder away to start afresh.')
    return None

  def restore_best(self, target) -> tuple[int, object]:
    """(step, `target` restored from it) of the best readable checkpoint by validation AUC.

    A best step that cannot be read is moved aside (`_set_aside`) and the next best one tried.
    """
    while (step := self.best_step()) is not None:
      try:
        return step, self.restore(step, target)
      except MismatchError:
        raise
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        log.warning('The best checkpoint, step %d in %s, cannot be read (%s: %s); trying the next best.',
                    step, self.directory, type(e).__name__, e)
        self._set_aside([step])
    raise FileNotFoundError(f'No readable checkpoint with validation metrics in {self.directory}: train a model '
                            f'with --workdir={self.workdir} first.')

  def _set_aside(self, unreadable: list[int]) -> None:
    """Moves each unreadable step to `checkpoints/damaged-<step>-<time>`, kept for inspection.

    Orbax then no longer lists it: it is never restored nor chosen as the best, and a resumed run saves that step
    again. Called by every process, which all list the steps again once the primary one has moved them.
    """
    stamp = time.strftime('%Y%m%d-%H%M%S')
    for step in unreadable:
      aside = self.directory / f'damaged-{step}-{stamp}'
      if jax.process_index() == 0:
        (self.directory / str(step)).rename(aside)
        log.warning('Moved the unreadable checkpoint step %d to %s, for inspection: it is never restored nor '
                    'chosen.', step, aside)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('pneumojax: unreadable checkpoints moved aside')
    self._manager.reload()

  def saved_config(self, step: int | None = None) -> dict:
    """The resolved config saved with `step` (default: the latest) as a plain dict."""
    self._manager.wait_until_finished()
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {self.directory}: train a model with '
                              f'--workdir={self.workdir} first.')
    return self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))['config']

  def check_config(self, config: ml_collections.ConfigDict) -> None:
    """Raises MismatchError, before any training work, if the workdir's run was made with another config.

    Only the fields of MAY_CHANGE_ON_RESUME may differ; their changes are logged.
    """
    if self.latest_step() is None:
      return
    try:
      saved = self.saved_config()
    except Exception as e:  # a damaged latest step: restore_latest falls back to an earlier one
      log.warning('Cannot read the config of the latest checkpoint in %s (%s).', self.directory, e)
      return
    differing = config_lib.differences(saved, config)
    refused = {field: pair for field, pair in differing.items() if not _may_change_on_resume(field)}
    if refused:
      raise MismatchError(
          f'{self.workdir} holds checkpoints of model {saved["model"]["name"]!r} trained with another config '
          f'({"; ".join(f"{k}: saved {s!r}, requested {r!r}" for k, (s, r) in refused.items())}). The checkpoints '
          f'were left untouched: resume with the saved values, use a new --workdir, or remove {self.workdir} to '
          f'start afresh. Only {", ".join(MAY_CHANGE_ON_RESUME)} may change on resume.')
    for field, (old, new) in differing.items():
      log.info('Resuming with %s=%r (the checkpoints were saved with %r).', field, new, old)

  def _check_shapes(self, step: int, target_arrays) -> None:
    saved = _shapes(self._manager.item_metadata(step)['state'].tree)
    wanted = _shapes(target_arrays)
    # Params first in the message: they tell two models apart best.
    paths = sorted(saved.keys() | wanted.keys(), key=lambda p: (not p.startswith('params/'), p))
    differing = [f'{path}: saved {saved.get(path, "absent")}, requested {wanted.get(path, "absent")}'
                 for path in paths if saved.get(path) != wanted.get(path)]
    if differing:
      raise MismatchError(
          f'{self.workdir} holds a checkpoint (step {step}) of model '
          f'{self.saved_config(step)["model"]["name"]!r} that does not fit the requested train state '
          f'({len(differing)} arrays differ, e.g. {"; ".join(differing[:3])}). The checkpoint was left '
          f'untouched: use a new --workdir, or remove {self.workdir} to start afresh.')

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
