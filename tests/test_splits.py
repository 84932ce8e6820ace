"""The named splits: the official ones and the patient-disjoint train_pd/val_pd."""

import numpy as np
import pytest

from pneumojax.data import splits
from tests.helpers import data_config


def test_patient_disjoint_split(builder64, tfds_dir):
  cfg = data_config(tfds_dir)
  train = splits.split_metadata(builder64, 'train_pd', cfg)
  val = splits.split_metadata(builder64, 'val_pd', cfg)
  assert not set(train['patient_id']) & set(val['patient_id'])
  assert len(train['label']) + len(val['label']) == 5216
  n_patients = len(set(train['patient_id'])) + len(set(val['patient_id']))
  assert abs(len(set(val['patient_id'])) / n_patients - 0.1) < 0.01
  for subtype in range(3):  # stratified: each subtype keeps about its share
    share = np.mean(val['subtype'] == subtype) / np.mean(np.concatenate([train['subtype'], val['subtype']]) == subtype)
    assert 0.7 < share < 1.3
  assert splits.validation_patients(builder64, 0.1, 0) == splits.validation_patients(builder64, 0.1, 0)
  assert splits.validation_patients(builder64, 0.1, 0) != splits.validation_patients(builder64, 0.1, 1)


@pytest.mark.smoke
def test_carve_is_deterministic_and_stratified():
  patients = [f'p{i}' for i in range(100)]
  strata = ['a'] * 80 + ['b'] * 20
  chosen = splits.carve_validation_patients(patients, strata, 0.1, seed=3)
  assert chosen == splits.carve_validation_patients(patients, strata, 0.1, seed=3)
  assert sum(p in patients[:80] for p in chosen) == 8 and len(chosen) == 10


def test_unknown_split_name(builder64, tfds_dir):
  with pytest.raises(ValueError, match="Unknown split 'valid'.*val_pd"):
    splits.load_split(builder64, 'valid', data_config(tfds_dir))
