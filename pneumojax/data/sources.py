"""Finds the chest X-ray files in whatever the user downloaded: an extracted folder or an archive, read in place.

Accepted layouts (split and class folder names are case-insensitive):
  <root>/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg                 the extracted Kaggle folder (root may be
                                                                    chest_xray/ or the nested chest_xray/chest_xray/)
  archive.zip                    the Kaggle archive, which holds the same tree twice (chest_xray/ and
                                 chest_xray/chest_xray/): the shallower copy is used
  ChestXRay2017.zip              the Mendeley original: chest_xray/{train,test}/..., no val split
"""

import dataclasses
import os
import re
import zipfile
from pathlib import Path, PurePosixPath

from pneumojax.data.images import IMAGE_SUFFIXES

SPLITS = ('train', 'val', 'test')
CLASSES = ('NORMAL', 'PNEUMONIA')
SUBTYPES = ('normal', 'bacteria', 'virus')
KNOWN_ARCHIVES = ('archive.zip', 'ChestXRay2017.zip', 'chest-xray-pneumonia.zip')
_MAX_FOLDER_DEPTH = 4

DOWNLOAD_HELP = """\
pneumojax needs the Kermany et al. (2018) pediatric chest X-ray images. Get either:
  - Kaggle "Chest X-Ray Images (Pneumonia)", dataset paultimothymooney/chest-xray-pneumonia
    (https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia): archive.zip, or its extracted
    chest_xray/ folder with train/, val/, test/ and NORMAL/, PNEUMONIA/ inside each;
  - Mendeley Data "Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images for Classification",
    doi:10.17632/rscbjbr9sj.2: ChestXRay2017.zip (train/ and test/ only).
Put the zip or the extracted folder in one directory and pass it as --manual_dir (or set $PNEUMOJAX_MANUAL_DIR)."""


class LayoutError(ValueError):
  """The manual directory does not hold the expected layout; the message says what was found and expected."""


@dataclasses.dataclass(frozen=True)
class ImageFile:
  split: str      # 'train', 'val' or 'test'
  label: str      # 'NORMAL' or 'PNEUMONIA'
  relpath: str    # '<split>/<CLASS>/<name>' as found (original case)

  @property
  def name(self) -> str:
    return PurePosixPath(self.relpath).name


_PERSON = re.compile(r'^(person\d+)_(bacteria|virus)_\d+', re.IGNORECASE)
_IM = re.compile(r'^((?:NORMAL2-)?IM-\d+)-\d+', re.IGNORECASE)


def parse_file_name(name: str, label: str) -> tuple[str, str]:
  """Returns (patient_id, subtype) from an original file name (or its path, which errors then name), checked
  against the class folder.

  personN_bacteria_M.jpeg / personN_virus_M.jpeg are pneumonia of patient personN; IM-XXXX-YYYY.jpeg and
  NORMAL2-IM-XXXX-YYYY.jpeg are normal images of patient IM-XXXX (NORMAL2-IM-XXXX is a separate numbering).
  """
  stem = PurePosixPath(name).stem
  if match := _PERSON.match(stem):
    patient, subtype = match.group(1).lower(), match.group(2).lower()
  elif match := _IM.match(stem):
    patient, subtype = match.group(1).upper(), 'normal'
  else:
    raise LayoutError(f'{name}: file name matches neither personN_(bacteria|virus)_M nor [NORMAL2-]IM-XXXX-YYYY, '
                      'so patient and subtype are unknown. Keep the original Kaggle/Mendeley file names.')
  if (subtype == 'normal') != (label == 'NORMAL'):
    raise LayoutError(f'{name}: a {subtype} file name in the {label} folder. Move it to the right class folder.')
  return patient, subtype


