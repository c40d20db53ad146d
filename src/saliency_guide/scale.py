"""Attributions for whole datasets, sharded over every available device.

:func:`explain_dataset` runs any saliency method of :mod:`saliency_guide.methods`
over a dataset that is too large for one call: it streams fixed-size batches
(:func:`padded_batches`), splits each batch over the devices of a 1-D
:class:`jax.sharding.Mesh` with a :class:`jax.sharding.NamedSharding`, and lets
``jax.jit`` (inside the method) compile one program that runs on all of them at
once. Nothing about the methods changes: a sharded input is all it takes,
because every method is jitted and treats the images of a batch independently.
"""

from __future__ import annotations

import collections
import contextlib
import math
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from saliency_guide.validation import check_callable, check_dataset, check_positive_int

__all__ = ["PaddedBatch", "explain_dataset", "padded_batches"]

#: Show a progress bar by default from this many batches on.
PROGRESS_MIN_BATCHES = 8


def _default_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ("batch",))


def _check_mesh(mesh: Any) -> Mesh:
  if mesh is None:
    return _default_mesh()
  if not isinstance(mesh, Mesh):
    raise TypeError(f"mesh: expected a jax.sharding.Mesh or None, got {type(mesh).__name__}")
  if len(mesh.axis_names) != 1:
    raise ValueError(f"mesh: expected a 1-D mesh (one axis to split the batch over), got axes "
                     f"{mesh.axis_names} of shape {tuple(mesh.devices.shape)}")
  return mesh


def _canonical(x: np.ndarray) -> np.ndarray:
  """64-bit NumPy data as the 32-bit arrays JAX makes of it (without x64), else unchanged."""
  if jax.config.jax_enable_x64:
    return x
  if x.dtype == np.float64:
    return x.astype(np.float32)
  if x.dtype == np.int64:
    return x.astype(np.int32)
  return x


class PaddedBatch(NamedTuple):
  """One batch of :func:`padded_batches`: always ``size`` rows, the first ``count`` real.

  Attributes:
    images: ``(size, H, W, C)`` NumPy images, rows ``start .. start + count - 1``
      of the dataset, then copies of the last of them.
    targets: ``(size,)`` NumPy targets, padded the same way.
    start: index in the dataset of the first row.
    count: number of real rows; the results of the others are to be dropped.
  """

  images: np.ndarray
  targets: np.ndarray
  start: int
  count: int


def padded_batches(
    images: Any, targets: Any, batch_size: int, *, multiple: int = 1
) -> Iterator[PaddedBatch]:
  r"""A dataset in batches of one fixed size, the last one padded, as NumPy arrays.

  With :math:`B` = ``batch_size`` rounded up to a multiple of ``multiple``,
  batch :math:`k` holds images :math:`kB, \dots, \min(kB + B, N) - 1`; the
  last, partial batch is padded to :math:`B` rows by repeating its last image
  (and target). Every batch has the same shape, so a jitted function applied
  to each compiles once; its results for the padding are dropped by keeping
  the first ``count`` rows. Rows are read lazily (``images[a:b]``, so a
  memory-mapped dataset is read one batch at a time), and 64-bit NumPy data
  become the 32-bit arrays JAX would make of them (unless ``jax_enable_x64``).

  Args:
    images: array ``(N, H, W, C)`` (NumPy, JAX or memory-mapped).
    targets: integer array ``(N,)``.
    batch_size: rows per batch, before rounding.
    multiple: round ``batch_size`` up to a multiple of this (e.g. the number of
      devices a batch is split over).

  Returns:
    An iterator of :class:`PaddedBatch`, in dataset order.

  Raises:
    TypeError, ValueError: bad ``images``, ``targets``, ``batch_size`` or ``multiple``.

  Example:
    >>> import numpy as np
    >>> images, targets = np.zeros((5, 2, 2, 1), np.float32), np.arange(5)
    >>> [(b.start, b.count, b.targets.tolist()) for b in padded_batches(images, targets, 2)]
    [(0, 2, [0, 1]), (2, 2, [2, 3]), (4, 1, [4, 4])]
    >>> [b.images.shape[0] for b in padded_batches(images, targets, 3, multiple=2)]
    [4, 4]
  """
  images, targets = check_dataset(images, targets)
  batch_size = check_positive_int("batch_size", batch_size)
  multiple = check_positive_int("multiple", multiple)
  return _padded_batches(images, targets, math.ceil(batch_size / multiple) * multiple)


