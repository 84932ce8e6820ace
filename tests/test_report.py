"""`pneumojax report`: one self-contained HTML page of a run's evaluation."""

import pytest

from pneumojax import api, cli
from pneumojax.trained import report

PLOTS = ('roc.png', 'pr.png', 'confusion_matrix.png', 'calibration.png', 'training_curves.png', 'errors.png')


@pytest.fixture(scope='module')
def evaluated(trained_run):
  _, workdir, _ = trained_run
  return api.load_run(workdir).evaluate('test')


def test_report_is_one_self_contained_page(trained_run, evaluated):
  _, workdir, _ = trained_run
  cli.main(['report', '--workdir', str(workdir)])
  page = (workdir / report.REPORT).read_text()
  assert page.count('src="data:image/png;base64,') == len(PLOTS)
  assert 'src="' not in page.replace('src="data:', '')  # nothing outside the page
  assert 'chose nothing' in page and f'{evaluated["threshold"]["threshold"]:.4f}' in page
  auc = evaluated['operating_points']['fixed threshold']['auc']
  low, high = evaluated['operating_points']['fixed threshold']['ci95']['auc']
  assert f'{auc:.3f} <small>({low:.3f}&ndash;{high:.3f})</small>' in page
  assert '&quot;num_steps&quot;: 6' in page  # the config
