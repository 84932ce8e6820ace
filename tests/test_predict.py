"""`pneumojax predict` on real files: the eval path's numbers, odd inputs, unreadable files, bad arguments."""

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from pneumojax import api, cli
from pneumojax.data import pipeline, prepare, splits
from pneumojax.train import evaluator, files, parallel
from pneumojax.trained import load
from tests.helpers import FULLRES, OOD


def _rows(path) -> dict[str, dict]:
  with open(path, newline='') as f:
    return {row['path']: row for row in csv.DictReader(f)}


def _eval_path_probabilities(config, workdir, data_config) -> dict[str, float]:
  """P(pneumonia) of every image of the dataset of `data_config`, by evaluation's own pipeline and step."""
  dp = parallel.DataParallel('jit')
  state = dp.replicate(load.load_run(workdir).state)
  builder = prepare.get_builder(data_config)
  probabilities = {}
  for split in ('train', 'val'):
    data, _ = pipeline.eval_dataset(builder, data_config, split, 64)
    probs = evaluator.outputs(dp, state, data.as_numpy_iterator()).outputs.compute()['probs'][:, 1]
    probabilities.update(zip(splits.split_metadata(builder, split, data_config)['filename'], probs))
  return probabilities


def test_predictions_equal_the_eval_path_on_full_size_originals(trained_run, tmp_path):
  config, workdir, _ = trained_run
  out = tmp_path / 'predictions.csv'
  cli.main(['predict', '--workdir', str(workdir), str(FULLRES), '--out', str(out), '--batch_size', '16'])
  rows = _rows(out)
  assert len(rows) == 100 and not (tmp_path / 'predictions.csv.partial').exists()
  # The same originals as a dataset of their own, read by the TFDS builder and the eval pipeline.
  data_config = config.data.copy_and_resolve_references()
  data_config.update(dict(data_dir=str(tmp_path / 'tfds'), manual_dir=str(FULLRES)))
  expected = _eval_path_probabilities(config, workdir, data_config)
  assert len(expected) == 100
  point = load.load_run(workdir).threshold()
  for filename, probability in expected.items():
    row = rows[str(FULLRES / filename)]
    assert float(row['probability_pneumonia']) == pytest.approx(probability, abs=1e-5), filename
    assert row['label'] == ('pneumonia' if float(row['probability_pneumonia']) >= point['threshold'] else 'normal')
    assert row['error'] == ''


def _write_variants(folder):
  """A gray PNG with the full 0..255 range, and the same picture as RGB, opaque RGBA and 16-bit PNG."""
  with Image.open(OOD / '00000001_000.png') as image:
    gray = np.asarray(image.convert('L')).copy()
  gray[0, 0], gray[0, 1] = 0, 255  # so that 16-bit scaling by the image's range gives the same pixels back
  Image.fromarray(gray).save(folder / 'gray.png')
  Image.fromarray(gray).convert('RGB').save(folder / 'rgb.png')
  Image.fromarray(gray).convert('RGBA').save(folder / 'rgba.png')
  Image.fromarray(gray.astype(np.uint16) * 257).save(folder / 'gray16.png')
  with Image.open(folder / 'gray16.png') as image:
    assert image.mode.startswith('I')  # really 16-bit on disk
  Image.fromarray(gray[:300, :511]).save(folder / 'odd_size.jpeg')


def test_any_size_depth_and_mode(trained_run, tmp_path):
  _, workdir, _ = trained_run
  _write_variants(tmp_path)
  out = tmp_path / 'out.csv'
  summary = api.load_run(workdir).predict_files([OOD, tmp_path], out, batch_size=4)
  rows = _rows(out)
  ood_images = [p for p in OOD.iterdir() if p.suffix in ('.png', '.jpg')]
  assert summary['files'] == len(rows) == len(ood_images) + 5 and summary['errors'] == 0
  probabilities = {path: float(row['probability_pneumonia']) for path, row in rows.items()}
  assert all(np.isfinite(p) and 0 <= p <= 1 for p in probabilities.values())
  gray = probabilities[str(tmp_path / 'gray.png')]
  for variant in ('rgb.png', 'rgba.png', 'gray16.png'):
    assert probabilities[str(tmp_path / variant)] == pytest.approx(gray, abs=1e-6), variant
  assert len({round(p, 6) for p in probabilities.values()}) > 3  # the images are told apart


