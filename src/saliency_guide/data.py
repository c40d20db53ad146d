"""MNIST as numpy arrays, from the official IDX files or tensorflow-datasets.

:func:`load_mnist` returns images as ``float32`` arrays of shape
``(N, 28, 28, 1)`` with values in ``[0, 1]`` and labels as ``int32`` arrays of
shape ``(N,)``, in the order of the official files. It has two sources:

* **Offline, from IDX files.** If ``data_dir`` is given, or else the
  environment variable ``SALIENCY_GUIDE_MNIST_DIR`` (:data:`MNIST_DIR_ENV`) is
  set, the official gzipped IDX files are read from that folder. Only the files
  the requested split needs must be there, and each is checked against its
  published size and SHA-256 (:data:`MNIST_FILES`) before it is parsed.
* **Online, through tensorflow-datasets.** Otherwise the files are downloaded
  once (checksums verified by tfds) and prepared into tfds's data folder
  (``~/tensorflow_datasets``, or ``$TFDS_DATA_DIR``) by a small project builder
  that does not need TensorFlow; later calls read the prepared files. Without
  network access this fails within seconds with a :class:`RuntimeError` that
  says how to work offline.

Splits are ``"train"`` (60,000 digits) and ``"test"`` (10,000), with slices and
sums in tensorflow-datasets syntax, e.g. ``"test[:8000]"``, ``"test[8000:]"``,
``"train[:10%]"`` or ``"train+test"``; both sources interpret them with tfds's
own split parser, so they select the same examples.

References:
  Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. Gradient-based learning applied to
  document recognition. Proceedings of the IEEE 86(11), 1998.
  The MNIST database and the IDX file format: http://yann.lecun.com/exdb/mnist/
  tensorflow-datasets split syntax: https://www.tensorflow.org/datasets/splits
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MNIST_DIR_ENV",
    "MNIST_FILES",
    "MNIST_URL",
    "SPLIT_FILES",
    "SPLIT_SIZES",
    "load_mnist",
    "read_idx",
]

#: Environment variable naming a folder of the official MNIST ``.gz`` files.
MNIST_DIR_ENV = "SALIENCY_GUIDE_MNIST_DIR"

#: Where tfds's stock ``mnist`` builder (and ours) downloads the files from.
MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"

#: Official file name -> (size in bytes, SHA-256), as registered by
#: tensorflow-datasets 4.9.10 in ``tensorflow_datasets/url_checksums/mnist.txt``.
MNIST_FILES: dict[str, tuple[int, str]] = {
    "train-images-idx3-ubyte.gz": (
        9912422,
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    "train-labels-idx1-ubyte.gz": (
        28881,
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    "t10k-images-idx3-ubyte.gz": (
        1648877,
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    "t10k-labels-idx1-ubyte.gz": (
        4542,
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
}

#: Split name -> (images file, labels file).
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

#: Split name -> number of examples.
SPLIT_SIZES: dict[str, int] = {"train": 60000, "test": 10000}

MNIST_IMAGE_SHAPE = (28, 28, 1)
MNIST_NUM_CLASSES = 10
MNIST_CITATION = """\
@article{lecun1998gradient,
  title={Gradient-based learning applied to document recognition},
  author={LeCun, Yann and Bottou, L{\\'e}on and Bengio, Yoshua and Haffner, Patrick},
  journal={Proceedings of the IEEE},
  volume={86},
  number={11},
  pages={2278--2324},
  year={1998}
}
"""

# IDX type code (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

# Files whose checksum was verified in this process: (path, size, mtime_ns, sha256).
_VERIFIED: set[tuple[str, int, int, str]] = set()


# ----------------------------------------------------------------------------
# IDX files.


def _parse_idx(raw: bytes, name: str) -> np.ndarray:
  """Parses the bytes of an (uncompressed) IDX file; ``name`` is for errors."""
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
    magic = raw[:4].hex() or "(empty file)"
    raise ValueError(
        f"{name} is not an IDX file: its magic number is 0x{magic}, expected 0x0000TTDD "
        "(two zero bytes, a type code TT in 08 09 0b 0c 0d 0e, and the number of "
        "dimensions DD >= 1; MNIST uses 0x00000801 for labels and 0x00000803 for "
        "images). Check that the file is an MNIST IDX file, gzipped or not."
    )
  dtype = _IDX_DTYPES[raw[2]]
  ndim = raw[3]
  header_size = 4 + 4 * ndim
  if len(raw) < header_size:
    raise ValueError(
        f"{name} is truncated: its IDX header needs {header_size} bytes for {ndim} "
        f"dimensions, but the file has {len(raw)}. Download the file again."
    )
  shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  found = len(raw) - header_size
  if found != expected:
    problem = "is truncated" if found < expected else "has trailing bytes"
    raise ValueError(
        f"{name} {problem}: its IDX header declares shape {shape} of {dtype.name}, "
        f"i.e. {expected} data bytes, but the file has {found}. Download the file again."
    )
  array = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
  return array.astype(dtype.newbyteorder("="), copy=False)


def _decompress(raw: bytes, name: str) -> bytes:
  """Gunzips ``raw`` if it starts with the gzip magic bytes."""
  if not raw.startswith(_GZIP_MAGIC):
    return raw
  try:
    return gzip.decompress(raw)
  except (EOFError, OSError, zlib.error) as e:
    raise ValueError(
        f"{name} is a damaged or truncated gzip file ({e}). Download the file again."
    ) from e


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file (the format of the MNIST files), gzipped or not.

  The file is gunzipped if it starts with the gzip magic bytes. The IDX magic
  number is checked (MNIST labels are ``0x00000801``, 1-D ``uint8``; images
  ``0x00000803``, 3-D ``uint8``; the other IDX types are read too), and the data
  size must match the dimensions in the header exactly.

  Args:
    path: the file.

  Returns:
    A read-only array with the file's shape and dtype, in native byte order.

  Raises:
    FileNotFoundError: if ``path`` does not exist.
    ValueError: if the file is not an IDX file, or is truncated.

  Example:
    >>> import gzip, os, tempfile
    >>> raw = bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])  # labels 7, 2, 1
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte.gz")
    >>> with open(path, "wb") as f:
    ...   _ = f.write(gzip.compress(raw))
    >>> read_idx(path)
    array([7, 2, 1], dtype=uint8)

  References:
    The IDX format is described at the end of http://yann.lecun.com/exdb/mnist/
  """
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"IDX file {str(path)!r} does not exist (or is not a file).")
  return _parse_idx(_decompress(path.read_bytes(), str(path)), str(path))


def _read_mnist_pair(
    images_path: str | os.PathLike, labels_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
  """Reads an MNIST images/labels file pair: ``uint8 (N, 28, 28)``, ``uint8 (N,)``."""
  images, labels = read_idx(images_path), read_idx(labels_path)
  return _check_mnist_pair(images, labels, str(images_path), str(labels_path))


def _check_mnist_pair(
    images: np.ndarray, labels: np.ndarray, images_name: str, labels_name: str
) -> tuple[np.ndarray, np.ndarray]:
  """Checks shapes/dtypes of parsed MNIST images and labels."""
  if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
    raise ValueError(
        f"{images_name} does not hold MNIST images: expected uint8 data of shape "
        f"(N, 28, 28) (IDX magic 0x00000803), got {images.dtype} of shape {images.shape}. "
        "Check that the file names are not swapped."
    )
  if labels.dtype != np.uint8 or labels.ndim != 1:
    raise ValueError(
        f"{labels_name} does not hold MNIST labels: expected uint8 data of shape (N,) "
        f"(IDX magic 0x00000801), got {labels.dtype} of shape {labels.shape}. "
        "Check that the file names are not swapped."
    )
  if len(images) != len(labels):
    raise ValueError(
        f"{images_name} has {len(images)} images but {labels_name} has {len(labels)} "
        "labels; they must come from the same MNIST split."
    )
  return images, labels


# ----------------------------------------------------------------------------
# Checksums.


def _verify_file(path: Path, raw: bytes, expected_size: int, expected_sha256: str) -> None:
  """Checks ``raw`` (the bytes of ``path``) against the published size and SHA-256.

  Successful checks are remembered per (path, size, mtime), so loading the same
  unchanged file again in this process skips the hashing.
  """
  stat = path.stat()
  key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, expected_sha256)
  if key in _VERIFIED and stat.st_size == len(raw):
    return
  if len(raw) != expected_size:
    raise ValueError(
        f"{str(path)!r} has {len(raw)} bytes, but the official {path.name} has "
        f"{expected_size} (SHA-256 {expected_sha256}). The file is damaged or not the "
        "official one: download it again from "
        f"{MNIST_URL}{path.name} (or http://yann.lecun.com/exdb/mnist/)."
    )
  actual = hashlib.sha256(raw).hexdigest()
  if actual != expected_sha256:
    raise ValueError(
        f"{str(path)!r} has the wrong SHA-256 checksum: expected {expected_sha256}, "
        f"got {actual}. The file is damaged or not the official {path.name}: download "
        f"it again from {MNIST_URL}{path.name} (or http://yann.lecun.com/exdb/mnist/)."
    )
  _VERIFIED.add(key)


# ----------------------------------------------------------------------------
# Splits.


def _resolve_split(split: str) -> list[tuple[str, int, int]]:
  """Turns a tfds split spec into ``[(split_name, start, stop), ...]``.

  Uses tensorflow-datasets' own parser (``tfds.core.ReadInstruction``), so
  slices and percentages mean exactly what they mean in ``tfds.load``.
  """
  if not isinstance(split, str):
    raise TypeError(
        f"split must be a str such as 'train', 'test' or 'test[:8000]', got "
        f"{type(split).__name__} {split!r}."
    )
  valid = ", ".join(f"{name!r} ({n} examples)" for name, n in SPLIT_SIZES.items())
  if "shard" in split:
    raise ValueError(
        f"split={split!r}: shard slices are not supported (the IDX files have no "
        f"shards). Use an example or percent slice such as 'test[:8000]' or "
        f"'train[:10%]'. Valid split names: {valid}."
    )
  import tensorflow_datasets as tfds  # Slow to import: only when needed.

  split_infos = {
      name: tfds.core.SplitInfo(name=name, shard_lengths=[n], num_bytes=0)
      for name, n in SPLIT_SIZES.items()
  }
  try:
    instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(split_infos)
  except (ValueError, NotImplementedError) as e:
    raise ValueError(
        f"split={split!r} is not a valid MNIST split. Valid split names: {valid}; "
        "slices and sums use tensorflow-datasets syntax, e.g. 'test[:8000]', "
        "'test[8000:]', 'train[:10%]', 'train+test' "
        f"(https://www.tensorflow.org/datasets/splits). tfds said: {e}"
    ) from e
  resolved = []
  for instruction in instructions:
    n = SPLIT_SIZES[instruction.splitname]
    start = 0 if instruction.from_ is None else instruction.from_
    stop = n if instruction.to is None else instruction.to
    if stop <= start:
      raise ValueError(
          f"split={split!r}: the slice [{start}:{stop}] of {instruction.splitname!r} "
          f"({n} examples) holds no digits; give a slice whose start comes before its "
          "stop, such as 'test[:8000]' or 'test[8000:]'."
      )
    resolved.append((instruction.splitname, start, stop))
  return resolved


def _to_float_images(images: np.ndarray) -> np.ndarray:
  """``uint8 (N, 28, 28[, 1])`` -> ``float32 (N, 28, 28, 1)`` in ``[0, 1]``."""
  images = images.reshape(images.shape[0], 28, 28, 1)
  return np.divide(images, np.float32(255), dtype=np.float32)


def _load_idx_split(
    folder: str | os.PathLike,
    split: str,
    *,
    checksums: Mapping[str, tuple[int, str]] | None = MNIST_FILES,
) -> tuple[np.ndarray, np.ndarray]:
  """Loads ``split`` from the official IDX ``.gz`` files in ``folder``.

  Args:
    folder: folder holding (at least) the files the split needs.
    split: a split spec, see :func:`load_mnist`.
    checksums: file name -> (size, SHA-256) to verify each file against before
      parsing; ``None`` skips the verification (tests with synthetic files).

  Returns:
    ``(images, labels)`` as :func:`load_mnist` returns them.
  """
  instructions = _resolve_split(split)
  folder = Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(
        f"MNIST folder {str(folder)!r} does not exist (or is not a folder). Set "
        f"{MNIST_DIR_ENV} or data_dir= to a folder holding the official MNIST files "
        f"({', '.join(MNIST_FILES)}), or unset them to download MNIST with "
        "tensorflow-datasets."
    )
  needed = list(dict.fromkeys(name for s, _, _ in instructions for name in SPLIT_FILES[s]))
  for name in needed:
    if not (folder / name).is_file():
      others = [s for s in SPLIT_FILES if all((folder / f).is_file() for f in SPLIT_FILES[s])]
      hint = f" (the folder has all files for: {', '.join(others)})" if others else ""
      raise FileNotFoundError(
          f"MNIST file {name!r} is missing from the folder {str(folder)!r}, and split "
          f"{split!r} needs it. Fix: download the official file from {MNIST_URL}{name} "
          f"into that folder; or set {MNIST_DIR_ENV} / data_dir= to a folder that has "
          f"it; or use a split that does not need it, e.g. 'test[:8000]'{hint}."
      )
  arrays: dict[str, np.ndarray] = {}
  for name in needed:
    path = folder / name
    raw = path.read_bytes()
    if checksums is not None:
      size, sha256 = checksums[name]
      _verify_file(path, raw, size, sha256)
    arrays[name] = _parse_idx(_decompress(raw, str(path)), str(path))
  parts_images, parts_labels = [], []
  for split_name, start, stop in instructions:
    images_name, labels_name = SPLIT_FILES[split_name]
    images, labels = _check_mnist_pair(
        arrays[images_name], arrays[labels_name], images_name, labels_name
    )
    parts_images.append(images[start:stop])
    parts_labels.append(labels[start:stop])
  images = np.concatenate(parts_images) if len(parts_images) > 1 else parts_images[0]
  labels = np.concatenate(parts_labels) if len(parts_labels) > 1 else parts_labels[0]
  return _to_float_images(images), labels.astype(np.int32)


# ----------------------------------------------------------------------------
# tensorflow-datasets.


def _decode_records(records: list[bytes], features: Any) -> tuple[np.ndarray, np.ndarray]:
  """Decodes serialized examples of :class:`SaliencyGuideMnist` into arrays.

  Each record is a ``tf.train.Example`` proto (parsed with tfds's own copy of the
  proto, no TensorFlow) whose ``image`` feature holds the 784 raw pixel bytes.
  Parsing the protos directly and joining the pixel bytes is ~10x faster than
  tfds's generic per-example ``features.deserialize_example_np``, which is the
  fallback if tfds's proto module ever moves.

  Args:
    records: serialized examples.
    features: the builder's ``info.features`` (for the fallback).

  Returns:
    ``uint8`` images ``(N, 28, 28, 1)`` and ``int32`` labels ``(N,)``.
  """
  n = len(records)
  try:
    from tensorflow_datasets.proto import tf_example_pb2
  except ImportError:  # pragma: no cover - depends on the tfds version.
    examples = [features.deserialize_example_np(record) for record in records]
    images = np.stack(
        [np.asarray(ex["image"], np.uint8).reshape(MNIST_IMAGE_SHAPE) for ex in examples]
    )
    labels = np.fromiter((int(ex["label"]) for ex in examples), np.int32, count=n)
    return images, labels
  pixels, labels_list = [], []
  for record in records:
    feature = tf_example_pb2.Example.FromString(record).features.feature
    pixels.append(feature["image"].bytes_list.value[0])
    labels_list.append(feature["label"].int64_list.value[0])
  joined = b"".join(pixels)
  if len(joined) != n * 784:
    raise ValueError(
        f"The prepared MNIST data is damaged: {n} examples hold {len(joined)} pixel bytes, "
        f"expected {n * 784}. Delete the saliency_guide_mnist folder in the "
        "tensorflow-datasets data folder and load again."
    )
  images = np.frombuffer(joined, dtype=np.uint8).reshape(n, *MNIST_IMAGE_SHAPE)
  return images, np.array(labels_list, dtype=np.int32)


def _load_tfds_split(
    split: str, *, tfds_data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Loads ``split`` with tensorflow-datasets, downloading and preparing it once.

  Args:
    split: a split spec, see :func:`load_mnist`.
    tfds_data_dir: tfds data folder; default ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``.

  Returns:
    ``(images, labels)`` as :func:`load_mnist` returns them.

  Raises:
    RuntimeError: if MNIST is not prepared yet and cannot be downloaded.
  """
  _resolve_split(split)  # Same validation and error messages as the IDX path.
  import tensorflow_datasets as tfds

  from saliency_guide._mnist_builder import SaliencyGuideMnist

  if tfds_data_dir is None:
    tfds_data_dir = os.environ.get("TFDS_DATA_DIR") or None
  builder = SaliencyGuideMnist(data_dir=tfds_data_dir, file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          try_download_gcs=False, force_checksums_validation=True
      )
  )
  source = builder.as_data_source(
      split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES
  )
  records = source.__getitems__(list(range(len(source))))  # One batched read.
  images, labels = _decode_records(records, builder.info.features)
  return _to_float_images(images), labels


# ----------------------------------------------------------------------------
# Public entry point.


def _idx_folder(data_dir: str | os.PathLike | None) -> Path | None:
  """The IDX folder to read from: ``data_dir``, else ``$SALIENCY_GUIDE_MNIST_DIR``."""
  if data_dir is not None:
    if not isinstance(data_dir, str | os.PathLike):
      raise TypeError(
          "data_dir must be a folder path (str or os.PathLike) holding the official "
          f"MNIST .gz files, or None; got {type(data_dir).__name__} {data_dir!r}."
      )
    return Path(data_dir).expanduser()
  env = os.environ.get(MNIST_DIR_ENV, "")
  return Path(env).expanduser() if env else None


def load_mnist(
    split: str = "train", *, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Loads an MNIST split as numpy arrays.

  Source: the official IDX ``.gz`` files in ``data_dir`` if given, else in the
  folder named by the environment variable ``SALIENCY_GUIDE_MNIST_DIR`` if set,
  else tensorflow-datasets (downloads and prepares the data on first use; no
  TensorFlow needed). See the module docstring.

  Args:
    split: ``"train"`` (60,000 digits), ``"test"`` (10,000), a slice of either
      in tensorflow-datasets syntax (``"test[:8000]"``, ``"test[8000:]"``,
      ``"train[:10%]"``) or a sum (``"train+test"``).
    data_dir: folder with the official MNIST files
      (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
      ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``; only those
      the split needs). Overrides ``SALIENCY_GUIDE_MNIST_DIR``.

  Returns:
    ``(images, labels)``: ``float32`` images of shape ``(N, 28, 28, 1)`` with
    values in ``[0, 1]`` (the ``uint8`` pixels divided by 255), and ``int32``
    labels of shape ``(N,)``, in the order of the official files.

  Raises:
    ValueError: unknown split, or a file with the wrong checksum or content.
    FileNotFoundError: the folder, or a file the split needs, is missing.
    RuntimeError: MNIST is not prepared for tensorflow-datasets and cannot be
      downloaded (no network); use ``SALIENCY_GUIDE_MNIST_DIR`` then.

  Example:
    >>> images, labels = load_mnist("test[:8000]")  # doctest: +SKIP
    >>> images.shape, images.dtype, labels.shape, labels.dtype  # doctest: +SKIP
    ((8000, 28, 28, 1), dtype('float32'), (8000,), dtype('int32'))

    Offline, from a folder of IDX files (here a synthetic test split of 3
    digits, without checksum verification):

    >>> import gzip, os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> def write(name, raw):
    ...   with open(os.path.join(folder, name), "wb") as f:
    ...     _ = f.write(gzip.compress(raw))
    >>> write("t10k-images-idx3-ubyte.gz", bytes([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28,
    ...                                           0, 0, 0, 28]) + bytes(3 * 784))
    >>> write("t10k-labels-idx1-ubyte.gz", bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
    >>> images, labels = _load_idx_split(folder, "test[1:]", checksums=None)
    >>> images.shape, labels
    ((2, 28, 28, 1), array([2, 1], dtype=int32))

  References:
    Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. Gradient-based learning applied
    to document recognition. Proc. IEEE 86(11), 1998.
  """
  folder = _idx_folder(data_dir)
  if folder is not None:
    return _load_idx_split(folder, split, checksums=MNIST_FILES)
  return _load_tfds_split(split)
