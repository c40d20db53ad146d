"""Tests of saliency_guide.data (MNIST loading) and its tfds builder.

Everything here runs offline on tiny synthetic IDX files written by the tests,
except the real-data tests, which run only when SALIENCY_GUIDE_MNIST_DIR names
a folder of the official MNIST files.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from saliency_guide import _mnist_builder, data

N_TRAIN, N_TEST = 12, 5


def idx_bytes(array: np.ndarray, magic_type: int = 0x08) -> bytes:
  """The bytes of an (uncompressed) IDX file holding ``array``."""
  header = bytes([0, 0, magic_type, array.ndim])
  header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  return header + array.tobytes()


def fake_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
  images[0, 0, 0], images[0, 0, 1] = 0, 255  # So the value range is exactly [0, 1].
  return images, rng.integers(0, 10, size=n, dtype=np.uint8)


def write_fake_mnist(
    folder: Path, *, seed: int = 0, splits: tuple[str, ...] = ("train", "test")
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, tuple[int, str]]]:
  """Writes synthetic official-named .gz files; returns the arrays and their checksums."""
  folder.mkdir(parents=True, exist_ok=True)
  arrays, checksums = {}, {}
  for offset, split in enumerate(splits):
    arrays[split] = fake_split(N_TRAIN if split == "train" else N_TEST, seed + offset)
    for name, array in zip(data.SPLIT_FILES[split], arrays[split], strict=True):
      raw = gzip.compress(idx_bytes(array))
      (folder / name).write_bytes(raw)
      checksums[name] = (len(raw), hashlib.sha256(raw).hexdigest())
  return arrays, checksums


@pytest.fixture
def fake_dir(tmp_path):
  """A folder with all four synthetic MNIST files, and their arrays and checksums."""
  folder = tmp_path / "mnist"
  arrays, checksums = write_fake_mnist(folder)
  return folder, arrays, checksums


def as_float(images: np.ndarray) -> np.ndarray:
  return (images.astype(np.float32) / 255)[..., None]


# ----------------------------------------------------------------------------
# IDX reader.


@pytest.mark.parametrize("compressed", [True, False])
def test_read_idx_gz_and_raw(tmp_path, compressed):
  images, labels = fake_split(5, seed=1)
  for name, array in [("images", images), ("labels", labels)]:
    raw = idx_bytes(array)
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    result = data.read_idx(path)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, array)


def test_read_idx_other_types(tmp_path):
  array = (np.arange(6).reshape(2, 3) - 3).astype(">i4")
  path = tmp_path / "ints"
  path.write_bytes(idx_bytes(array, magic_type=0x0C))
  result = data.read_idx(path)
  assert result.dtype == np.int32 and result.dtype.isnative
  np.testing.assert_array_equal(result, array)


def test_read_idx_truncated(tmp_path):
  raw = idx_bytes(fake_split(5, seed=2)[0])
  path = tmp_path / "short-images-idx3-ubyte"
  path.write_bytes(raw[:-10])
  with pytest.raises(ValueError, match=r"short-images-idx3-ubyte is truncated.*3920 data bytes"):
    data.read_idx(path)
  path.write_bytes(raw + b"\0")
  with pytest.raises(ValueError, match="trailing bytes"):
    data.read_idx(path)
  path.write_bytes(raw[:10])  # Header cut short.
  with pytest.raises(ValueError, match="truncated"):
    data.read_idx(path)


def test_read_idx_truncated_gzip(tmp_path):
  path = tmp_path / "labels.gz"
  path.write_bytes(gzip.compress(idx_bytes(fake_split(5, seed=2)[1]))[:-12])
  with pytest.raises(ValueError, match=r"labels\.gz is a damaged or truncated gzip file"):
    data.read_idx(path)


@pytest.mark.parametrize("raw", [b"\x12\x34\x56\x78" + bytes(8), b"\0\0\x07\x01" + bytes(5), b""])
def test_read_idx_bad_magic(tmp_path, raw):
  path = tmp_path / "bad"
  path.write_bytes(raw)
  with pytest.raises(ValueError, match=r"bad is not an IDX file: its magic number is 0x"):
    data.read_idx(path)


def test_read_idx_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"nope\.gz"):
    data.read_idx(tmp_path / "nope.gz")


# ----------------------------------------------------------------------------
# Offline IDX path.


def test_load_idx_split_full(fake_dir):
  folder, arrays, checksums = fake_dir
  for split in ("train", "test"):
    images, labels = data._load_idx_split(folder, split, checksums=checksums)
    assert images.shape == (len(arrays[split][0]), 28, 28, 1)
    assert images.dtype == np.float32 and labels.dtype == np.int32
    assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_array_equal(images, as_float(arrays[split][0]))
    np.testing.assert_array_equal(labels, arrays[split][1])


@pytest.mark.parametrize(
    ("split", "part", "start", "stop"),
    [
        ("test[:3]", "test", 0, 3),
        ("test[3:]", "test", 3, N_TEST),
        ("test[-2:]", "test", N_TEST - 2, N_TEST),
        ("train[:25%]", "train", 0, 3),
        ("train[50%:]", "train", 6, N_TRAIN),
    ],
)
def test_load_idx_split_slices(fake_dir, split, part, start, stop, monkeypatch):
  folder, arrays, checksums = fake_dir
  # Slice semantics are tfds's, computed on the real split sizes, so shrink them.
  monkeypatch.setattr(data, "SPLIT_SIZES", {"train": N_TRAIN, "test": N_TEST})
  images, labels = data._load_idx_split(folder, split, checksums=checksums)
  np.testing.assert_array_equal(images, as_float(arrays[part][0][start:stop]))
  np.testing.assert_array_equal(labels, arrays[part][1][start:stop])
  assert images.shape == (stop - start, 28, 28, 1)


def test_load_idx_split_sum(fake_dir, monkeypatch):
  folder, arrays, checksums = fake_dir
  monkeypatch.setattr(data, "SPLIT_SIZES", {"train": N_TRAIN, "test": N_TEST})
  images, labels = data._load_idx_split(folder, "test[:2]+train[-1:]", checksums=checksums)
  np.testing.assert_array_equal(labels, np.r_[arrays["test"][1][:2], arrays["train"][1][-1:]])
  assert images.shape == (3, 28, 28, 1)


def test_real_split_sizes_drive_slices():
  assert data._resolve_split("test[:8000]") == [("test", 0, 8000)]
  assert data._resolve_split("test[8000:]") == [("test", 8000, 10000)]
  assert data._resolve_split("train[:10%]") == [("train", 0, 6000)]
  assert data._resolve_split("train+test") == [("train", 0, 60000), ("test", 0, 10000)]


@pytest.mark.parametrize("split", ["validation", "tset", "test[a:b]", "", "test[:20000]"])
def test_unknown_split(split):
  with pytest.raises(ValueError, match=r"not a valid MNIST split.*'train' \(60000 examples\)"):
    data._resolve_split(split)


@pytest.mark.parametrize("split", ["test[5:2]", "test[5:5]", "train[10000:-60000]"])
def test_empty_or_inverted_slice_is_an_error(split):
  with pytest.raises(ValueError, match=r"holds no digits"):
    data._resolve_split(split)


def test_load_mnist_never_returns_an_empty_split(fake_dir):
  folder, _, _ = fake_dir
  with pytest.raises(ValueError, match=r"split='test\[5:2\]'.*holds no digits"):
    data.load_mnist("test[5:2]", data_dir=folder)


def test_bad_split_type_and_shards():
  with pytest.raises(TypeError, match="split must be a str"):
    data._resolve_split(["test"])
  with pytest.raises(ValueError, match="shard slices are not supported"):
    data._resolve_split("test[0shard]")


def test_checksum_mismatch(fake_dir):
  folder, _, checksums = fake_dir
  name = "t10k-labels-idx1-ubyte.gz"
  size, good = checksums[name]
  wrong = {**checksums, name: (size, "0" * 64)}
  with pytest.raises(ValueError, match=rf"{name}.*expected 0{{64}}, got {good}"):
    data._load_idx_split(folder, "test", checksums=wrong)
  wrong_size = {**checksums, name: (size + 1, good)}
  expected = rf"has {size} bytes, but the official {name} has {size + 1}"
  with pytest.raises(ValueError, match=expected):
    data._load_idx_split(folder, "test", checksums=wrong_size)


def test_official_checksums_reject_fake_files(fake_dir):
  folder, _, _ = fake_dir
  with pytest.raises(ValueError, match="t10k-"):
    data.load_mnist("test", data_dir=folder)


def test_official_table_matches_tfds_registry():
  registered = tfds.core.download.checksums.get_all_url_infos()
  for name, (size, sha256) in data.MNIST_FILES.items():
    info = registered[data.MNIST_URL + name]
    assert (int(info.size), info.checksum) == (size, sha256)


def test_verification_is_cached_and_invalidated(tmp_path):
  path = tmp_path / "file.gz"
  path.write_bytes(b"abc")
  sha = hashlib.sha256(b"abc").hexdigest()
  data._verify_file(path, b"abc", 3, sha)
  stat = path.stat()
  assert (str(path.resolve()), 3, stat.st_mtime_ns, sha) in data._VERIFIED
  # Same size, new content and mtime: verified again, and rejected.
  path.write_bytes(b"abd")
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
  with pytest.raises(ValueError, match="wrong SHA-256"):
    data._verify_file(path, b"abd", 3, sha)


def test_missing_file_names_file_and_folder(tmp_path):
  folder = tmp_path / "only-test"
  write_fake_mnist(folder, splits=("test",))
  with pytest.raises(FileNotFoundError) as info:
    data._load_idx_split(folder, "train[:10%]", checksums=None)
  message = str(info.value)
  assert "train-images-idx3-ubyte.gz" in message
  assert str(folder) in message
  assert data.MNIST_DIR_ENV in message and "test[:8000]" in message
  # Only the files the split needs are read: the test split still loads.
  assert data._load_idx_split(folder, "test", checksums=None)[0].shape == (N_TEST, 28, 28, 1)


def test_missing_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    data.load_mnist("test", data_dir=tmp_path / "nowhere")


def test_wrong_file_content(fake_dir):
  folder, _, _ = fake_dir
  labels = folder / "t10k-labels-idx1-ubyte.gz"
  labels.write_bytes((folder / "t10k-images-idx3-ubyte.gz").read_bytes())
  with pytest.raises(ValueError, match="does not hold MNIST labels"):
    data._load_idx_split(folder, "test", checksums=None)


def test_data_dir_type():
  with pytest.raises(TypeError, match="data_dir must be a folder path"):
    data.load_mnist("test", data_dir=3)


# ----------------------------------------------------------------------------
# Source selection.


def test_env_var_selects_idx_folder(tmp_path, monkeypatch):
  env_arrays, env_sums = write_fake_mnist(tmp_path / "env", seed=10)
  arg_arrays, arg_sums = write_fake_mnist(tmp_path / "arg", seed=20)
  monkeypatch.setattr(data, "_load_tfds_split", lambda *a, **k: pytest.fail("used tfds"))
  monkeypatch.setenv(data.MNIST_DIR_ENV, str(tmp_path / "env"))
  monkeypatch.setattr(data, "MNIST_FILES", env_sums)
  np.testing.assert_array_equal(data.load_mnist("test")[1], env_arrays["test"][1])
  # The argument wins over the environment variable.
  monkeypatch.setattr(data, "MNIST_FILES", arg_sums)
  labels = data.load_mnist("test", data_dir=tmp_path / "arg")[1]
  np.testing.assert_array_equal(labels, arg_arrays["test"][1])
  labels = data.load_mnist("test", data_dir=str(tmp_path / "arg"))[1]
  np.testing.assert_array_equal(labels, arg_arrays["test"][1])


def test_without_folder_uses_tfds(monkeypatch):
  monkeypatch.delenv(data.MNIST_DIR_ENV, raising=False)
  calls = []
  monkeypatch.setattr(data, "_load_tfds_split", lambda split: calls.append(split) or "tfds")
  assert data.load_mnist("test[:3]") == "tfds"
  monkeypatch.setenv(data.MNIST_DIR_ENV, "")  # Empty counts as unset.
  assert data.load_mnist() == "tfds"
  assert calls == ["test[:3]", "train"]


# ----------------------------------------------------------------------------
# tensorflow-datasets path.


class _ListSource(list):
  """A data source over a list, with the batched read tfds sources have."""

  def __getitems__(self, keys):
    return [self[k] for k in keys]


def test_tfds_path_under_mock_data(tmp_path, monkeypatch):
  # tfds.testing.mock_data makes download_and_prepare a no-op and swaps the data
  # folder. Its default as_data_source mock cannot do batched reads (tfds 4.9.10
  # assigns an unbound __getitems__ to a MagicMock), so give it a fake source of
  # serialized examples that, like the real one, honours split slicing.
  sizes = {"train": 20, "test": 10}
  split_infos = {
      name: tfds.core.SplitInfo(name=name, shard_lengths=[n], num_bytes=0)
      for name, n in sizes.items()
  }
  requested = []

  def as_data_source(builder, split, deserialize_method=None, **kwargs):
    requested.append((split, deserialize_method))
    records = _ListSource()
    for instruction in tfds.core.ReadInstruction.from_spec(split).to_absolute(split_infos):
      for i in range(sizes[instruction.splitname])[instruction.from_ : instruction.to]:
        image = np.full((28, 28, 1), (i * 20) % 256, dtype=np.uint8)
        example = {"image": image, "label": i % 10}
        records.append(builder.info.features.serialize_example(example))
    return records

  monkeypatch.delenv(data.MNIST_DIR_ENV, raising=False)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    images, labels = data.load_mnist("train")
    assert images.shape == (20, 28, 28, 1) and images.dtype == np.float32
    assert labels.shape == (20,) and labels.dtype == np.int32
    assert 0.0 <= images.min() and images.max() <= 1.0
    np.testing.assert_array_equal(labels, np.arange(20) % 10)
    np.testing.assert_allclose(images[:, 5, 5, 0], (np.arange(20) * 20 % 256) / 255, rtol=1e-6)
    images, labels = data.load_mnist("test[3:5]")
    np.testing.assert_array_equal(labels, [3, 4])
    assert images.shape == (2, 28, 28, 1)
    assert len(data.load_mnist("train[:10%]")[1]) == 2
    with pytest.raises(ValueError, match="holds no digits"):
      data.load_mnist("test[5:5]")
  assert requested[1] == ("test[3:5]", tfds.decode.DeserializeMethod.RAW_BYTES)
  assert not any(tmp_path.iterdir())  # Nothing was prepared.


def test_fast_decode_matches_tfds_decoder():
  builder = _mnist_builder.SaliencyGuideMnist(data_dir="/nonexistent")
  features = builder.info.features
  images, labels = fake_split(4, seed=3)
  records = [
      features.serialize_example({"image": image[..., None], "label": int(label)})
      for image, label in zip(images, labels, strict=True)
  ]
  fast_images, fast_labels = data._decode_records(records, features)
  reference = [features.deserialize_example_np(record) for record in records]
  np.testing.assert_array_equal(fast_images, np.stack([r["image"] for r in reference]))
  np.testing.assert_array_equal(fast_labels, [r["label"] for r in reference])
  assert fast_images.shape == (4, 28, 28, 1) and fast_labels.dtype == np.int32


def test_tfds_prepare_offline_from_manual_dir(tmp_path, monkeypatch):
  # Real download_and_prepare, without network: tfds takes the files from its
  # manual folder, verifies them against the builder's checksums (here those of
  # the synthetic files) and writes array_record files, all without TensorFlow.
  manual = tmp_path / "downloads" / "manual"
  arrays, checksums = write_fake_mnist(manual)
  monkeypatch.setattr(data, "MNIST_FILES", checksums)
  monkeypatch.setattr(data, "SPLIT_SIZES", {"train": N_TRAIN, "test": N_TEST})
  monkeypatch.setattr(_mnist_builder, "can_connect", lambda *a, **k: pytest.fail("network"))
  for split in ("train", "test", "test[1:4]", "train[:25%]+test[-1:]"):
    images, labels = data._load_tfds_split(split, tfds_data_dir=tmp_path)
    expected = data._load_idx_split(manual, split, checksums=checksums)
    np.testing.assert_array_equal(images, expected[0])
    np.testing.assert_array_equal(labels, expected[1])
  prepared = tmp_path / "saliency_guide_mnist" / "1.0.0"
  assert sorted(p.name for p in prepared.glob("*.array_record*")) == [
      "saliency_guide_mnist-test.array_record-00000-of-00001",
      "saliency_guide_mnist-train.array_record-00000-of-00001",
  ]
  np.testing.assert_array_equal(data._load_tfds_split("test", tfds_data_dir=tmp_path)[1],
                                arrays["test"][1])


def test_tfds_prepare_verifies_checksums(tmp_path, monkeypatch):
  manual = tmp_path / "downloads" / "manual"
  _, checksums = write_fake_mnist(manual)
  name = "t10k-images-idx3-ubyte.gz"
  monkeypatch.setattr(data, "MNIST_FILES", {**checksums, name: (checksums[name][0], "0" * 64)})
  with pytest.raises(Exception, match=r"(?s)t10k-images-idx3-ubyte\.gz.*wrong checksum"):
    data._load_tfds_split("test", tfds_data_dir=tmp_path)
  assert not (tmp_path / "saliency_guide_mnist" / "1.0.0").exists()


def _closed_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def test_tfds_path_fails_fast_without_network(tmp_path, monkeypatch):
  monkeypatch.delenv(data.MNIST_DIR_ENV, raising=False)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  monkeypatch.setattr(_mnist_builder, "can_connect", lambda *a, **k: False)
  start = time.monotonic()
  expected = r"MNIST could not be downloaded.*SALIENCY_GUIDE_MNIST_DIR"
  with pytest.raises(RuntimeError, match=expected):
    data.load_mnist("test")
  assert time.monotonic() - start < 10
  assert not (tmp_path / "saliency_guide_mnist" / "1.0.0").exists()


def test_tfds_path_fails_fast_with_unreachable_proxy(tmp_path, monkeypatch):
  # The real connectivity check, made to fail deterministically on any machine
  # by routing downloads through a proxy on a closed local port.
  port = _closed_port()
  for var in ("no_proxy", "NO_PROXY"):
    monkeypatch.delenv(var, raising=False)
  for var in ("https_proxy", "HTTPS_PROXY"):
    monkeypatch.setenv(var, f"http://127.0.0.1:{port}")
  assert _mnist_builder.download_host(data.MNIST_URL + "x.gz") == ("127.0.0.1", port)
  start = time.monotonic()
  with pytest.raises(RuntimeError, match=rf"127\.0\.0\.1:{port} is not reachable"):
    data._load_tfds_split("test", tfds_data_dir=tmp_path)
  assert time.monotonic() - start < 10


def test_can_connect():
  start = time.monotonic()
  assert not _mnist_builder.can_connect("127.0.0.1", _closed_port(), timeout=2.0)
  assert not _mnist_builder.can_connect("invalid.invalid", 443, timeout=2.0)
  assert time.monotonic() - start < 5
  with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen()
    assert _mnist_builder.can_connect("127.0.0.1", server.getsockname()[1], timeout=2.0)


def test_download_host_without_proxy(monkeypatch):
  for var in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    monkeypatch.delenv(var, raising=False)
  assert _mnist_builder.download_host(data.MNIST_URL + "x.gz") == ("storage.googleapis.com", 443)


# ----------------------------------------------------------------------------
# Real MNIST (SALIENCY_GUIDE_MNIST_DIR must name a folder of the official files).

REAL_DIR = os.environ.get(data.MNIST_DIR_ENV, "")
needs_real_mnist = pytest.mark.skipif(
    not REAL_DIR, reason=f"{data.MNIST_DIR_ENV} is not set (folder of the official MNIST files)"
)


@needs_real_mnist
def test_real_test_split():
  images, labels = data.load_mnist("test")
  assert images.shape == (10000, 28, 28, 1) and images.dtype == np.float32
  assert labels.shape == (10000,) and labels.dtype == np.int32
  assert images.min() == 0.0 and images.max() == 1.0
  assert labels[:5].tolist() == [7, 2, 1, 0, 4]
  histogram = np.bincount(labels, minlength=10)
  assert histogram.sum() == 10000 and len(histogram) == 10 and histogram.min() > 800
  start = time.perf_counter()
  tail_images, tail_labels = data.load_mnist("test[8000:]")
  assert time.perf_counter() - start < 3  # ~0.05 s measured; checksums are cached.
  assert len(tail_images) == len(tail_labels) == 2000
  np.testing.assert_array_equal(tail_labels, labels[8000:])
  np.testing.assert_array_equal(tail_images, images[8000:])


@needs_real_mnist
def test_real_train_labels_alone_are_not_a_train_split():
  if (Path(REAL_DIR) / "train-images-idx3-ubyte.gz").exists():
    pytest.skip("this folder has the training images")
  with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\.gz"):
    data.load_mnist("train")


def test_the_suite_runs_offline():
  """The conftest fixture: a non-loopback connection fails the test; lookups fail offline."""
  with socket.socket() as sock, pytest.raises(pytest.fail.Exception, match="offline"):
    sock.connect(("192.0.2.1", 443))  # TEST-NET-1: never routed
  with pytest.raises(socket.gaierror):
    socket.getaddrinfo("example.com", 443)
