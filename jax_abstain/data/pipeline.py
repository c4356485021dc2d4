"""Training and evaluation input with grain: seeded shuffling, augmentation, per-host shards.

    x, y = data.load("cifar10", "train", path=P)
    loader = pipeline.train_loader(x, y, batch_size=200, seed=0, augment="autoaugment")
    it = iter(loader)
    batch = next(it)       # {"image": [200, 32, 32, 3] f32 in [0,1], "label": [200] i32,
                           #  "index": [200] i64 (row of x; use jax.random.fold_in(key, index))}
    state = pipeline.get_state(it)       # str; save it with the model checkpoint
    it = pipeline.restore(loader, state)  # the next batch is the one after `state` was taken
    for batch in pipeline.eval_loader(x_test, y_test, batch_size=100): ...

Order. The rows are first permuted once by ``default_rng(seed)`` (so that a host's shard is a
random part even of class-sorted data such as mnist5k); host `k` of `K` takes the k-th
contiguous slice of that order (slices differ in size by at most one; together they are all
rows, disjoint). grain's IndexSampler then shuffles the host's slice afresh each epoch as a
function of (seed, host, epoch) only. Epochs run back to back (``num_epochs=None``: forever)
and batches may span an epoch boundary; with ``drop_remainder`` only the final partial batch
of a finite run is dropped. Augmentation draws come from ``default_rng([seed, host, u])`` with
u drawn from grain's per-record generator (a function of the seed and the record's position in
the host's stream), so a record's augmented image does not depend on batching, resuming or
worker count, and hosts never share draws. With ``worker_count > 0`` grain groups records
into batches per worker, so which records share a batch depends on the worker count (a saved
state records it; `restore` refuses another); keep it fixed within a run.

We slice the hosts' shards ourselves instead of handing grain `ShardOptions`: with a row count
not divisible by the host count, grain's DataLoader silently skips a record of the larger
shards. ``shard=None`` means one shard per JAX process (``jax.process_index()`` of
``jax.process_count()``, as `grain.sharding.ShardByJaxProcess`); ``shard=(index, count)``
chooses. The per-host batch size is `batch_size`; the global batch is ``batch_size * count``.
"""
import zlib

import grain
import numpy as np

from jax_abstain.data import augment as augment_lib
from jax_abstain.errors import UserError


