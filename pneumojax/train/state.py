"""The train state: everything a step needs and a checkpoint stores."""

from typing import Any

import flax
import jax
import optax
from flax.training import train_state

from pneumojax import weights


class TrainState(train_state.TrainState):
  """`step`, `params`, `opt_state` (from flax) plus BatchNorm statistics and the run's base PRNG key.

  Step randomness is `fold_in(rng, step)`, so a resumed run draws the same keys as an uninterrupted one.
  """
  batch_stats: Any = flax.core.FrozenDict()
  rng: jax.Array = None


def create_train_state(model, tx: optax.GradientTransformation, rng: jax.Array, input_shape) -> TrainState:
  """Initialises parameters on a single example of `input_shape` (H, W, C)."""
  init_rng, state_rng = jax.random.split(rng)
  variables = model.init({'params': init_rng, 'dropout': init_rng},
                         jax.numpy.zeros((1, *input_shape), jax.numpy.float32), train=False)
  return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                           batch_stats=variables.get('batch_stats', {}), rng=state_rng)


def with_pretrained(state: TrainState, directory) -> TrainState:
  """`state` with every variable but the head read from the pretrained checkpoint in `directory`.

  See pneumojax.weights.restore; the optimizer state is initialised afresh for the new parameters.
  """
  variables = weights.restore(directory, {'params': state.params, 'batch_stats': state.batch_stats})
  variables = jax.tree.map(jax.numpy.asarray, variables)
  return state.replace(params=variables['params'], batch_stats=variables.get('batch_stats', {}),
                       opt_state=state.tx.init(variables['params']))