def _padded_batches(images: Any, targets: Any, size: int) -> Iterator[PaddedBatch]:
  """:func:`padded_batches` on checked arguments, ``size`` rows per batch."""
  for start in range(0, images.shape[0], size):
    x = _canonical(np.asarray(images[start:start + size]))
    t = _canonical(np.asarray(targets[start:start + size]))
    count = x.shape[0]
    if count < size:  # pad the last batch by repeating its last image
      x = np.concatenate([x, np.repeat(x[-1:], size - count, axis=0)])
      t = np.concatenate([t, np.repeat(t[-1:], size - count, axis=0)])
    yield PaddedBatch(x, t, start, count)


def _global_array(batch: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array of ``batch`` laid out by ``sharding``; each process fills its own shards."""
  return jax.make_array_from_callback(batch.shape, sharding, lambda index: batch[index])


def _to_host(tree: Any) -> Any:
  """Every leaf as one NumPy array (gathered from all processes when there are several)."""
  if jax.process_count() > 1:  # pragma: no cover - needs several hosts
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
  return jax.tree.map(np.asarray, tree)


def explain_dataset(
    method: Callable[..., Any],
    model: nnx.Module,
    images: Any,
    targets: Any,
    /,
    *,
    batch_size: int,
    mesh: Mesh | None = None,
    workers: int = 1,
    progress: bool | None = None,
    **options: Any,
) -> Any:
  r"""Apply a saliency method to a whole dataset, batch by batch, sharded over devices.

  For batches :math:`X_k = (x_{kB}, \dots, x_{kB + B - 1})` of ``batch_size``
  :math:`B` images,

  .. math:: \text{result}[kB + i] = \text{method}(f, X_k, c_k, \text{options})[i],

  the same maps as one call of ``method`` on the whole dataset (to rounding),
  in input order. Each batch is split along its first axis over the ``D``
  devices of ``mesh`` (:class:`jax.sharding.NamedSharding` with
  ``PartitionSpec(axis)``) and the model's parameters are replicated on all of
  them, so the method's jitted code runs on every device at once. A batch size
  that is not a multiple of ``D`` is rounded up, and the last, partial batch is
  padded by repeating its last image (:func:`padded_batches`): every call has
  the same shape, so the method compiles once. Padded results are dropped. The next batch is
  dispatched before the previous one is copied back to the host, so the copy
  overlaps the computation.

  **Many hosts.** Call ``jax.distributed.initialize()`` first in every process
  (see :func:`jax.distributed.initialize`), then call ``explain_dataset`` in
  every process with the same arguments: the default mesh spans
  ``jax.devices()``, i.e. every device of every host; each process copies only
  the shards of its own devices to them (``jax.make_array_from_callback``), and
  the result is gathered on every process
  (``jax.experimental.multihost_utils.process_allgather``).

  **One CPU, several cores.** XLA:CPU shows a whole CPU as one device, and its
  default convolution kernels run on one thread, so one call at a time leaves
  the other cores mostly idle. Two ways to fill them, both measured on the
  Performance page: ``workers=N`` (N = the number of cores) computes N batches at
  once, each called from its own thread (XLA:CPU runs calls from different
  threads concurrently), with exactly the maps of ``workers=1``; or start Python
  with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (process-wide, set
  before JAX starts; the package never sets it): JAX then lists N CPU devices,
  the default mesh spans them, and each batch is split over the cores.

  Args:
    method: a saliency method ``method(model, images, targets, **options)``
      from :mod:`saliency_guide.methods` (or a ``smoothgrad(...)`` wrapper),
      returning an array (or a tuple of arrays) with the batch as first axis.
    model: the classifier.
    images: NumPy or JAX array ``(N, H, W, C)``.
    targets: integer array ``(N,)``, the class to explain for each image.
    batch_size: images per call (over all devices together); rounded up to a
      multiple of the number of devices. On a CPU, keep each call's buffers
      under glibc's 32 MB ``mmap`` bound (e.g. 128 digits for gradients on the site's
      models) so that freed memory is reused instead of page-faulted in again on
      every call (measured on the Performance page).
    mesh: a 1-D :class:`jax.sharding.Mesh`; default: all of ``jax.devices()``
      on an axis named ``"batch"``.
    workers: how many batches to compute at once, each in its own thread
      (default 1: one at a time, the next dispatched while the previous is copied
      back). More than 1 pays on a CPU (see above; memory grows with it: each
      batch in flight holds its own buffers); single-process runs only.
    progress: show a ``tqdm`` progress bar; default: when there are at least
      :data:`PROGRESS_MIN_BATCHES` batches.
    **options: passed to ``method`` (e.g. ``steps=64, method="riemann_left"`` for
      Integrated Gradients: the first four arguments are positional-only, so an
      option may be called ``method``).

  Returns:
    NumPy array(s) shaped like ``method``'s output for all ``N`` images,
    e.g. ``(N, H, W, C)``.

  Raises:
    TypeError, ValueError: bad ``method``, ``images``, ``targets``,
      ``batch_size``, ``mesh`` or ``workers`` (more than 1 with several
      processes); the method itself validates each batch.

  Example:
    >>> import numpy as np
    >>> from flax import nnx
    >>> from saliency_guide.models import CNN
    >>> from saliency_guide.methods import gradients
    >>> model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
    >>> images = np.random.default_rng(0).uniform(size=(10, 28, 28, 1)).astype(np.float32)
    >>> targets = np.arange(10) % 10
    >>> maps = explain_dataset(gradients, model, images, targets, batch_size=4)
    >>> maps.shape
    (10, 28, 28, 1)
    >>> bool(np.allclose(maps, gradients(model, images, targets), rtol=1e-5, atol=1e-7))
    True
  """
  check_callable("method", method, "a saliency method method(model, images, targets, **options)")
  images, targets = check_dataset(images, targets)
  batch_size = check_positive_int("batch_size", batch_size)
  workers = check_positive_int("workers", workers)
  if workers > 1 and jax.process_count() > 1:
    # Each process must launch the same programs in the same order.
    raise ValueError(f"workers: expected 1 when running on {jax.process_count()} processes, "
                     f"got {workers}")
  mesh = _check_mesh(mesh)
  if progress is not None and not isinstance(progress, bool):
    raise TypeError(f"progress: expected True, False or None, got {progress!r}")

  (axis,) = mesh.axis_names
  devices = mesh.devices.size
  per_call = math.ceil(batch_size / devices) * devices
  data_sharding = NamedSharding(mesh, PartitionSpec(axis))
  replicated = NamedSharding(mesh, PartitionSpec())
  # One copy of the parameters on every device, made once (a copy of the model:
  # the caller's model keeps its own arrays).
  graphdef, state = nnx.split(model)
  model = nnx.merge(graphdef, jax.device_put(state, replicated))

  n = images.shape[0]
  if progress is None:
    progress = math.ceil(n / per_call) >= PROGRESS_MIN_BATCHES
  bar = None
  if progress:
    from tqdm.auto import tqdm  # a notebook widget in Jupyter, text in a terminal

    bar = tqdm(total=n, desc=getattr(method, "__name__", "explain_dataset"), unit="image")

  outputs: Any = None

  def collect(start: int, count: int, result: Any) -> None:
    nonlocal outputs
    host = _to_host(result)
    if outputs is None:
      outputs = jax.tree.map(lambda leaf: np.empty((n, *leaf.shape[1:]), leaf.dtype), host)
    jax.tree.map(lambda out, leaf: out.__setitem__(slice(start, start + count), leaf[:count]),
                 outputs, host)
    if bar is not None:
      bar.update(count)

  def call(x: np.ndarray, t: np.ndarray) -> Any:
    return method(model, _global_array(x, data_sharding), _global_array(t, data_sharding),
                  **options)

  # Batches in flight, oldest first: (start, count, result or Future). One more than
  # ``workers``, so that a batch is always computing while the oldest is copied back.
  in_flight: collections.deque[tuple[int, int, Any]] = collections.deque()

  def collect_oldest() -> None:
    start, count, job = in_flight.popleft()
    collect(start, count, job.result() if isinstance(job, futures.Future) else job)

  try:
    with contextlib.ExitStack() as stack:
      pool = (stack.enter_context(futures.ThreadPoolExecutor(workers, "explain_dataset"))
              if workers > 1 else None)
      for x, t, start, count in _padded_batches(images, targets, per_call):
        if pool is None:
          job = call(x, t)  # dispatched asynchronously
        else:  # a worker thread waits for its batch: XLA:CPU runs the threads' calls at once
          job = pool.submit(lambda x=x, t=t: jax.block_until_ready(call(x, t)))
        in_flight.append((start, count, job))
        if len(in_flight) > workers:
          collect_oldest()
      while in_flight:
        collect_oldest()
  finally:
    if bar is not None:
      bar.close()
  return outputs
