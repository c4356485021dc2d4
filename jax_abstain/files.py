"""Files: the one atomic writer, JSON, the checks of input and output paths, folder listings.

    files.atomic_write("runs/a/splits.md", text)               # str or bytes
    files.atomic_write("fig.png", lambda f: fig.savefig(f))     # or a writer of a binary file
    with files.atomic_directory("out/model", overwrite=True) as tmp:
      ...                                                       # fill tmp; renamed on success
    files.write_json("results.json", {"acc": np.float32(0.9)})  # numpy scalars and arrays too
    results = files.read_json("results.json")
    path = files.check_file("runs/a/reports/era.csv", "report", "--models")
    out = files.check_output("out.json", "--json", overwrite=True)
    names, skipped = files.visible_entries("data/rail")    # no .DS_Store, __MACOSX, ...

A write goes to a temporary file in the destination's folder (``.<name>.<random>.tmp``), is
flushed and fsync'ed, and replaces the destination with ``os.replace``: readers see the old
file or the new one, never a part. An interrupted write (an exception, Ctrl-C) removes the
temporary file and leaves the old file as it was. Temporary files and folders are created
with mode 0666 / 0777 and the process umask, so results get the same permissions as any file
the user writes (``tempfile.mkstemp`` would leave them 0600). See docs/design.md, "Who owns
what".

Path checks raise `jax_abstain.errors.UserError` with one line naming the argument, before
anything is written.
"""
import contextlib
import json
import os
import pathlib
import secrets
import shutil

import numpy as np

from jax_abstain.errors import UserError


