"""Evaluate a run's checkpoint (by default the best on validation) on a split; writes eval/<split>/metrics.json."""

import json
import logging

import jax
import ml_collections
from etils import epath

from pneumojax.data import paths, pipeline
from pneumojax.train import checkpoint, loop, parallel, step as step_lib

log = logging.getLogger(__name__)


def evaluate_checkpoint(workdir: str, split: str = 'test', step: int | None = None) -> dict:
  workdir = epath.Path(workdir)
  if not (workdir / 'checkpoints').is_dir():
    raise FileNotFoundError(f'{workdir} holds no checkpoints/ folder: train first with '
                            f'`pneumojax train --workdir {workdir} ...`, or pass the workdir of a trained run.')
  with checkpoint.Checkpointer(workdir) as ckpt:
    step = ckpt.best_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint with validation metrics in {ckpt.directory}.')
    config = ml_collections.ConfigDict(ckpt.saved_config(step))
    loop.check_batch_sizes(config)
    # The optimizer's schedule length does not change the state's structure: any positive step counts do.
    state, _ = loop.initial_state(config, steps_per_epoch=1, total_steps=1)
    state = ckpt.restore(step, state)
  builder = paths.get_builder(config.data)
  dp = parallel.DataParallel(config.train.parallel, step_lib.train_step, step_lib.eval_step)
  data, info = pipeline.eval_dataset(builder, config.data, split, config.train.eval_batch_size,
                                     jax.process_index(), jax.process_count())
  results = {'split': split, 'checkpoint_step': step, 'threshold': 0.5,
             **loop.evaluate(dp, dp.replicate(state), data).compute(), 'data': config.data.to_dict()}
  out = workdir / 'eval' / split
  if jax.process_index() == 0:
    out.mkdir(parents=True, exist_ok=True)
    (out / 'metrics.json').write_text(json.dumps(results, indent=1, default=str))
  log.info('%s (%d images), checkpoint step %d: %s -> %s', split, info.num_examples, step,
               {k: v for k, v in results.items() if isinstance(v, float)}, out / 'metrics.json')
  return results
