"""The preflight check of a run's config and workdir, before any data is read or anything compiled."""

import pytest

from pneumojax import train
from pneumojax.train import preflight
from tests.helpers import tiny_config

pytestmark = pytest.mark.smoke


def test_config_is_checked_before_any_work(tmp_path):
  config = tiny_config(tmp_path / 'tfds', 6)
  config.optim.schedule = 'cosin'
  with pytest.raises(ValueError, match="optim.schedule='cosin' is not one of: constant, cosine, step"):
    preflight.check(config, str(tmp_path))
  config = tiny_config(tmp_path / 'tfds', 6)
  config.data.val_split = 'test'
  with pytest.raises(ValueError, match='cannot be the test split'):
    preflight.check(config, str(tmp_path))
  (tmp_path / 'file').write_text('')
  with pytest.raises(ValueError, match='cannot be written'):
    preflight.check(tiny_config(tmp_path / 'tfds', 6), str(tmp_path / 'file' / 'run'))


@pytest.mark.parametrize('field, value, message', [
    ('data.image_size', -4, 'data.image_size=-4 must be positive, or 0 for the stored resolution'),
    ('train.eval_every_steps', -1, 'train.eval_every_steps=-1 must be positive, or 0 for every epoch'),
    ('data.task', 'normal_vs_covid', "data.task='normal_vs_covid' is not one of: binary, three_class"),
    ('model.layers', 'cuda', "model.layers='cuda' is not one of: auto, flax, xla_cpu"),
])
def test_bad_values_are_refused_naming_the_field(tmp_path, field, value, message):
  config = tiny_config(tmp_path / 'tfds', 6)
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ValueError, match=message):
    preflight.check(config, str(tmp_path))


def test_batch_size_must_divide_over_devices(monkeypatch, tmp_path):
  monkeypatch.setattr(preflight.jax, 'device_count', lambda: 3)
  with pytest.raises(ValueError, match='train.batch_size=32 must be a multiple of the 3 devices'):
    preflight.check(tiny_config(tmp_path / 'tfds', 1), str(tmp_path))


@pytest.mark.parametrize('cached_features', [False, True], ids=['finetune', 'linear_probe'])
def test_the_test_selected_report_of_a_run_that_may_not_read_the_test_split_is_refused(tmp_path, cached_features):
  config = tiny_config(tmp_path / 'tfds', 6)
  config.train.cached_features = cached_features
  config.eval.update({'evaluate_test': False, 'report_test_selected': True})
  with pytest.raises(ValueError, match='report_test_selected=True evaluates the test split at every validation, and '
                                       '--config.eval.evaluate_test=False forbids reading it'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists() and not (tmp_path / 'tfds').exists()  # refused before anything was made
