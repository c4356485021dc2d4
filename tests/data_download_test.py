"""CIFAR by name, downloaded: `data.load("cifar10"|"cifar100", split)` without a path fetches the
official archive (a tiny one in the official format, served on a loopback HTTP server) into
the data cache, checks its md5, resumes a cut download, refuses a wrong checksum (nothing
cached), says in one line what to download where when offline (nothing written), and reads
the cache without the network afterwards."""
import hashlib
import socket

import numpy as np
import pytest

from jax_abstain import data, download
from jax_abstain.data import cifar
from jax_abstain.errors import UserError
import loopback_server
import tiny_cifar

BLOBS = {name: tiny_cifar.archive_bytes(name, n=5) for name in ("cifar10", "cifar100")}


def _dead_url():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return f"http://127.0.0.1:{s.getsockname()[1]}/"


@pytest.fixture
def cache(tmp_path, monkeypatch):
  """An empty data cache, and the served archives' md5 as the known checksums."""
  monkeypatch.setenv(download.ENV_DATA, str(tmp_path / "data"))
  monkeypatch.setattr(cifar, "ARCHIVES", {
      name: (cifar.ARCHIVES[name][0], hashlib.md5(blob).hexdigest())
      for name, blob in BLOBS.items()})
  return tmp_path / "data"


def _serve():
  return loopback_server.serve({f"/mirror/{cifar.ARCHIVES[n][0]}": b for n, b in BLOBS.items()})


def test_official_sources_and_checksums():
  # The values torchvision's CIFAR10/CIFAR100 datasets check (tgz_md5) and the Toronto page.
  assert cifar.ARCHIVES == {
      "cifar10": ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
      "cifar100": ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")}
  assert cifar.archive_url("cifar10") == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


@pytest.mark.parametrize("name,train_n,classes", [("cifar10", 25, 10), ("cifar100", 5, 100)])
def test_download_with_progress_then_cache_hit_without_network(
    name, train_n, classes, cache, tmp_path, monkeypatch, capsys):
  with _serve() as server:
    monkeypatch.setenv(cifar.ENV_URL, server.url("/mirror"))
    x, y = data.load(name, "train")
    assert server.requests == [(f"/mirror/{cifar.ARCHIVES[name][0]}", None)]
  assert "downloading the " + name in capsys.readouterr().err       # tqdm's bar
  cached = cache / cifar.ARCHIVES[name][0]
  assert cached.read_bytes() == BLOBS[name] and sorted(p.name for p in cache.iterdir()) == [
      cached.name]
  # The same arrays as the archive read from a local file, and the known first image.
  local = tmp_path / "local.tar.gz"
  local.write_bytes(BLOBS[name])
  x_local, y_local = data.load(name, "train", path=str(local))
  np.testing.assert_array_equal(x, x_local)
  np.testing.assert_array_equal(y, y_local)
  assert x.shape == (train_n, 32, 32, 3) and 0 <= y.min() and y.max() < classes
  np.testing.assert_allclose(x[0, 5, 7], np.array([10, 20, 30]) / 255, atol=1e-7)
  # The server is gone: the cached archive is read without the network.
  monkeypatch.setenv(cifar.ENV_URL, _dead_url())
  xt, _ = data.load(name, "test", progress=False)
  assert xt.shape == (5, 32, 32, 3)
  assert data.fetch(name, progress=False) == cached


def test_cut_download_resumes(cache, monkeypatch):
  with _serve() as server:
    monkeypatch.setenv(cifar.ENV_URL, server.url("/mirror/"))
    server.cut_after = 3000
    with pytest.raises(UserError, match="cut after 3000 bytes.*run again to resume"):
      data.load("cifar10", "test", progress=False)
    part = cache / "cifar-10-python.tar.gz.part"
    assert part.read_bytes() == BLOBS["cifar10"][:3000]
    server.cut_after = None
    x, _ = data.load("cifar10", "test", progress=False)
    assert server.requests[-1] == ("/mirror/cifar-10-python.tar.gz", "bytes=3000-")
  assert x.shape == (5, 32, 32, 3) and not part.exists()
  assert (cache / "cifar-10-python.tar.gz").read_bytes() == BLOBS["cifar10"]


def test_wrong_checksum_is_refused_and_nothing_cached(cache, monkeypatch):
  monkeypatch.setitem(cifar.ARCHIVES, "cifar100", ("cifar-100-python.tar.gz", "0" * 32))
  with _serve() as server:
    monkeypatch.setenv(cifar.ENV_URL, server.url("/mirror"))
    with pytest.raises(UserError, match=r"failed its check \(md5 [0-9a-f]{32}, expected 0{32}\)"
                                        r"; nothing was cached"):
      data.load("cifar100", "train", progress=False)
  assert list(cache.iterdir()) == []


def test_offline_is_one_line_and_writes_nothing(cache, monkeypatch):
  url = _dead_url()
  monkeypatch.setenv(cifar.ENV_URL, url)
  with pytest.raises(UserError) as e:
    data.load("cifar10", "test", progress=False)
  message = str(e.value)
  assert "\n" not in message and "download it by hand" in message
  assert f"{url}cifar-10-python.tar.gz" in message
  assert str(cache / "cifar-10-python.tar.gz") in message
  assert not cache.exists()


def test_a_path_is_read_as_before_and_never_downloads(cache, tmp_path, monkeypatch):
  monkeypatch.setenv(cifar.ENV_URL, _dead_url())
  archive, _ = tiny_cifar.write_cifar(str(tmp_path), "cifar10", n=3)
  assert data.load("cifar10", "test", path=archive)[0].shape == (3, 32, 32, 3)
  assert data.fetch("cifar10", archive) == archive and data.fetch("synthetic") is None
  with pytest.raises(UserError, match="train and test only"):   # before any download
    data.load("cifar10", "val")
  assert not cache.exists()