def _fsync_folder(folder: pathlib.Path) -> None:
  """Makes a rename in `folder` durable (a no-op where folders cannot be opened)."""
  try:
    fd = os.open(folder, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def _temp_name(path: pathlib.Path) -> pathlib.Path:
  return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def atomic_write(path, data) -> pathlib.Path:
  """Writes `data` to `path` atomically, with the user's umask; creates missing folders.

  Args:
    path: destination file (replaced if it exists).
    data: ``str`` (written as UTF-8), ``bytes``, or a callable ``write(f)`` that writes to a
      binary file object (``fig.savefig``, ``np.savez``, ``torch.save`` accept one).

  Returns:
    `path` as a Path.

  Raises:
    TypeError: `data` is none of the three.
    OSError: the folder cannot be written; nothing is left behind.
  """
  path = pathlib.Path(path)
  if isinstance(data, str):
    data = data.encode("utf-8")
  if not isinstance(data, (bytes, bytearray, memoryview)) and not callable(data):
    raise TypeError(f"atomic_write: expected str, bytes or a writer, got {type(data).__name__}")
  path.parent.mkdir(parents=True, exist_ok=True)
  while True:
    tmp = _temp_name(path)
    try:  # O_EXCL with mode 0666: the kernel applies the umask, as for any new file.
      fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
      break
    except FileExistsError:
      continue
  try:
    with os.fdopen(fd, "wb") as f:
      if callable(data):
        data(f)
      else:
        f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  _fsync_folder(path.parent)
  return path


@contextlib.contextmanager
def atomic_directory(path, *, overwrite: bool = False):
  """Yields a new temporary folder beside `path`, renamed to `path` when the block succeeds.

  The folder is created with mode 0777 and the user's umask. If the block raises, the
  temporary folder is removed and `path` is left as it was.

  Args:
    path: destination folder.
    overwrite: replace an existing non-empty `path` (else it is refused).

  Raises:
    UserError: `path` exists, is not empty and `overwrite` is false.
  """
  path = pathlib.Path(path)
  if path.exists() and any(path.iterdir()) and not overwrite:
    raise UserError(f"output directory {path} is not empty; choose another or delete it")
  path.parent.mkdir(parents=True, exist_ok=True)
  while True:
    tmp = _temp_name(path)
    try:
      os.mkdir(tmp, 0o777)
      break
    except FileExistsError:
      continue
  try:
    yield tmp
    if path.exists():
      shutil.rmtree(path)
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  _fsync_folder(path.parent)


def _json_default(value):
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.floating):
    return float(value)
  if isinstance(value, np.bool_):
    return bool(value)
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path, obj, *, indent: int = 2) -> pathlib.Path:
  """Writes `obj` as JSON (numpy scalars and arrays become numbers and lists), atomically."""
  return atomic_write(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def read_json(path):
  """Reads a JSON file.

  Raises:
    UserError: the file is missing or not valid JSON.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserError(f"no such file: {path}")
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f"{path}: not valid JSON ({getattr(e, 'msg', e)})") from None


# File kinds: what `check_file` looks for beyond existence.
FILE_KINDS = ("file", "folder", "report", "json", "model", "checkpoint", "config")


def _first_line(path: pathlib.Path) -> str:
  with path.open("rb") as f:
    return f.readline(4096).decode("utf-8", "replace").strip()


def _check_content(p: pathlib.Path, kind: str, name: str) -> None:
  """The checks of `check_file` beyond existence and file-or-folder."""
  if kind == "model" and not (p / "manifest.json").is_file():
    raise UserError(f"{name}: {p} is not a model directory (no manifest.json); write one with "
                    "models.save or python -m jax_abstain.cli.port")
  if kind == "report" and not _first_line(p).startswith("sample_idx"):
    raise UserError(f"{name}: {p} is not a per-sample report (expected a CSV whose header starts "
                    "with sample_idx)")
  if kind == "json":
    try:
      json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise UserError(f"{name}: {p} is not valid JSON ({getattr(e, 'msg', e)})") from None
  if kind == "checkpoint" and p.stat().st_size == 0:
    raise UserError(f"{name}: {p} is empty (an interrupted download?)")
  if kind == "config" and p.suffix != ".py":
    raise UserError(f"{name}: expected a .py config file, got {p.name}")


def check_file(path, kind: str = "file", name: str = "path") -> pathlib.Path:
  """Checks that `path` exists and looks like a `kind` file; returns it as a Path.

  Kinds: ``file``, ``folder``, ``report`` (a per-sample CSV whose header starts with
  ``sample_idx``), ``json``, ``model`` (a folder with ``manifest.json``), ``checkpoint``
  (not empty; the reader checks the format), ``config`` (a ``.py`` file).

  Raises:
    UserError: one line naming `name`: nothing given, missing, a folder for a file (or the
      reverse), or content that is not of `kind`; a missing file whose ``.partial`` exists
      is reported as an unfinished job.
  """
  if kind not in FILE_KINDS:
    raise UserError(f"kind: expected one of {', '.join(FILE_KINDS)}, got {kind!r}")
  if path is None or str(path).strip() == "":
    raise UserError(f"{name}: expected a {kind} path, got nothing")
  p = pathlib.Path(path).expanduser()
  folder = kind in ("folder", "model")
  if not p.exists() and kind == "model":
    raise UserError(f"{name}: {p} is not a model directory (it does not exist)")
  if not p.exists():
    partial = p.with_name(p.name + ".partial")
    hint = f" (an unfinished {partial.name} exists: resume the job)" if partial.exists() else ""
    what = kind if kind in ("file", "folder") else f"{kind} {'folder' if folder else 'file'}"
    raise UserError(f"{name}: no such {what}: {p}{hint}")
  if folder and not p.is_dir():
    raise UserError(f"{name}: expected a {kind} folder, got a file: {p}")
  if not folder and not p.is_file():
    raise UserError(f"{name}: expected a {kind} file, got a folder: {p}")
  _check_content(p, kind, name)
  return p


def check_output(path, name: str = "--out", *, folder: bool = False,
                 overwrite: bool = False) -> pathlib.Path:
  """Checks that `path` can be written: not a folder (or file) in the way, unless `overwrite`.

  Raises:
    UserError: nothing given, a file where a folder is wanted (or the reverse), a parent that
      is a file, or an existing file without `overwrite`.
  """
  if path is None or str(path).strip() == "":
    raise UserError(f"{name}: expected an output path, got nothing")
  p = pathlib.Path(path).expanduser()
  if folder and p.is_file():
    raise UserError(f"{name}: {p} is a file; expected a folder")
  if not folder and p.is_dir():
    raise UserError(f"{name}: {p} is a folder; expected a file name")
  for parent in p.parents:
    if parent.exists():
      if not parent.is_dir():
        raise UserError(f"{name}: {parent} is a file, so {p} cannot be created")
      break
  if not overwrite and not folder and p.is_file():
    raise UserError(f"{name}: {p} exists; choose another name or delete it")
  return p


# Entries that operating systems, file managers, NAS boxes and notebooks leave in folders
# (compared lower-case). With every name starting with "." (.ipynb_checkpoints, .DS_Store,
# ._<name> AppleDouble files, .Trashes, .git) they are never data: not classes, images or configs.
SYSTEM_NAMES = frozenset({
    "__macosx", "thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r",
    "@eadir", "#recycle", "#snapshot", "$recycle.bin", "system volume information",
    "lost+found", "__pycache__"})


def is_hidden_or_system(name: str) -> bool:
  """True for a hidden entry (a leading dot), an Office lock file (``~$``) or operating-system
  metadata (`SYSTEM_NAMES`, any case). `name` is an entry name or a path (its last part)."""
  base = os.path.basename(str(name).rstrip("/\\")) or str(name)
  return base.startswith((".", "~$")) or base.lower() in SYSTEM_NAMES


def _windows_hidden(path: str) -> bool:
  """The Windows hidden attribute (False elsewhere)."""
  try:
    attributes = getattr(os.stat(path, follow_symlinks=False), "st_file_attributes", 0)
  except OSError:
    return False
  return bool(attributes & 0x2)   # stat.FILE_ATTRIBUTE_HIDDEN


def visible_entries(folder) -> tuple:
  """Lists a folder without hidden entries and operating-system metadata.

  Args:
    folder: the folder to list.

  Returns:
    (visible, skipped): sorted lists of entry names; `skipped` are those
    `is_hidden_or_system` (or marked hidden on Windows), never to be read as data.
  """
  folder = str(folder)
  visible, skipped = [], []
  for name in sorted(os.listdir(folder)):
    hidden = is_hidden_or_system(name) or _windows_hidden(os.path.join(folder, name))
    (skipped if hidden else visible).append(name)
  return visible, skipped
