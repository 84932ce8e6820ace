"""A run's result files (train/files.py) are replaced whole or not at all: a kill mid-write keeps the old one."""

import json
import os
import signal
import subprocess
import sys

import pytest

from pneumojax.train import files, test_history
from tests.helpers import REPO, result_file_writers

# Writes a result file in a fresh process killed by the kernel once the file passes 64 bytes: a kill mid-write.
KILLED_WRITE = """
import resource, signal, sys
from tests.helpers import result_file_writers
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores SIGXFSZ; by default it ends the process.
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
result_file_writers()[sys.argv[1]](sys.argv[2], 0.25)
"""
READERS = {  # result file: a function reading the value back
    files.RESULTS: lambda workdir: json.loads((workdir / files.RESULTS).read_text())['test']['auc'],
    files.THRESHOLD: lambda workdir: files.load_threshold(workdir, 3)['threshold'],
    files.TEST_HISTORY: lambda workdir: test_history.load(workdir)[0]['metrics']['auc'],
}


@pytest.mark.parametrize('name', list(READERS))
def test_a_result_file_killed_mid_write_keeps_its_previous_content(tmp_path, name):
  write = result_file_writers()[name]
  write(tmp_path, 0.75)
  env = {**os.environ, 'PYTHONPATH': str(REPO), 'JAX_PLATFORMS': 'cpu'}
  run = subprocess.run([sys.executable, '-c', KILLED_WRITE, name, str(tmp_path)], cwd=REPO, env=env,
                       capture_output=True, text=True)
  assert run.returncode == -signal.SIGXFSZ, run.stderr
  assert READERS[name](tmp_path) == 0.75
  write(tmp_path, 0.5)  # a later run: the killed write's leftover confuses nothing
  assert READERS[name](tmp_path) == 0.5
  assert [p.name for p in tmp_path.iterdir()] == [name]
