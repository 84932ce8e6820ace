"""The TFDS builder, the splits, the pipeline and the data report, on the real chest X-rays."""

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from pneumojax.data import builder as builder_lib
from pneumojax.data import images, paths, pipeline, report, sources, splits
from tests.conftest import CHEST_XRAY, FULLRES, data_config

# The table in ../shared/data/README.md: split -> (normal, bacteria, virus).
README_COUNTS = {'train': (1341, 2530, 1345), 'val': (8, 8, 0), 'test': (234, 242, 148)}


def _counts(builder, split, cfg):
  meta = splits.split_metadata(builder, split, cfg)
  return tuple(int(n) for n in np.bincount(meta['subtype'], minlength=3))


def test_builder_counts_match_the_readme(builder64, tfds_dir):
  cfg = data_config(tfds_dir)
  for split, expected in README_COUNTS.items():
    assert _counts(builder64, split, cfg) == expected, split
    labels = splits.split_metadata(builder64, split, cfg)['label']
    assert tuple(np.bincount(labels, minlength=2)) == (expected[0], expected[1] + expected[2])


def test_builder_features(builder64):
  example = next(iter(builder64.as_dataset(split='test').take(1)))
  assert example['image'].shape == (64, 64, 1) and example['image'].dtype.name == 'uint8'
  name = example['filename'].numpy().decode()
  assert name.startswith('test/') and name.endswith('.jpeg')
  assert (example['original_height'], example['original_width']) == (224, 224)  # the shared copies are 224 px
  patient, subtype = sources.parse_file_name(name.split('/')[-1], name.split('/')[1])
  assert example['patient_id'].numpy().decode() == patient
  assert builder64.info.features['subtype'].int2str(int(example['subtype'])) == subtype


@pytest.mark.parametrize('name,label,expected', [
    ('person1000_bacteria_2931.jpeg', 'PNEUMONIA', ('person1000', 'bacteria')),
    ('person1_virus_6.jpeg', 'PNEUMONIA', ('person1', 'virus')),
    ('IM-0011-0001-0002.jpeg', 'NORMAL', ('IM-0011', 'normal')),
    ('NORMAL2-IM-0373-0001.jpeg', 'NORMAL', ('NORMAL2-IM-0373', 'normal')),
])
def test_parse_file_name(name, label, expected):
  assert sources.parse_file_name(name, label) == expected


def test_parse_file_name_rejects_a_file_in_the_wrong_class():
  with pytest.raises(sources.LayoutError, match='person3_virus_1.jpeg.*NORMAL folder'):
    sources.parse_file_name('person3_virus_1.jpeg', 'NORMAL')


def test_fullres_originals_build(tmp_path):
  """Full-size, mixed-mode (grayscale and RGB) originals: only train and val in this sample."""
  builder = paths.get_builder(data_config(tmp_path, FULLRES, resolution=28, resize='crop'))
  cfg = data_config(tmp_path)
  assert _counts(builder, 'train', cfg) == (28, 28, 28)
  assert _counts(builder, 'val', cfg) == (8, 8, 0)
  meta = splits.split_metadata(builder, 'train', cfg)
  assert meta['original_width'].max() > 1000 and len(set(meta['original_height'])) > 10
  image = next(iter(builder.as_dataset(split='val').take(1)))['image']
  assert image.shape == (28, 28, 1)


def _write_zip(path, prefixes, files):
  """A zip with each (split, class, name) file under every prefix, plus the macOS junk real archives carry."""
  with zipfile.ZipFile(path, 'w') as zf:
    for prefix in prefixes:
      for split, label, src in files:
        zf.write(src, f'{prefix}{split}/{label}/{src.name}')
        zf.writestr(f'__MACOSX/{prefix}{split}/{label}/._{src.name}', b'\0junk')
    zf.writestr(f'{prefixes[0]}.DS_Store', b'junk')


