"""The summary of a prepared dataset that `pneumojax prepare` prints."""

from pneumojax.data import summary
from tests.helpers import data_config


def test_summary_of_the_shared_data(builder64, tfds_dir):
  result = summary.summarize(builder64, data_config(tfds_dir))
  assert result['totals'] == {'train': 5216, 'val': 16, 'test': 624, 'train_pd': result['totals']['train_pd'],
                              'val_pd': 5216 - result['totals']['train_pd']}
  # ../shared/data/README.md: 30 groups (62 files) of byte-identical images, each inside one split and class.
  groups = result['identical_file_groups']
  assert len(groups) == 30 and sum(map(len, groups)) == 62
  assert all(len({'/'.join(f.split('/')[:2]) for f in g}) == 1 for g in groups)
  assert 'normal/normal' in summary.format_summary(result)
