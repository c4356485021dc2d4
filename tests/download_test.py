"""download.fetch against a loopback HTTP server: a download, the cache hit without network,
resume after a cut connection, a server that ignores ranges, a wrong checksum (nothing
cached), offline (one line naming where to put the file, nothing written), the umask."""
import hashlib
import os
import socket

import pytest

from jax_abstain import download
from jax_abstain.errors import UserError
import loopback_server

BLOB = os.urandom(300_000)
SHA = hashlib.sha256(BLOB).hexdigest()
MD5 = hashlib.md5(BLOB).hexdigest()


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_download_then_cache_hit_without_network(tmp_path):
  dest = tmp_path / "cache" / "a.bin"
  with loopback_server.serve({"/a.bin": BLOB}) as server:
    got = download.fetch(server.url("/a.bin"), dest, sha256=SHA, md5=MD5, size=len(BLOB),
                         progress=False)
    assert got == dest and dest.read_bytes() == BLOB
    assert server.requests == [("/a.bin", None)]
  # The server is gone: a second call must not need it.
  assert download.fetch("http://127.0.0.1:9/a.bin", dest, sha256=SHA, progress=False) == dest
  assert sorted(p.name for p in dest.parent.iterdir()) == ["a.bin"]


def test_resume_after_cut_connection_asks_for_the_rest(tmp_path):
  dest = tmp_path / "a.bin"
  with loopback_server.serve({"/a.bin": BLOB}) as server:
    server.cut_after = 100_000
    with pytest.raises(UserError, match=r"cut after \d+ bytes.*run again to resume"):
      download.fetch(server.url("/a.bin"), dest, sha256=SHA, progress=False)
    part = tmp_path / "a.bin.part"
    assert part.read_bytes() == BLOB[:100_000] and not dest.exists()
    server.cut_after = None
    download.fetch(server.url("/a.bin"), dest, sha256=SHA, progress=False)
    assert server.requests[-1] == ("/a.bin", "bytes=100000-")
  assert dest.read_bytes() == BLOB and not part.exists()


def test_server_without_ranges_starts_over(tmp_path):
  dest = tmp_path / "a.bin"
  (tmp_path / "a.bin.part").write_bytes(BLOB[:5000])
  with loopback_server.serve({"/a.bin": BLOB}, ranges=False) as server:
    download.fetch(server.url("/a.bin"), dest, sha256=SHA, progress=False)
  assert dest.read_bytes() == BLOB


def test_stale_part_longer_than_the_file_starts_over(tmp_path):
  dest = tmp_path / "a.bin"
  (tmp_path / "a.bin.part").write_bytes(BLOB + b"junk")
  with loopback_server.serve({"/a.bin": BLOB}) as server:
    download.fetch(server.url("/a.bin"), dest, md5=MD5, progress=False)
  assert dest.read_bytes() == BLOB


def test_wrong_checksum_is_refused_and_nothing_cached(tmp_path):
  dest = tmp_path / "cache" / "a.bin"
  with loopback_server.serve({"/a.bin": BLOB}) as server:
    with pytest.raises(UserError, match=r"failed its check \(sha256 [0-9a-f]+, expected 0+\)"):
      download.fetch(server.url("/a.bin"), dest, sha256="0" * 64, progress=False)
  assert list(dest.parent.iterdir()) == []


def test_damaged_cache_entry_is_fetched_again(tmp_path):
  dest = tmp_path / "a.bin"
  dest.write_bytes(b"not it")
  with loopback_server.serve({"/a.bin": BLOB}) as server:
    download.fetch(server.url("/a.bin"), dest, size=len(BLOB), progress=False)
    assert len(server.requests) == 1
  assert dest.read_bytes() == BLOB


def test_offline_is_one_line_naming_the_file_and_writes_nothing(tmp_path):
  dest = tmp_path / "cache" / "data" / "cifar-10-python.tar.gz"
  url = f"http://127.0.0.1:{_free_port()}/cifar-10-python.tar.gz"
  with pytest.raises(UserError) as e:
    download.fetch(url, dest, progress=False, timeout=5)
  message = str(e.value)
  assert "\n" not in message and str(dest) in message and url in message
  assert "download it by hand" in message
  assert not (tmp_path / "cache").exists()


def test_http_error_is_one_line(tmp_path):
  with loopback_server.serve({}) as server:
    with pytest.raises(UserError, match=r"HTTP 404"):
      download.fetch(server.url("/missing.bin"), tmp_path / "m.bin", progress=False)
  assert list(tmp_path.iterdir()) == []


def test_files_get_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    with loopback_server.serve({"/a.bin": BLOB}) as server:
      dest = download.fetch(server.url("/a.bin"), tmp_path / "d" / "a.bin", progress=False)
  finally:
    os.umask(old)
  assert dest.stat().st_mode & 0o777 == 0o644
  assert dest.parent.stat().st_mode & 0o777 == 0o755


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
  monkeypatch.delenv(download.ENV_DATA, raising=False)
  monkeypatch.setenv(download.ENV_CACHE, str(tmp_path / "c"))
  assert download.cache_dir() == tmp_path / "c"
  assert download.cache_dir("models") == tmp_path / "c" / "models"
  assert download.cache_dir("data") == tmp_path / "c" / "data"
  monkeypatch.setenv(download.ENV_DATA, str(tmp_path / "d"))
  assert download.cache_dir("data") == tmp_path / "d"
  monkeypatch.delenv(download.ENV_CACHE)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
  assert download.cache_dir("models") == tmp_path / "x" / "jax_abstain" / "models"
