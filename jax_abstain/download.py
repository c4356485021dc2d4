"""Downloads into a cache: resumable, checked (checksum and size), atomic, with a progress bar.

    root = download.cache_dir("data")           # $JAX_ABSTAIN_DATA, else <cache>/data
    path = download.fetch(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        root / "cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a")

The cache root is ``$JAX_ABSTAIN_CACHE``, else ``$XDG_CACHE_HOME/jax_abstain``, else
``~/.cache/jax_abstain`` (the XDG rule every Linux tool follows; data sets may live elsewhere
through ``$JAX_ABSTAIN_DATA``).

`fetch` returns at once, without touching the network, when the destination exists and passes
its checks. Otherwise it streams into ``<dest>.part`` and, when that file is complete and its
size and checksum are right, renames it to the destination: readers never see a partial file.
A cut connection keeps the ``.part`` file, and the next call resumes it with an HTTP ``Range``
request (a server that ignores ranges is answered by starting over). A wrong checksum removes
the ``.part`` file and raises: nothing is cached. When the server cannot be reached at all
(offline), one line says which file to download and where to put it, and nothing is written.
Files get the user's umask (plain ``open``).

Written on the standard library (``urllib.request``) rather than `requests`, which is not a
dependency of the package; progress through `tqdm`.
"""
import hashlib
import http.client
import os
import pathlib
import socket
import urllib.error
import urllib.request

from jax_abstain.errors import UserError

ENV_CACHE = "JAX_ABSTAIN_CACHE"
ENV_DATA = "JAX_ABSTAIN_DATA"
_CHUNK = 1 << 20


def cache_dir(kind: str = "") -> pathlib.Path:
  """The cache folder for `kind` (``""``: the root; ``"data"``: data sets; any other name a
  sub-folder such as ``"models"``). Not created here: `fetch` creates what it writes."""
  if kind == "data" and os.environ.get(ENV_DATA):
    return pathlib.Path(os.environ[ENV_DATA]).expanduser()
  if os.environ.get(ENV_CACHE):
    root = pathlib.Path(os.environ[ENV_CACHE]).expanduser()
  else:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    root = pathlib.Path(base) / "jax_abstain"
  return root / kind if kind else root


def _digests(sha256, md5):
  """{algorithm: expected hex digest} of the given checksums."""
  out = {}
  for algorithm, expected in (("sha256", sha256), ("md5", md5)):
    if expected:
      out[algorithm] = expected.lower()
  return out


def _hash_file(path: pathlib.Path, algorithms) -> dict:
  hashers = {a: hashlib.new(a) for a in algorithms}
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(_CHUNK), b""):
      for h in hashers.values():
        h.update(block)
  return hashers


def check(path, *, sha256=None, md5=None, size=None) -> str:
  """Why `path` fails its checks ("" when it passes): its size, then each checksum.

  Args:
    path: a file.
    sha256, md5: expected hex digests (None: not checked).
    size: expected size in bytes (None: not checked).
  """
  path = pathlib.Path(path)
  actual = path.stat().st_size
  if size is not None and actual != size:
    return f"{actual} bytes, expected {size}"
  expected = _digests(sha256, md5)
  for algorithm, h in _hash_file(path, expected).items():
    if h.hexdigest() != expected[algorithm]:
      return f"{algorithm} {h.hexdigest()}, expected {expected[algorithm]}"
  return ""


def _open(url: str, offset: int, timeout: float, what: str, dest: pathlib.Path):
  """The HTTP response for `url` from byte `offset`; one line naming the manual fix if the
  server cannot be reached."""
  request = urllib.request.Request(url, headers={"User-Agent": "jax-abstain"})
  if offset:
    request.add_header("Range", f"bytes={offset}-")
  try:
    return urllib.request.urlopen(request, timeout=timeout)
  except urllib.error.HTTPError as e:
    if e.code == 416 and offset:  # Range past the end: the part is stale; start over.
      return _open(url, 0, timeout, what, dest)
    raise UserError(f"cannot download {what} from {url} (HTTP {e.code} {e.reason}); download "
                    f"it by hand and put it at {dest}") from None
  except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets.
    reason = getattr(e, "reason", e)
    raise UserError(f"cannot download {what} from {url} ({reason}); download it by hand and "
                    f"put it at {dest}") from None


def _stream(response, part: pathlib.Path, append: bool, total, progress: bool, what: str):
  """Copies the response body into `part` (appending when resuming) under a progress bar."""
  from tqdm.auto import tqdm  # Imported here: only downloads need it.
  done = part.stat().st_size if append else 0
  with open(part, "ab" if append else "wb") as f, \
      tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
           desc=f"downloading {what}", disable=not progress, leave=False) as bar:
    for block in iter(lambda: response.read(_CHUNK), b""):
      f.write(block)
      bar.update(len(block))
    f.flush()
    os.fsync(f.fileno())


def fetch(url: str, dest, *, sha256=None, md5=None, size=None, progress: bool = True,
          timeout: float = 60.0, what=None) -> pathlib.Path:
  """Downloads `url` to `dest` unless `dest` is already there and passes its checks.

  Args:
    url: an http(s) or file URL.
    dest: the destination file; its folder is created when the first byte arrives.
    sha256, md5: expected hex digests of the complete file (None: not checked).
    size: expected size in bytes (None: not checked).
    progress: show a tqdm progress bar (bytes; resumed bytes count as done).
    timeout: seconds to wait for the server on connect and on each read.
    what: the file's name in messages (default: the destination's name).

  Returns:
    `dest` as a `pathlib.Path`.

  Raises:
    UserError: the server cannot be reached or answers with an error (nothing written; the
      message names the file to put at `dest` by hand), the connection is cut (the ``.part``
      file stays for the next call to resume), or the download fails its checks (removed).
  """
  dest = pathlib.Path(dest).expanduser()
  what = what or dest.name
  if dest.is_file():
    if not check(dest, sha256=sha256, md5=md5, size=size):
      return dest
    dest.unlink()  # A damaged cache entry (a crash outside fetch, a disk fault): fetch anew.
  part = dest.with_name(dest.name + ".part")
  offset = part.stat().st_size if part.is_file() else 0
  response = _open(url, offset, timeout, what, dest)
  with response:
    append = offset > 0 and getattr(response, "status", 200) == 206
    length = response.headers.get("Content-Length")
    total = int(length) + (offset if append else 0) if length else size
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
      _stream(response, part, append, total, progress, what)
      reason = None
    except (socket.timeout, OSError, http.client.HTTPException) as e:
      reason = e
    got = part.stat().st_size if part.is_file() else 0
    # A server that closes early makes read() return b"" rather than raise: compare lengths.
    if reason is not None or (length and got != total):
      reason = reason or f"{got} of {total} bytes received"
      raise UserError(f"download of {what} from {url} cut after {got} bytes ({reason}); run "
                      f"again to resume") from None
  problem = check(part, sha256=sha256, md5=md5, size=size)
  if problem:
    part.unlink()
    raise UserError(f"download of {what} from {url} failed its check ({problem}); nothing was "
                    f"cached")
  os.replace(part, dest)
  return dest
