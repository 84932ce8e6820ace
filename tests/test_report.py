"""`pneumojax report`: one self-contained HTML page of a run's evaluation, also as a browser shows it."""

import re
import shutil
import subprocess

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
  balanced = evaluated['operating_points']['validation-chosen threshold']['balanced_accuracy']
  assert 'Balanced accuracy' in page and f'{balanced:.3f} <small>(' in page  # beside accuracy, with its interval
  assert '&quot;num_steps&quot;: 6' in page  # the config


# Written into a copy of the page: once it has loaded, the DOM that Chromium dumps records what the browser drew.
_PROBE = '''<script>
window.addEventListener('load', () => {
  document.body.dataset.imageWidths = Array.from(document.images, image => image.complete ? image.naturalWidth : 0);
  document.body.dataset.tableRows = document.querySelectorAll('table tr').length;
});
</script></body>'''


@pytest.mark.slow  # Starts a browser: seconds to a minute.
@pytest.mark.skipif(not shutil.which('chromium'), reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_every_figure_loads_in_headless_chromium(trained_run, evaluated, tmp_path):
  _, workdir, _ = trained_run
  cli.main(['report', '--workdir', str(workdir)])
  page = (workdir / report.REPORT).read_text()
  (tmp_path / 'page.html').write_text(page.replace('</body>', _PROBE))
  flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync',
           f'--user-data-dir={tmp_path / "profile"}', '--virtual-time-budget=10000', '--dump-dom']
  dom = subprocess.run(['chromium', *flags, (tmp_path / 'page.html').as_uri()], capture_output=True, text=True,
                       timeout=120, check=True).stdout
  widths = re.search(r'data-image-widths="([\d,]*)"', dom)
  assert widths, dom[-2000:]
  assert [int(w) > 0 for w in widths.group(1).split(',')] == [True] * len(PLOTS)
  assert int(re.search(r'data-table-rows="(\d+)"', dom).group(1)) == 9  # the header and 8 metrics
  assert 'ROC-AUC' in dom and 'validation-chosen threshold' in dom
