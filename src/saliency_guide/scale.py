"""Attributions for whole datasets, on every available device at once.

:func:`explain_dataset` runs any saliency method of :mod:`saliency_guide.methods`
over a dataset that is too large for one call: it streams fixed-size batches
(:func:`padded_batches`) and gives each device of a 1-D
:class:`jax.sharding.Mesh` batches of its own, so that every device computes one
at a time. Each batch is an ordinary call of the method on one device, with the
same shape on every device: the maps are bitwise those of a one-device run with
the same ``batch_size``, whatever the number of devices.
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
from jax.sharding import Mesh

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
      devices you split each batch over yourself; :func:`explain_dataset` does not
      split batches, it gives each device whole ones).

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


def _assemble_rows(stacked: Any, owner: np.ndarray) -> Any:
  """Row ``i`` of every leaf from the process that computed it.

  Args:
    stacked: a pytree of ``(P, N, ...)`` arrays, one ``(N, ...)`` per process,
      each holding the rows that process computed (anything elsewhere).
    owner: ``(P, N)`` booleans, exactly one ``True`` per row.

  Returns:
    The pytree of ``(N, ...)`` arrays.
  """
  rows = np.arange(owner.shape[1])
  source = np.argmax(owner, axis=0)
  return jax.tree.map(lambda leaf: np.asarray(leaf)[source, rows], stacked)


def _gather_processes(outputs: Any, owned: np.ndarray) -> Any:  # pragma: no cover - hosts
  """Every process's rows, on every process (``process_allgather``, then row selection)."""
  from jax.experimental import multihost_utils

  stacked, owner = multihost_utils.process_allgather((outputs, owned), tiled=False)
  return _assemble_rows(stacked, np.asarray(owner))


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
  r"""Apply a saliency method to a whole dataset, batch by batch, on every device at once.

  For batches :math:`X_k = (x_{kB}, \dots, x_{kB + B - 1})` of ``batch_size``
  :math:`B` images,

  .. math:: \text{result}[kB + i] = \text{method}(f, X_k, c_k, \text{options})[i],

  in input order. Batch :math:`k` is computed on device :math:`k \bmod D` of the
  ``D`` devices of ``mesh``, each holding its own copy of the model's
  parameters: ``D`` batches are computed at once, and each is an ordinary call
  of ``method`` on one device. The last, partial batch is padded by repeating
  its last image (:func:`padded_batches`), so every call has the same shape and
  the method compiles once per device; padded results are dropped. New batches
  are dispatched before the oldest is copied back to the host, so the copies
  overlap the computation.

  **Same maps on any number of devices.** Every call sees :math:`B` images and the
  same ``options`` (the same ``key`` included) whichever device runs it, so the
  result is bitwise that of a one-device run with the same ``batch_size`` (for
  devices of one kind), and of ``workers=1``. (A method's random draws, e.g.
  SmoothGrad's noise, are made per call: the same key gives every batch the same
  draws, as one device calling batch after batch does.) No program spans several
  devices, so no collective operation runs.

  **Many hosts.** Call ``jax.distributed.initialize()`` first in every process
  (see :func:`jax.distributed.initialize`), then call ``explain_dataset`` in
  every process with the same arguments: the default mesh spans
  ``jax.devices()``, i.e. every device of every host; each process computes the
  batches of its own devices, and the result is gathered on every process
  (``jax.experimental.multihost_utils.process_allgather``; each process briefly
  holds every process's copy, ``P × N`` rows).

  **One CPU, several cores.** XLA:CPU shows a whole CPU as one device, and its
  default convolution kernels run on one thread, so one call at a time leaves
  the other cores mostly idle. Two ways to fill them, both measured on the
  Performance page: ``workers=N`` (N = the number of cores) computes N batches at
  once, each called from its own thread (XLA:CPU runs calls from different
  threads concurrently), with exactly the maps of ``workers=1``; or start Python
  with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (process-wide, set
  before JAX starts; the package never sets it): JAX then lists N CPU devices,
  the default mesh spans them, and each computes batches of its own.

  Args:
    method: a saliency method ``method(model, images, targets, **options)``
      from :mod:`saliency_guide.methods` (or a ``smoothgrad(...)`` wrapper),
      returning an array (or a tuple of arrays) with the batch as first axis.
    model: the classifier.
    images: NumPy or JAX array ``(N, H, W, C)``.
    targets: integer array ``(N,)``, the class to explain for each image.
    batch_size: images per call, on each device. On a CPU, keep each call's
      buffers under glibc's 32 MB ``mmap`` bound (e.g. 128 digits for gradients
      on the site's models) so that freed memory is reused instead of
      page-faulted in again on every call (measured on the Performance page).
    mesh: a 1-D :class:`jax.sharding.Mesh` whose devices compute the batches;
      default: all of ``jax.devices()`` on an axis named ``"batch"``.
    workers: how many batches each device computes at once, each called from a
      thread of its own (default 1: one at a time per device, the next dispatched
      while the oldest is copied back). More than 1 pays on a CPU (see above;
      memory grows with it: each batch in flight holds its own buffers);
      single-process runs only.
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

  devices = list(mesh.devices.flat)
  # One copy of the parameters on each of this process's devices, made once (copies:
  # the caller's model keeps its own arrays).
  graphdef, state = nnx.split(model)
  models = {device: nnx.merge(graphdef, jax.device_put(state, device))
            for device in devices if device.process_index == jax.process_index()}

  n = images.shape[0]
  if progress is None:
    progress = math.ceil(n / batch_size) >= PROGRESS_MIN_BATCHES
  bar = None
  if progress:
    from tqdm.auto import tqdm  # a notebook widget in Jupyter, text in a terminal

    bar = tqdm(total=n, desc=getattr(method, "__name__", "explain_dataset"), unit="image")

  outputs: Any = None
  owned = np.zeros(n, bool)  # the rows this process computed

  def collect(start: int, count: int, result: Any) -> None:
    nonlocal outputs
    host = jax.tree.map(np.asarray, result)
    if outputs is None:
      outputs = jax.tree.map(lambda leaf: np.zeros((n, *leaf.shape[1:]), leaf.dtype), host)
    jax.tree.map(lambda out, leaf: out.__setitem__(slice(start, start + count), leaf[:count]),
                 outputs, host)
    owned[start:start + count] = True
    if bar is not None:
      bar.update(count)

  def call(device: Any, x: np.ndarray, t: np.ndarray) -> Any:
    return method(models[device], jax.device_put(x, device), jax.device_put(t, device),
                  **options)

  # Batches in flight, oldest first: (start, count, result or Future). Up to ``workers``
  # per device, plus one: a batch is always computing while the oldest is copied back.
  in_flight: collections.deque[tuple[int, int, Any]] = collections.deque()
  capacity = workers * len(models)

  def collect_oldest() -> None:
    start, count, job = in_flight.popleft()
    collect(start, count, job.result() if isinstance(job, futures.Future) else job)

  try:
    with contextlib.ExitStack() as stack:
      pool = (stack.enter_context(futures.ThreadPoolExecutor(capacity, "explain_dataset"))
              if workers > 1 else None)
      for k, (x, t, start, count) in enumerate(_padded_batches(images, targets, batch_size)):
        device = devices[k % len(devices)]
        if device not in models:  # another process's device computes this batch
          continue
        if pool is None:
          job = call(device, x, t)  # dispatched asynchronously
        else:  # a worker thread waits for its batch: XLA:CPU runs the threads' calls at once
          job = pool.submit(lambda d=device, x=x, t=t: jax.block_until_ready(call(d, x, t)))
        in_flight.append((start, count, job))
        if len(in_flight) > capacity:
          collect_oldest()
      while in_flight:
        collect_oldest()
  finally:
    if bar is not None:
      bar.close()
  if jax.process_count() > 1:  # pragma: no cover - needs several hosts
    if outputs is None:
      raise ValueError(f"batch_size: {batch_size} leaves this process's devices without a "
                       f"batch of the {n} images; use a smaller batch_size")
    return _gather_processes(outputs, owned)
  return outputs