def _sample_files(splits_wanted, per_class=3):
  return [(split, label, path) for split in splits_wanted for label in sources.CLASSES
          for path in sorted((CHEST_XRAY / split / label).iterdir())[:per_class]]


def test_kaggle_archive_is_read_in_place_and_its_nested_copy_ignored(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  files = _sample_files(['train', 'val', 'test'])
  _write_zip(manual / 'archive.zip', ['chest_xray/', 'chest_xray/chest_xray/'], files)
  builder = paths.get_builder(data_config(tmp_path / 'tfds', manual))
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {'train': 6, 'val': 6, 'test': 6}
  assert not any(p.suffix == '.jpeg' for p in manual.rglob('*'))  # nothing extracted


def test_mendeley_archive_has_no_val_split(tmp_path):
  _write_zip(tmp_path / 'ChestXRay2017.zip', ['chest_xray/'], _sample_files(['train', 'test'], per_class=10))
  cfg = data_config(tmp_path / 'tfds', tmp_path / 'ChestXRay2017.zip', val_fraction=0.2)  # a zip named directly
  builder = paths.get_builder(cfg)
  assert set(builder.info.splits) == {'train', 'test'}
  with pytest.raises(ValueError, match="no 'val' split"):
    splits.load_split(builder, 'val', cfg)
  assert len(splits.split_metadata(builder, 'val_pd', cfg)['label']) > 0


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


def test_carve_is_deterministic_and_stratified():
  patients = [f'p{i}' for i in range(100)]
  strata = ['a'] * 80 + ['b'] * 20
  chosen = splits.carve_validation_patients(patients, strata, 0.1, seed=3)
  assert chosen == splits.carve_validation_patients(patients, strata, 0.1, seed=3)
  assert sum(p in patients[:80] for p in chosen) == 8 and len(chosen) == 10


@pytest.mark.parametrize('num_processes', [1, 2])
def test_eval_yields_every_example_once(builder64, tfds_dir, num_processes):
  cfg = data_config(tfds_dir, augment=False)
  expected = splits.split_metadata(builder64, 'test', cfg)['label']
  per_process = [list(pipeline.eval_dataset(builder64, cfg, 'test', 256, p, num_processes)[0].as_numpy_iterator())
                 for p in range(num_processes)]
  labels, masks = [], []
  for batches in zip(*per_process):  # reassemble global batches in process order
    labels.append(np.concatenate([b['label'] for b in batches]))
    masks.append(np.concatenate([b['mask'] for b in batches]))
  labels, masks = np.concatenate(labels), np.concatenate(masks)
  assert len(labels) == 768 and masks.sum() == 624 and masks[:624].all()
  np.testing.assert_array_equal(labels[:624], expected)


def test_train_batches(builder64, tfds_dir):
  cfg = data_config(tfds_dir, image_size=48, channels=3)
  batch = next(pipeline.train_dataset(builder64, cfg, 32, seed=0).as_numpy_iterator())
  assert batch['image'].shape == (32, 48, 48, 3) and batch['image'].dtype == np.float32
  assert -1.0 <= batch['image'].min() < -0.5 and 0.5 < batch['image'].max() <= 1.0
  assert batch['label'].dtype == np.int32 and set(batch['label']) <= {0, 1}
  np.testing.assert_array_equal(batch['mask'], 1.0)


def _batches(builder, cfg, seed, start, count, process_index=0, process_count=1):
  ds = pipeline.train_dataset(builder, cfg, 16, seed, start, process_index, process_count)
  return list(ds.take(count).as_numpy_iterator())


def test_train_stream_is_seeded_resumable_and_process_independent(builder64, tfds_dir):
  cfg = data_config(tfds_dir)
  run = _batches(builder64, cfg, seed=0, start=0, count=6)
  assert all(np.array_equal(a['image'], b['image']) for a, b in zip(run, _batches(builder64, cfg, 0, 0, 6)))
  assert not np.array_equal(run[0]['image'], _batches(builder64, cfg, 1, 0, 1)[0]['image'])
  resumed = _batches(builder64, cfg, seed=0, start=4, count=2)
  for a, b in zip(run[4:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
  halves = [_batches(builder64, cfg, 0, 0, 2, p, 2) for p in range(2)]
  for step in range(2):
    np.testing.assert_array_equal(np.concatenate([h[step]['image'] for h in halves]), run[step]['image'])


def test_each_epoch_has_a_new_order(builder64, tfds_dir):
  cfg = data_config(tfds_dir, val_fraction=0.9, augment=False)  # train_pd: ~520 images, 32 batches of 16
  n = pipeline.split_info(builder64, 'train_pd', cfg).num_examples
  labels = np.concatenate([b['label'] for b in _batches(builder64, cfg, 0, 0, 2 * n // 16)])
  first, second = labels[:n], labels[n:2 * n]
  assert np.bincount(first, minlength=2).tolist() == list(pipeline.split_info(builder64, 'train_pd', cfg).class_counts)
  assert not np.array_equal(first, second)


def test_oversampling_balances_classes(builder64, tfds_dir):
  cfg = data_config(tfds_dir, class_balance='oversample', augment=False)
  labels = np.concatenate([b['label'] for b in _batches(builder64, cfg, 0, 0, 40)])
  assert 0.42 < labels.mean() < 0.58  # ~0.74 pneumonia without oversampling


def test_report(builder64, tfds_dir):
  result = report.data_report(builder64, data_config(tfds_dir))
  assert result['totals'] == {'train': 5216, 'val': 16, 'test': 624, 'train_pd': result['totals']['train_pd'],
                              'val_pd': 5216 - result['totals']['train_pd']}
  # ../shared/data/README.md: 30 groups (62 files) of byte-identical images, each inside one split and class.
  groups = result['identical_file_groups']
  assert len(groups) == 30 and sum(map(len, groups)) == 62
  assert all(len({'/'.join(f.split('/')[:2]) for f in g}) == 1 for g in groups)
  assert 'normal/normal' in report.format_report(result)


# --- bad input ---------------------------------------------------------------------------------------------------

def _tiny_layout(root, splits_wanted=('train', 'test')):
  """A valid extracted layout: 2 real images per class and split."""
  for split, label, src in _sample_files(splits_wanted, per_class=2):
    (root / split / label).mkdir(parents=True, exist_ok=True)
    (root / split / label / src.name).write_bytes(src.read_bytes())
  return root


def _jpeg_bytes():
  buffer = io.BytesIO()
  Image.fromarray(np.full((32, 32), 128, np.uint8)).save(buffer, format='JPEG')
  return buffer.getvalue()


def _blank_png(size, mode='L'):
  buffer = io.BytesIO()
  Image.new(mode, size).save(buffer, format='PNG', compress_level=1)
  return buffer.getvalue()


@pytest.mark.parametrize('bad_bytes,what', [
    (b'', 'empty'),
    (b'this is not an image', 'not a readable'),
    (_jpeg_bytes()[:-200], 'not a readable'),  # truncated
    (_jpeg_bytes()[:200] + b'\xff' * 300 + _jpeg_bytes()[500:], 'not a readable'),  # corrupt
])
def test_unreadable_image_is_named(tmp_path, bad_bytes, what):
  root = _tiny_layout(tmp_path / 'manual')
  bad = root / 'train' / 'PNEUMONIA' / 'person9999_virus_1.jpeg'
  bad.write_bytes(bad_bytes)
  with pytest.raises(images.ImageReadError, match=f'person9999_virus_1.jpeg.*{what}'):
    paths.get_builder(data_config(tmp_path / 'tfds', root))


def test_skip_unreadable_lists_every_skipped_file(tmp_path):
  root = _tiny_layout(tmp_path / 'manual')
  (root / 'test' / 'NORMAL' / 'IM-9999-0001.jpeg').write_bytes(b'')
  cfg = data_config(tmp_path / 'tfds', root, skip_unreadable=True)
  builder = paths.get_builder(cfg)
  assert builder.info.splits['test'].num_examples == 4
  skipped = report.data_report(builder, cfg)['skipped_files']
  assert [s['file'] for s in skipped] == ['test/NORMAL/IM-9999-0001.jpeg']
  assert json.loads((builder.data_path / builder_lib.SKIPPED_FILES).read_text()) == skipped


def test_a_non_image_file_in_a_class_folder_is_named_with_its_folder(tmp_path):
  root = _tiny_layout(tmp_path / 'manual')
  (root / 'train' / 'NORMAL' / 'Thumbs.db').write_bytes(b'\0windows thumbnails')
  with pytest.raises(images.ImageReadError, match=r'(?s)train/NORMAL/Thumbs.db: not a \.jpeg/\.jpg/\.png file.*'
                     'Remove it.*--skip_unreadable'):
    paths.get_builder(data_config(tmp_path / 'tfds', root))


def test_skip_unreadable_skips_and_lists_non_image_files(tmp_path):
  root = _tiny_layout(tmp_path / 'manual')
  (root / 'train' / 'NORMAL' / 'Thumbs.db').write_bytes(b'\0windows thumbnails')
  (root / 'test' / 'PNEUMONIA' / 'notes.txt').write_text('seen by Dr X')
  (root / 'test' / 'PNEUMONIA' / 'notes.png').write_text('not an image, and not an original file name')
  (root / 'test' / 'NORMAL' / 'IM-9998-0001.jpeg').symlink_to(root / 'gone.jpeg')  # a dangling link
  cfg = data_config(tmp_path / 'tfds', root, skip_unreadable=True)
  builder = paths.get_builder(cfg)
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {'train': 4, 'test': 4}
  skipped = {s['file']: s['error'] for s in report.data_report(builder, cfg)['skipped_files']}
  assert sorted(skipped) == ['test/NORMAL/IM-9998-0001.jpeg', 'test/PNEUMONIA/notes.png',
                             'test/PNEUMONIA/notes.txt', 'train/NORMAL/Thumbs.db']
  assert all(f in error for f, error in skipped.items())  # each message names the file with its folder


def test_a_wrongly_named_image_is_named_with_its_folder(tmp_path):
  root = _tiny_layout(tmp_path / 'manual')
  (root / 'train' / 'NORMAL' / 'scan.jpeg').write_bytes(_jpeg_bytes())
  with pytest.raises(sources.LayoutError, match='train/NORMAL/scan.jpeg: file name matches neither'):
    paths.get_builder(data_config(tmp_path / 'tfds', root, skip_unreadable=True))


def test_an_image_over_the_pixel_limit_stops_the_build(tmp_path):
  root = _tiny_layout(tmp_path / 'manual')
  (root / 'test' / 'NORMAL' / 'IM-9999-0001.png').write_bytes(_blank_png((10_000, 10_000)))  # 100 megapixels
  with pytest.raises(images.ImageReadError, match=r'test/NORMAL/IM-9999-0001.png: too large \(10000x10000'):
    paths.get_builder(data_config(tmp_path / 'tfds', root))


def test_unknown_class_folder(tmp_path):
  root = _tiny_layout(tmp_path / 'manual')
  (root / 'train' / 'COVID').mkdir()
  (root / 'train' / 'COVID' / 'x.jpeg').write_bytes(_jpeg_bytes())
  with pytest.raises(sources.LayoutError, match="unknown class folder 'train/COVID'"):
    paths.get_builder(data_config(tmp_path / 'tfds', root))


def test_empty_split(tmp_path):
  root = _tiny_layout(tmp_path / 'manual')
  (root / 'val' / 'NORMAL').mkdir(parents=True)
  with pytest.raises(sources.LayoutError, match='the val split has no images'):
    paths.get_builder(data_config(tmp_path / 'tfds', root))


def test_wrong_layout(tmp_path):
  (tmp_path / 'manual' / 'NORMAL').mkdir(parents=True)
  (tmp_path / 'manual' / 'NORMAL' / 'IM-0001-0001.jpeg').write_bytes(_jpeg_bytes())
  with pytest.raises(sources.LayoutError, match=r'(?s)manual: no \{train,val,test\}.*Kaggle'):
    paths.get_builder(data_config(tmp_path / 'tfds', tmp_path / 'manual'))


def test_two_datasets_side_by_side_is_ambiguous(tmp_path):
  _tiny_layout(tmp_path / 'manual' / 'a')
  _tiny_layout(tmp_path / 'manual' / 'b')
  with pytest.raises(sources.LayoutError, match='several datasets found'):
    sources.open_source(tmp_path / 'manual')


def test_missing_data_says_what_to_download(tmp_path, monkeypatch):
  monkeypatch.delenv(paths.MANUAL_DIR_ENV, raising=False)
  with pytest.raises(FileNotFoundError, match='(?s)not prepared.*paultimothymooney/chest-xray-pneumonia.*'
                     'rscbjbr9sj'):
    paths.get_builder(data_config(tmp_path))


def test_unknown_split_name(builder64, tfds_dir):
  with pytest.raises(ValueError, match="Unknown split 'valid'.*val_pd"):
    splits.load_split(builder64, 'valid', data_config(tfds_dir))


# --- image decoding ----------------------------------------------------------------------------------------------

def _png_bytes(array, mode=None):
  buffer = io.BytesIO()
  Image.fromarray(array, mode).save(buffer, format='PNG')
  return buffer.getvalue()


def test_16_bit_images_are_scaled_not_clipped():
  ramp = np.linspace(1000, 60000, 64 * 64).reshape(64, 64).astype(np.uint16)
  pixels, notes = images.decode_grayscale(_png_bytes(ramp), 'ramp.png')
  assert pixels.dtype == np.uint8 and pixels.min() == 0 and pixels.max() == 255 and notes == []
  assert np.all(np.diff(pixels.ravel().astype(int)) >= 0)


def test_transparency_is_ignored_and_noted():
  rgba = np.zeros((8, 8, 4), np.uint8)
  rgba[..., :3] = 200
  rgba[..., 3] = 255
  rgba[4:, :, 3] = 128  # bottom half semi-transparent, one pixel fully transparent
  rgba[7, 7, 3] = 0
  for mode in ('RGBA', 'LA'):
    pixels, notes = images.decode_grayscale(_png_bytes(np.asarray(Image.fromarray(rgba).convert(mode))), 'x.png')
    assert (pixels == 200).all(), mode  # the gray values, whatever the alpha
    assert len(notes) == 1 and '32 of 64 pixels' in notes[0] and 'alpha is ignored' in notes[0], mode
  rgba[..., 3] = 255
  assert images.decode_grayscale(_png_bytes(rgba), 'x.png')[1] == []  # opaque: nothing to say


@pytest.mark.parametrize('size', [(10_000, 10_000), (20_000, 10_000)])  # PIL itself only warns below 2x its limit
def test_images_over_the_pixel_limit_are_refused_before_decoding(size):
  limit = Image.MAX_IMAGE_PIXELS
  assert limit < size[0] * size[1]
  with pytest.raises(images.ImageReadError, match=f'big.png: too large .*{limit:,} pixels'):
    images.decode_grayscale(_blank_png(size, '1'), 'big.png')


def test_crop_takes_the_centred_square():
  image = np.zeros((100, 200), np.uint8)
  image[:, 50:150] = 255
  np.testing.assert_array_equal(images.resize(image, 10, 'crop'), 255)
  assert images.resize(image, 10, 'squash').mean() < 200