class ArraySource:
  """Random access to one host's shard of in-memory arrays (a grain data source).

  Element i is ``{"image": x[p[i]], "label": y[p[i]], "index": p[i]}``, p the `shard` slice of
  the rows in ``default_rng(seed)`` order (data order when `seed` is None). The repr names the
  content, so a saved iterator state is refused for different data.
  """

  def __init__(self, x, y, seed=None, shard=(0, 1)):
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
      raise UserError(f"data: x has {len(x)} rows but y has {len(y)}")
    if len(x) == 0:
      raise UserError("data: empty data set")
    self.x, self.y = x, y.astype(np.int32)
    order = (np.arange(len(x)) if seed is None
             else np.random.default_rng(seed).permutation(len(x)))
    start, stop = shard_bounds(len(x), *shard)
    self.order = order[start:stop]
    sample = np.ascontiguousarray(x[::max(1, len(x) // 64)])
    fingerprint = zlib.crc32(self.y.tobytes(), zlib.crc32(sample.tobytes()))
    self._repr = (f"ArraySource(n={len(x)}, shape={x.shape[1:]}, dtype={x.dtype}, "
                  f"seed={seed}, shard={tuple(shard)}, crc={fingerprint:08x})")

  def __len__(self):
    return len(self.order)

  def __getitem__(self, i):
    j = self.order[i]
    return {"image": self.x[j], "label": self.y[j], "index": np.int64(j)}

  def __repr__(self):
    return self._repr


class Augment(grain.transforms.RandomMap):
  """Applies a named augmentation (see `augment.get`) to the element's image.

  `salt` (seed, host) is mixed into the generator: grain's per-record generator depends only on
  seed + stream position, which would repeat across hosts and across neighbouring seeds.
  """

  def __init__(self, name: str, salt=(0, 0)):
    self.name = name
    self.salt = tuple(int(s) for s in salt)
    self.fn = augment_lib.get(name)

  def random_map(self, element, rng):
    rng = np.random.default_rng([*self.salt, int(rng.integers(2**63))])
    image = np.asarray(element["image"], np.float32)
    return dict(element, image=np.asarray(self.fn(image, rng), np.float32))


class _ToFloat(grain.transforms.Map):
  """Images stored as uint8 are scaled to float32 [0, 1]; float images pass through."""

  def map(self, element):
    image = element["image"]
    if image.dtype == np.uint8:
      image = image.astype(np.float32) / 255.0
    return dict(element, image=np.asarray(image, np.float32))


def resolve_shard(shard=None):
  """``(index, count)`` as given, or this JAX process's index among all processes."""
  if shard is None:
    import jax  # Imported here: only multi-host callers who omit `shard` need it.
    return jax.process_index(), jax.process_count()
  index, count = (int(s) for s in shard)
  if not 0 <= index < count:
    raise UserError(f"shard: expected 0 <= index < count, got {tuple(shard)}")
  return index, count


def shard_bounds(n: int, index: int, count: int):
  """[start, stop) of shard `index` of `count` over n rows; sizes differ by at most one."""
  return index * n // count, (index + 1) * n // count


def make_loader(x, y, *, batch_size, seed=0, shuffle=True, augment="none", num_epochs=None,
                shard=None, drop_remainder=True, worker_count=0):
  """A grain DataLoader over arrays.

  Args:
    x: images [N, H, W, C] (float32 in [0, 1], or uint8) or feature vectors [N, D].
    y: int labels [N].
    batch_size: per-host batch size.
    seed: seeds the permutation, the per-epoch shuffles and the augmentation draws.
    shuffle: permute and reshuffle every epoch (training) or keep the order (evaluation).
    augment: name in `augment.AUGMENTATIONS`; needs images.
    num_epochs: passes over the shard; None repeats forever.
    shard: (index, count), or None for one shard per JAX process.
    drop_remainder: drop a final partial batch.
    worker_count: grain worker processes (0: in the main process; more needs a __main__ guard
      and parsed absl flags in the calling program).

  Returns:
    A `grain.DataLoader` whose iterator yields dicts image [B, ...] float32, label [B] int32,
    index [B] int64, and supports get_state/set_state.
  """
  if batch_size < 1:
    raise UserError(f"batch_size must be positive, got {batch_size}")
  if augment != "none" and np.ndim(x) != 4:
    raise UserError(f"augment={augment!r} needs images [N, H, W, C], got shape {np.shape(x)}")
  shard = resolve_shard(shard)
  source = ArraySource(x, y, seed if shuffle else None, shard)
  if len(source) == 0:
    raise UserError(f"shard {shard} of {len(x)} rows is empty; fewer rows than hosts")
  # grain wants a 32-bit seed; mixing in the host makes each host's epoch shuffles differ.
  sampler_seed = int(np.random.default_rng([seed, shard[0]]).integers(2**31))
  sampler = grain.samplers.IndexSampler(
      num_records=len(source), shard_options=grain.sharding.NoSharding(), shuffle=shuffle,
      num_epochs=num_epochs, seed=sampler_seed)
  operations = [_ToFloat()]
  if augment != "none":
    operations.append(Augment(augment, salt=(seed, shard[0])))
  operations.append(grain.transforms.Batch(batch_size, drop_remainder=drop_remainder))
  # Reads from memory need no reader threads; grain's default (16 threads, 500 prefetched
  # records) spends most of its time polling its futures: 3.4k vs 22k images/s on 2 cores.
  read_options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
  return grain.DataLoader(data_source=source, sampler=sampler, operations=operations,
                          worker_count=worker_count, read_options=read_options)


def train_loader(x, y, *, batch_size, seed=0, augment="none", shard=None, worker_count=0):
  """Shuffled, augmented, endless per-host batches of a full `batch_size` (see make_loader)."""
  return make_loader(x, y, batch_size=batch_size, seed=seed, shuffle=True, augment=augment,
                     num_epochs=None, shard=shard, drop_remainder=True,
                     worker_count=worker_count)


def eval_loader(x, y, *, batch_size, shard=None):
  """One pass in data order, last batch possibly smaller; `index` gives each row's position.

  With several hosts and N not divisible by their count, shards differ by one row, so hosts
  may see different batch counts: SPMD evaluation must pad (e.g. to `steps_per_epoch` + 1).
  """
  return make_loader(x, y, batch_size=batch_size, seed=0, shuffle=False, augment="none",
                     num_epochs=1, shard=shard, drop_remainder=False)


def steps_per_epoch(n: int, batch_size: int, shard_count: int = 1) -> int:
  """Full per-host batches in one pass over the smallest shard."""
  return (n // shard_count) // batch_size


def get_state(iterator) -> str:
  """The resumable position of a loader's iterator, as a JSON string (store it anywhere)."""
  return iterator.get_state().decode()


def restore(loader, state: str):
  """A fresh iterator of `loader` positioned where `state` (from `get_state`) was taken."""
  iterator = iter(loader)
  try:
    iterator.set_state(state.encode() if isinstance(state, str) else state)
  except ValueError as e:
    first = str(e).splitlines()[0]
    raise UserError(f"data iterator state does not fit this loader ({first}); different data, "
                    "seed, shard or worker count?") from None
  return iterator
