"""The prepared dataset of a data config: where it is found (the config field, then an environment variable, then the
TFDS default), and its preparation from the downloaded data when it is not there yet."""

import os

import tensorflow_datasets as tfds

from pneumojax.data import builder as builder_lib
from pneumojax.data import sources

DATA_DIR_ENV = 'PNEUMOJAX_DATA_DIR'      # prepared TFDS files
MANUAL_DIR_ENV = 'PNEUMOJAX_MANUAL_DIR'  # the downloaded archive or extracted folder


def resolve_data_dir(data_dir: str | None) -> str | None:
  """None means TFDS's own default (~/tensorflow_datasets or $TFDS_DATA_DIR)."""
  return data_dir or os.environ.get(DATA_DIR_ENV) or None


def resolve_manual_dir(manual_dir: str | None) -> str | None:
  return manual_dir or os.environ.get(MANUAL_DIR_ENV) or None


def get_builder(data_config, prepare: bool = True) -> builder_lib.ChestXrayPneumonia:
  """The builder for `data_config.resolution`/`resize`, prepared from the manual dir if it is not yet built."""
  manual_dir, archive = resolve_manual_dir(data_config.get('manual_dir')), data_config.get('archive')
  if manual_dir and os.path.isfile(manual_dir):  # A zip named directly: TFDS wants its folder.
    manual_dir, archive = os.path.dirname(os.path.abspath(manual_dir)), os.path.basename(manual_dir)
  builder = builder_lib.ChestXrayPneumonia(
      config=builder_lib.config_name(data_config.resolution, data_config.resize),
      data_dir=resolve_data_dir(data_config.get('data_dir')),
      skip_unreadable=data_config.get('skip_unreadable', False), archive=archive)
  if builder.is_prepared() or not prepare:
    return builder
  if manual_dir is None:
    raise FileNotFoundError(
        f'The dataset {builder.info.full_name} is not prepared in {builder.data_dir_root} and no manual dir is '
        f'set (--manual_dir, config.data.manual_dir or ${MANUAL_DIR_ENV}).\n' + sources.DOWNLOAD_HELP)
  # Check the layout before TFDS creates anything, so a wrong path fails fast with our message.
  sources.open_source(manual_dir, archive).close()
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder
