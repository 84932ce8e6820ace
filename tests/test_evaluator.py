"""The one evaluator: every real example of padded batches counted once, and the threshold chosen on the
validation outputs only."""

import jax
import numpy as np
import optax
import pytest

from pneumojax import models
from pneumojax.config import default_config
from pneumojax.evaluation import threshold
from pneumojax.train import evaluator
from pneumojax.train.parallel import DataParallel
from pneumojax.train.state import create_train_state

pytestmark = pytest.mark.smoke


@pytest.fixture(scope='module')
def model_state():
  model = models.get_model('simple_cnn', widths=(4,), dropout_rate=0.0)
  return model, create_train_state(model, optax.sgd(0.1), jax.random.key(0, impl='rbg'), (8, 8, 1))


def _batches(seed, num_real, batch_size=4):
  """Padded batches of `num_real` random images: the last batch filled with masked copies of garbage."""
  rng = np.random.default_rng(seed)
  total = -(-num_real // batch_size) * batch_size
  images = rng.normal(size=(total, 8, 8, 1)).astype(np.float32)
  labels = np.arange(total, dtype=np.int32) % 2
  mask = (np.arange(total) < num_real).astype(np.float32)
  images[num_real:] = 1e3  # padding that would show in any metric
  return [{'image': images[i:i + batch_size], 'label': labels[i:i + batch_size], 'mask': mask[i:i + batch_size]}
          for i in range(0, total, batch_size)]


def _probs(model, state, batches):
  """The model's probabilities of the real examples, computed directly."""
  images = np.concatenate([b['image'][b['mask'] > 0] for b in batches])
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  return np.asarray(jax.nn.softmax(model.apply(variables, images, train=False)))


def test_outputs_count_every_real_example_once(model_state):
  model, state = model_state
  dp = DataParallel('jit')
  batches = _batches(0, num_real=10)
  collected = evaluator.outputs(dp, dp.replicate(state), batches).outputs.compute()
  np.testing.assert_allclose(collected['probs'], _probs(model, state, batches), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(collected['label'], np.arange(10) % 2)


def test_the_threshold_is_chosen_on_the_validation_outputs_only(model_state):
  model, state = model_state
  config = default_config()
  dp = DataParallel('jit')
  val, test = _batches(1, num_real=10), _batches(2, num_real=11)
  collected, point = evaluator.evaluate(config, dp, dp.replicate(state), 7, {'val_pd': val, 'test': test})
  assert set(collected) == {'val_pd', 'test'} and collected['test'].compute()['num_examples'] == 11

  def chosen_on(batches):
    return threshold.choose(np.arange(10) % 2, _probs(model, state, batches)[:10, 1], config.eval.threshold_rule)
  assert chosen_on(val) != pytest.approx(chosen_on(test))  # otherwise this test could not see a leak
  assert point['threshold'] == pytest.approx(chosen_on(val), rel=1e-5)
  assert (point['chosen_on'], point['checkpoint_step']) == ('val_pd', 7)
