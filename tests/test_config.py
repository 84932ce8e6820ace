"""The config: command-line overrides parsed and type-checked, and a saved run's config read by today's code."""

import json

import pytest

from pneumojax import config as config_lib

pytestmark = pytest.mark.smoke


def test_config_overrides_are_type_checked():
  config = config_lib.load_config(['--config', 'experiments/quickstart.py', '--config.train.batch_size=16'])
  assert config.train.batch_size == 16 and config.model.name == 'simple_cnn'
  with pytest.raises(SystemExit, match='batchsize'):
    config_lib.load_config(['--config', 'experiments/quickstart.py', '--config.train.batchsize=16'])
  with pytest.raises(SystemExit, match='invalid literal'):
    config_lib.load_config(['--config', 'experiments/quickstart.py', '--config.train.batch_size=many'])


def test_an_unreadable_config_file_is_reported_in_one_line(tmp_path):
  (tmp_path / 'broken.py').write_text('def get_config(:\n  pass\n')
  for path, cause in [(tmp_path / 'missing.py', 'No such file'), (tmp_path / 'broken.py', 'line 1: invalid syntax'),
                      (tmp_path, 'Is a directory')]:
    for overrides in ([], ['--config.seed=1']):
      with pytest.raises(SystemExit) as error:
        config_lib.load_config(['--config', str(path), *overrides])
      message = str(error.value)
      assert message.startswith('pneumojax: bad --config: ') and '\n' not in message, message
      assert cause in message and str(path) in message, message


def _saved_by_an_earlier_version():
  """Today's default config as a run saved it (JSON), with the retired model.num_classes and without a newer field."""
  saved = json.loads(config_lib.default_config().to_json())
  saved['model']['num_classes'] = 2
  del saved['model']['layers']
  saved['model']['kwargs'] = {'widths': [8, 16]}
  return saved


def test_a_saved_config_is_laid_over_todays_defaults_without_retired_fields():
  config = config_lib.from_saved(_saved_by_an_earlier_version())
  assert 'num_classes' not in config.model
  assert config.model.layers == 'auto'  # added since: its default
  assert tuple(config.model.kwargs.widths) == (8, 16)


def test_a_retired_field_makes_no_difference_and_a_real_change_does():
  requested = config_lib.default_config()
  requested.model.kwargs = {'widths': (8, 16)}
  assert config_lib.differences(_saved_by_an_earlier_version(), requested) == {}
  requested.data.task = 'three_class'
  assert config_lib.differences(_saved_by_an_earlier_version(), requested) == {
      'data.task': ('binary', 'three_class')}
