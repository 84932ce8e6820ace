"""`load_run(workdir)`: a trained run's config, model and checkpoint, as `pneumojax eval`, `report`, `predict` and
`explain` read it."""

import dataclasses

import flax.linen as nn
import ml_collections
from etils import epath

from pneumojax import config as config_lib
from pneumojax.data import tasks
from pneumojax.train import checkpoint, files
from pneumojax.train.run import abstract_state, build_model
from pneumojax.train.state import TrainState


@dataclasses.dataclass
class Run:
  """A trained run: `state` is its checkpoint of `step`."""
  workdir: epath.Path
  config: ml_collections.ConfigDict
  model: nn.Module
  state: TrainState
  step: int

  @property
  def variables(self) -> dict:
    """The model's variables: 'params', and 'batch_stats' if it has BatchNorm."""
    batch_stats = {'batch_stats': self.state.batch_stats} if self.state.batch_stats else {}
    return {'params': self.state.params, **batch_stats}

  def threshold(self) -> dict | None:
    """The operating point chosen on validation for this checkpoint (threshold.json); None for more than two
    classes, which predict the most probable class."""
    return files.load_threshold(self.workdir, self.step) if tasks.num_classes(self.config.data) == 2 else None


def load_run(workdir, step: int | None = None) -> Run:
  """The run in `workdir` with its best-on-validation checkpoint, or with checkpoint `step`.

  The saved config is laid over today's defaults (config.from_saved): fields added since the run was trained
  take their default. The checkpoint is restored into the config's abstract train state.
  """
  workdir = epath.Path(workdir)
  if not (workdir / 'checkpoints').is_dir():
    raise FileNotFoundError(f'{workdir} holds no checkpoints/ folder: train first with '
                            f'`pneumojax train --workdir {workdir} ...`, or pass the workdir of a trained run.')
  with checkpoint.Checkpointer(workdir) as ckpt:
    step = ckpt.best_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint with validation metrics in {ckpt.directory}.')
    config = config_lib.from_saved(ckpt.saved_config(step))
    state = ckpt.restore(step, abstract_state(config))
  return Run(workdir, config, build_model(config), state, step)
