"""TFDS builder `chest_xray_pneumonia`: the Kermany et al. (2018) pediatric chest X-rays, one config per stored size."""

import dataclasses
import hashlib
import logging

import numpy as np
from etils import epath
import tensorflow_datasets as tfds

from pneumojax import atomic
from pneumojax.data import sources
from pneumojax.data.images import IMAGE_SUFFIXES, ImageReadError, decode_grayscale, resize

RESOLUTIONS = (28, 64, 128, 224, 299)
RESIZE_METHODS = ('squash', 'crop')
SKIPPED_FILES = 'skipped_files.json'


@dataclasses.dataclass
class ChestXrayConfig(tfds.core.BuilderConfig):
  resolution: int = 224
  resize: str = 'squash'


def config_name(resolution: int, resize_method: str = 'squash') -> str:
  return f'{resize_method}_{resolution}'


def _make_config(resolution: int, resize_method: str) -> ChestXrayConfig:
  how = ('whole image resized to a square (aspect ratio squashed), as the papers did' if resize_method == 'squash'
         else 'centred square of the short edge, then resized, as MedMNIST did')
  return ChestXrayConfig(
      name=config_name(resolution, resize_method), resolution=resolution, resize=resize_method,
      description=f'{resolution}x{resolution} grayscale uint8: {how}; PIL antialiased bilinear.')


class ChestXrayPneumonia(tfds.core.GeneratorBasedBuilder):
  """Kermany et al. pediatric chest X-rays: normal vs pneumonia, with bacterial/viral subtype and patient id."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = [_make_config(r, m) for m in RESIZE_METHODS for r in RESOLUTIONS]
  DEFAULT_CONFIG_NAME = config_name(224)
  MANUAL_DOWNLOAD_INSTRUCTIONS = sources.DOWNLOAD_HELP

  def __init__(self, *, skip_unreadable: bool = False, archive: str | None = None, **kwargs):
    """`skip_unreadable` leaves out files that cannot be decoded (listed in skipped_files.json) instead of failing;
    `archive` names the zip in the manual dir to read when it holds several."""
    self._skip_unreadable = skip_unreadable
    self._archive = archive
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.resolution
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(size, size, 1), encoding_format='png'),
            'label': tfds.features.ClassLabel(names=['normal', 'pneumonia']),
            'subtype': tfds.features.ClassLabel(names=list(sources.SUBTYPES)),
            'patient_id': tfds.features.Text(),
            'filename': tfds.features.Text(),     # <split>/<CLASS>/<original name>
            'original_height': np.int32,
            'original_width': np.int32,
            'sha256': tfds.features.Text(),       # of the original file's bytes: finds byte-identical duplicates
        }),
        supervised_keys=('image', 'label'),
        homepage='https://data.mendeley.com/datasets/rscbjbr9sj/2',
        citation="""@article{kermany2018,
  title={Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep Learning},
  author={Kermany, Daniel S. and Goldbaum, Michael and others},
  journal={Cell}, volume={172}, number={5}, pages={1122--1131}, year={2018},
  doi={10.1016/j.cell.2018.02.010}}""",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    self._source = source = sources.open_source(dl_manager.manual_dir, self._archive)
    files = source.image_files()
    logging.info('Reading %d files from %s (root %r).', len(files), source.location, source.root)
    skipped = []
    splits = sorted({f.split for f in files}, key=sources.SPLITS.index)
    generators = {s: self._generate_examples(source, [f for f in files if f.split == s], skipped) for s in splits}
    self._skipped = skipped
    return generators

  def _generate_examples(self, source, files, skipped):
    cfg = self.builder_config
    for f in files:
      try:
        data, pixels = _read(source, f)
      except ImageReadError as e:
        if not self._skip_unreadable:
          raise ImageReadError(f'{e}\nOr pass --skip_unreadable to leave it out (it is then listed in the '
                               'report).') from None
        skipped.append({'file': f.relpath, 'error': str(e)})
        continue
      patient_id, subtype = sources.parse_file_name(f.relpath, f.label)
      yield f.relpath, {
          'image': resize(pixels, cfg.resolution, cfg.resize)[..., None],
          'label': f.label.lower(),
          'subtype': subtype,
          'patient_id': patient_id,
          'filename': f.relpath,
          'original_height': pixels.shape[0],
          'original_width': pixels.shape[1],
          'sha256': hashlib.sha256(data).hexdigest(),
      }

  def _download_and_prepare(self, dl_manager, download_config):
    try:
      super()._download_and_prepare(dl_manager, download_config)
    finally:
      self._source.close()
    # Skipped files are part of the dataset's provenance: keep the list beside the TFDS files.
    atomic.write_json(epath.Path(self.data_dir) / SKIPPED_FILES, self._skipped)


def _read(source, f: sources.ImageFile) -> tuple[bytes, np.ndarray]:
  """(the file's bytes, uint8 [H, W]); ImageReadError naming the file by `source` and <split>/<CLASS>/<name>."""
  name = f'{source.location}: {f.relpath}'
  if not f.name.lower().endswith(IMAGE_SUFFIXES):  # Thumbs.db, notes.txt, ...: not part of the dataset.
    raise ImageReadError(f'{name}: not a {"/".join(IMAGE_SUFFIXES)} file. Remove it from the class folder.')
  try:
    data = source.read(f.relpath)
  except OSError as e:  # A dangling link, no permission, ...
    raise ImageReadError(f'{name}: cannot be read ({e}).') from e
  pixels, notes = decode_grayscale(data, name)
  for note in notes:
    logging.warning('%s: %s', name, note)
  return data, pixels