def test_unreadable_files_get_an_error_row_and_the_rest_a_prediction(trained_run, tmp_path):
  _, workdir, _ = trained_run
  good = sorted((FULLRES / 'val' / 'NORMAL').iterdir())[:3]
  for path in good:
    shutil.copy(path, tmp_path)
  (tmp_path / 'empty.jpeg').write_bytes(b'')
  (tmp_path / 'notes.png').write_text('not an image')
  (tmp_path / 'truncated.jpeg').write_bytes(good[0].read_bytes()[:2000])
  (tmp_path / 'README.txt').write_text('no image suffix: not listed')
  out = tmp_path / 'out.csv'
  summary = api.load_run(workdir).predict_files([tmp_path], out, batch_size=2)
  rows = _rows(out)
  assert summary['errors'] == 3 and len(rows) == 6
  for name, message in (('empty.jpeg', 'empty'), ('notes.png', 'not a readable'), ('truncated.jpeg', 'truncated')):
    row = rows[str(tmp_path / name)]
    assert name in row['error'] and message in row['error'] and row['probability_pneumonia'] == ''
  for path in good:
    row = rows[str(tmp_path / path.name)]
    assert row['error'] == '' and 0 <= float(row['probability_pneumonia']) <= 1


def test_bad_arguments_are_clear_errors_and_write_nothing(trained_run, tmp_path):
  _, workdir, _ = trained_run
  out = tmp_path / 'out.csv'
  (tmp_path / 'empty_folder').mkdir()
  with pytest.raises(FileNotFoundError, match='empty_folder: no .jpeg/.jpg/.png files'):
    api.load_run(workdir).predict_files([tmp_path / 'empty_folder'], out)
  with pytest.raises(FileNotFoundError, match='missing.png: no such file or folder'):
    api.load_run(workdir).predict_files([FULLRES, tmp_path / 'missing.png'], out)
  with pytest.raises(FileNotFoundError, match='holds no checkpoints'):
    api.load_run(tmp_path / 'no_run').predict_files([FULLRES], out)
  assert not out.exists() and not list(tmp_path.glob('*.partial'))


def test_a_threshold_of_another_checkpoint_is_refused(trained_run, tmp_path):
  _, workdir, _ = trained_run
  copy = shutil.copytree(workdir, tmp_path / 'run')
  (copy / files.THRESHOLD).write_text('{"threshold": 0.5, "checkpoint_step": 123}')
  with pytest.raises(ValueError, match='threshold of checkpoint step 123'):
    api.load_run(copy).predict_files([FULLRES], tmp_path / 'out.csv')
  (copy / files.THRESHOLD).unlink()
  with pytest.raises(FileNotFoundError, match='pneumojax eval --workdir'):
    files.load_threshold(copy, 6)


def test_broken_links_get_an_error_row(trained_run, tmp_path):
  _, workdir, _ = trained_run
  folder = tmp_path / 'films'
  folder.mkdir()
  shutil.copy(OOD / 'h0001.png', folder / 'film.png')
  (folder / 'link.png').symlink_to('film.png')
  (folder / 'dangling.png').symlink_to('moved_away.png')
  (folder / 'loop_a.png').symlink_to('loop_b.png')
  (folder / 'loop_b.png').symlink_to('loop_a.png')
  (tmp_path / 'named.jpeg').symlink_to(tmp_path / 'gone.jpeg')
  out = tmp_path / 'out.csv'
  summary = api.load_run(workdir).predict_files([folder, tmp_path / 'named.jpeg'], out)
  rows = _rows(out)
  assert summary['files'] == len(rows) == 6 and summary['errors'] == 4
  assert 'a symbolic link to moved_away.png' in rows[str(folder / 'dangling.png')]['error']
  assert 'Too many levels of symbolic links' in rows[str(folder / 'loop_a.png')]['error']
  assert 'gone.jpeg' in rows[str(tmp_path / 'named.jpeg')]['error']
  assert rows[str(folder / 'link.png')]['probability_pneumonia'] == rows[str(folder / 'film.png')][
      'probability_pneumonia'] != ''


def test_images_over_the_pixel_limit_are_refused_in_their_row(trained_run, tmp_path):
  _, workdir, _ = trained_run
  Image.new('L', (10_000, 10_000)).save(tmp_path / 'huge.png', compress_level=1)  # 100 megapixels
  shutil.copy(OOD / 'h0001.png', tmp_path)
  rows = _rows(api.load_run(workdir).predict_files([tmp_path], tmp_path / 'out.csv')['out'])
  assert f'too large (10000x10000 = 100,000,000 pixels; images over {Image.MAX_IMAGE_PIXELS:,} pixels' in rows[
      str(tmp_path / 'huge.png')]['error']
  assert rows[str(tmp_path / 'h0001.png')]['error'] == ''


def test_transparency_is_ignored_and_noted_in_the_row(trained_run, tmp_path):
  _, workdir, _ = trained_run
  with Image.open(OOD / '00000001_000.png') as image:
    gray = image.convert('L')
  gray.save(tmp_path / 'gray.png')
  translucent = gray.convert('RGBA')
  translucent.putalpha(128)
  translucent.save(tmp_path / 'translucent.png')
  rows = _rows(api.load_run(workdir).predict_files([tmp_path], tmp_path / 'out.csv')['out'])
  gray_row, translucent_row = rows[str(tmp_path / 'gray.png')], rows[str(tmp_path / 'translucent.png')]
  assert float(translucent_row['probability_pneumonia']) == pytest.approx(float(gray_row['probability_pneumonia']),
                                                                          abs=1e-6)
  assert 'transparent' in translucent_row['warning'] and 'alpha is ignored' in translucent_row['warning']
  assert gray_row['warning'] == ''


def test_images_far_below_the_model_resolution_are_warned_about(trained_run, tmp_path):
  config, workdir, _ = trained_run
  assert config.data.resolution == 64
  for size in ((1, 1), (16, 16), (200, 31), (32, 500)):
    Image.new('L', size, 128).save(tmp_path / f'{size[0]}x{size[1]}.png')
  summary = api.load_run(workdir).predict_files([tmp_path], tmp_path / 'out.csv')
  rows = _rows(summary['out'])
  assert summary['warnings'] == 3
  for name in ('1x1', '16x16', '200x31'):
    row = rows[str(tmp_path / f'{name}.png')]
    assert f'only {name} pixels' in row['warning'] and '64x64' in row['warning'] and row['probability_pneumonia']
  assert rows[str(tmp_path / '32x500.png')]['warning'] == ''  # enlarged 2x at most: fine


def test_rows_carry_the_ood_score_and_flag_of_the_api(trained_run, tmp_path):
  _, workdir, _ = trained_run
  Image.new('L', (256, 256), 0).save(tmp_path / 'black.png')
  films = sorted((FULLRES / 'val' / 'NORMAL').iterdir())[:3]
  for path in films:
    shutil.copy(path, tmp_path)
  (tmp_path / 'broken.png').write_text('not an image')
  run = api.load_run(workdir)
  summary = run.predict_files([tmp_path], tmp_path / 'out.csv')
  with open(tmp_path / 'out.csv', newline='') as f:
    assert next(csv.reader(f))[-2:] == ['ood_score', 'ood']  # added at the end
  rows = _rows(tmp_path / 'out.csv')
  images = [tmp_path / 'black.png', *(tmp_path / path.name for path in films)]
  expected = run.predict(images)
  for path, score, flag in zip(images, expected.ood_scores, expected.ood):
    assert float(rows[str(path)]['ood_score']) == pytest.approx(score, rel=1e-6)
    assert rows[str(path)]['ood'] == str(bool(flag))
  assert rows[str(tmp_path / 'black.png')]['ood'] == 'True'
  assert rows[str(tmp_path / 'broken.png')]['ood_score'] == rows[str(tmp_path / 'broken.png')]['ood'] == ''
  assert summary['ood'] == int(expected.ood.sum()) >= 1
  assert summary['ood_threshold'] == pytest.approx(expected.ood_threshold)
