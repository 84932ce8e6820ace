"""The TFDS builder on the real chest X-rays, the downloaded layouts it reads (folders, archives) and the errors
that name what is wrong with them."""

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from pneumojax.data import builder as builder_lib
from pneumojax.data import images, prepare, sources, splits, summary
from tests.helpers import CHEST_XRAY, FULLRES, blank_png, data_config

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


def test_fullres_originals_build(tmp_path):
  """Full-size, mixed-mode (grayscale and RGB) originals: only train and val in this sample."""
  builder = prepare.get_builder(data_config(tmp_path, FULLRES, resolution=28, resize='crop'))
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
  builder = prepare.get_builder(data_config(tmp_path / 'tfds', manual))
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {'train': 6, 'val': 6, 'test': 6}
  assert not any(p.suffix == '.jpeg' for p in manual.rglob('*'))  # nothing extracted


def test_mendeley_archive_has_no_val_split(tmp_path):
  _write_zip(tmp_path / 'ChestXRay2017.zip', ['chest_xray/'], _sample_files(['train', 'test'], per_class=10))
  cfg = data_config(tmp_path / 'tfds', tmp_path / 'ChestXRay2017.zip', val_fraction=0.2)  # a zip named directly
  builder = prepare.get_builder(cfg)
  assert set(builder.info.splits) == {'train', 'test'}
  with pytest.raises(ValueError, match="no 'val' split"):
    splits.load_split(builder, 'val', cfg)
  assert len(splits.split_metadata(builder, 'val_pd', cfg)['label']) > 0


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
    prepare.get_builder(data_config(tmp_path / 'tfds', root))


def test_skip_unreadable_lists_every_skipped_file(tmp_path):
  root = _tiny_layout(tmp_path / 'manual')
  (root / 'test' / 'NORMAL' / 'IM-9999-0001.jpeg').write_bytes(b'')
  cfg = data_config(tmp_path / 'tfds', root, skip_unreadable=True)
  builder = prepare.get_builder(cfg)
  assert builder.info.splits['test'].num_examples == 4
  skipped = summary.summarize(builder, cfg)['skipped_files']
  assert [s['file'] for s in skipped] == ['test/NORMAL/IM-9999-0001.jpeg']
  assert json.loads((builder.data_path / builder_lib.SKIPPED_FILES).read_text()) == skipped


def test_a_non_image_file_in_a_class_folder_is_named_with_its_folder(tmp_path):
  root = _tiny_layout(tmp_path / 'manual')
  (root / 'train' / 'NORMAL' / 'Thumbs.db').write_bytes(b'\0windows thumbnails')
  with pytest.raises(images.ImageReadError, match=r'(?s)train/NORMAL/Thumbs.db: not a \.jpeg/\.jpg/\.png file.*'
                     'Remove it.*--skip_unreadable'):
    prepare.get_builder(data_config(tmp_path / 'tfds', root))


def test_skip_unreadable_skips_and_lists_non_image_files(tmp_path):
  root = _tiny_layout(tmp_path / 'manual')
  (root / 'train' / 'NORMAL' / 'Thumbs.db').write_bytes(b'\0windows thumbnails')
  (root / 'test' / 'PNEUMONIA' / 'notes.txt').write_text('seen by Dr X')
  (root / 'test' / 'PNEUMONIA' / 'notes.png').write_text('not an image, and not an original file name')
  (root / 'test' / 'NORMAL' / 'IM-9998-0001.jpeg').symlink_to(root / 'gone.jpeg')  # a dangling link
  cfg = data_config(tmp_path / 'tfds', root, skip_unreadable=True)
  builder = prepare.get_builder(cfg)
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {'train': 4, 'test': 4}
  skipped = {s['file']: s['error'] for s in summary.summarize(builder, cfg)['skipped_files']}
  assert sorted(skipped) == ['test/NORMAL/IM-9998-0001.jpeg', 'test/PNEUMONIA/notes.png',
                             'test/PNEUMONIA/notes.txt', 'train/NORMAL/Thumbs.db']
  assert all(f in error for f, error in skipped.items())  # each message names the file with its folder


def test_a_wrongly_named_image_is_named_with_its_folder(tmp_path):
  root = _tiny_layout(tmp_path / 'manual')
  (root / 'train' / 'NORMAL' / 'scan.jpeg').write_bytes(_jpeg_bytes())
  with pytest.raises(sources.LayoutError, match='train/NORMAL/scan.jpeg: file name matches neither'):
    prepare.get_builder(data_config(tmp_path / 'tfds', root, skip_unreadable=True))


def test_an_image_over_the_pixel_limit_stops_the_build(tmp_path):
  root = _tiny_layout(tmp_path / 'manual')
  (root / 'test' / 'NORMAL' / 'IM-9999-0001.png').write_bytes(blank_png((10_000, 10_000)))  # 100 megapixels
  with pytest.raises(images.ImageReadError, match=r'test/NORMAL/IM-9999-0001.png: too large \(10000x10000'):
    prepare.get_builder(data_config(tmp_path / 'tfds', root))


def test_unknown_class_folder(tmp_path):
  root = _tiny_layout(tmp_path / 'manual')
  (root / 'train' / 'COVID').mkdir()
  (root / 'train' / 'COVID' / 'x.jpeg').write_bytes(_jpeg_bytes())
  with pytest.raises(sources.LayoutError, match="unknown class folder 'train/COVID'"):
    prepare.get_builder(data_config(tmp_path / 'tfds', root))


def test_empty_split(tmp_path):
  root = _tiny_layout(tmp_path / 'manual')
  (root / 'val' / 'NORMAL').mkdir(parents=True)
  with pytest.raises(sources.LayoutError, match='the val split has no images'):
    prepare.get_builder(data_config(tmp_path / 'tfds', root))


def test_wrong_layout(tmp_path):
  (tmp_path / 'manual' / 'NORMAL').mkdir(parents=True)
  (tmp_path / 'manual' / 'NORMAL' / 'IM-0001-0001.jpeg').write_bytes(_jpeg_bytes())
  with pytest.raises(sources.LayoutError, match=r'(?s)manual: no \{train,val,test\}.*Kaggle'):
    prepare.get_builder(data_config(tmp_path / 'tfds', tmp_path / 'manual'))


def test_two_datasets_side_by_side_is_ambiguous(tmp_path):
  _tiny_layout(tmp_path / 'manual' / 'a')
  _tiny_layout(tmp_path / 'manual' / 'b')
  with pytest.raises(sources.LayoutError, match='several datasets found'):
    sources.open_source(tmp_path / 'manual')


def test_missing_data_says_what_to_download(tmp_path, monkeypatch):
  monkeypatch.delenv(prepare.MANUAL_DIR_ENV, raising=False)
  with pytest.raises(FileNotFoundError, match='(?s)not prepared.*paultimothymooney/chest-xray-pneumonia.*'
                     'rscbjbr9sj'):
    prepare.get_builder(data_config(tmp_path))