class Source:
  """A tree of files (a folder or a zip archive) with a chest X-ray layout at `root` inside it."""

  def __init__(self, location: str):
    self.location = location
    self.root = ''

  def paths(self) -> list[str]:
    raise NotImplementedError

  def read(self, relpath: str) -> bytes:
    raise NotImplementedError

  def close(self):
    pass

  def _split_dirs(self) -> set[str]:
    """Split folders present under root, including empty ones."""
    raise NotImplementedError

  def _locate_root(self, paths: list[str]) -> None:
    """Sets `root` to the shallowest folder that has split/class/file below it."""
    roots = set()
    for path in paths:
      parts = PurePosixPath(path).parts
      if len(parts) >= 3 and parts[-3].lower() in SPLITS and not _is_junk(parts):
        roots.add(PurePosixPath(*parts[:-3]).as_posix() if len(parts) > 3 else '')
    if not roots:
      raise LayoutError(f'{self.location}: no {{train,val,test}}/{{NORMAL,PNEUMONIA}}/*.jpeg layout found.\n'
                        + DOWNLOAD_HELP)
    depth = min(_depth(r) for r in roots)
    shallowest = sorted(r for r in roots if _depth(r) == depth)
    # The Kaggle archive holds a second copy under chest_xray/chest_xray/; a deeper copy is ignored on purpose.
    if len(shallowest) > 1:
      raise LayoutError(f'{self.location}: several datasets found ({", ".join(shallowest)}). '
                        'Point --manual_dir at exactly one of them.')
    self.root = shallowest[0]

  def image_files(self) -> list[ImageFile]:
    """Lists every file under root/<split>/<class>/, refusing unknown class folders and empty splits."""
    files = []
    prefix = PurePosixPath(self.root).parts
    for path in self.paths():
      parts = PurePosixPath(path).parts
      if parts[:len(prefix)] != prefix or _is_junk(parts):
        continue
      rel = parts[len(prefix):]
      if len(rel) < 2 or rel[0].lower() not in SPLITS:
        continue
      if len(rel) != 3:
        raise LayoutError(f'{self.location}: {path} is not at <split>/<NORMAL|PNEUMONIA>/<file>. '
                          'Move it or remove it.')
      split, label, _ = rel
      if label.upper() not in CLASSES:
        raise LayoutError(f'{self.location}: unknown class folder {"/".join(parts[:-1])!r}; expected only '
                          f'{" and ".join(CLASSES)} inside {split}/. Remove or rename it.')
      files.append(ImageFile(split.lower(), label.upper(), PurePosixPath(*rel).as_posix()))
    for split in self._split_dirs():
      if not any(f.split == split and f.name.lower().endswith(IMAGE_SUFFIXES) for f in files):
        raise LayoutError(f'{self.location}: the {split} split has no images (expected '
                          f'{split}/NORMAL/*.jpeg and {split}/PNEUMONIA/*.jpeg). Add them or remove the folder.')
    return sorted(files, key=lambda f: f.relpath)


class FolderSource(Source):

  def __init__(self, folder: Path):
    super().__init__(str(folder))
    self._folder = folder
    self._locate_root(self.paths())

  def paths(self) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(self._folder):
      rel = Path(dirpath).relative_to(self._folder)
      if len(rel.parts) >= _MAX_FOLDER_DEPTH + 3:
        dirnames.clear()
      dirnames[:] = [d for d in dirnames if not _is_junk((d,))]
      found.extend((rel / name).as_posix() for name in filenames)
    return found

  def read(self, relpath: str) -> bytes:
    return (self._folder / self.root / relpath).read_bytes()

  def _split_dirs(self) -> set[str]:
    return {p.name.lower() for p in (self._folder / self.root).iterdir() if p.is_dir() and p.name.lower() in SPLITS}


class ZipSource(Source):
  """Reads members straight from the archive: nothing is extracted to disk."""

  def __init__(self, path: Path):
    super().__init__(str(path))
    try:
      self._zip = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
      raise LayoutError(f'{path}: not a readable zip archive ({e}). Download it again.') from e
    self._locate_root(self.paths())

  def paths(self) -> list[str]:
    return [info.filename for info in self._zip.infolist() if not info.is_dir()]

  def read(self, relpath: str) -> bytes:
    return self._zip.read(PurePosixPath(self.root, relpath).as_posix())

  def close(self):
    self._zip.close()

  def _split_dirs(self) -> set[str]:
    prefix = PurePosixPath(self.root).parts
    dirs = set()
    for name in self._zip.namelist():
      parts = PurePosixPath(name).parts
      if len(parts) > len(prefix) and parts[:len(prefix)] == prefix and parts[len(prefix)].lower() in SPLITS:
        if len(parts) > len(prefix) + 1 or name.endswith('/'):
          dirs.add(parts[len(prefix)].lower())
    return dirs


def open_source(manual_dir: str | os.PathLike, archive: str | None = None) -> Source:
  """Finds the data in `manual_dir`: an extracted folder first, then a zip (`archive` names one if several)."""
  manual_dir = Path(manual_dir)
  if manual_dir.is_file():
    return ZipSource(manual_dir)
  if not manual_dir.is_dir():
    raise LayoutError(f'{manual_dir}: no such directory.\n' + DOWNLOAD_HELP)
  if archive:
    return ZipSource(manual_dir / archive)
  try:
    return FolderSource(manual_dir)
  except LayoutError as folder_error:
    zips = sorted(manual_dir.glob('*.zip'), key=lambda p: (p.name not in KNOWN_ARCHIVES, p.name))
    if not zips:
      raise folder_error
    if len(zips) > 1 and zips[1].name in KNOWN_ARCHIVES:
      raise LayoutError(f'{manual_dir}: several archives ({", ".join(z.name for z in zips)}); '
                        'name one with --archive.') from None
    return ZipSource(zips[0])


def _depth(root: str) -> int:
  return len(PurePosixPath(root).parts)


def _is_junk(parts) -> bool:
  """macOS metadata (__MACOSX/, ._*, .DS_Store) and other hidden entries, which archives often carry."""
  return any(p == '__MACOSX' or p.startswith('.') for p in parts)
