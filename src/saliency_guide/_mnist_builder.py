"""A TensorFlow-free tensorflow-datasets builder for MNIST.

tfds's stock ``mnist`` builder stores each digit as a PNG through
``tfds.features.Image``, which needs TensorFlow to encode and decode. This
builder, :class:`SaliencyGuideMnist`, stores the same digits as raw ``uint8``
tensors (``tfds.features.Tensor`` with byte encoding) in the ``array_record``
format, so that downloading, preparing and reading (``builder.as_data_source``)
all work with tensorflow-datasets alone, without TensorFlow installed.

The four official MNIST files are fetched by tfds's download manager from the
same URLs as the stock builder, and their sizes and SHA-256 checksums are
verified against :data:`saliency_guide.data.MNIST_FILES` (the values tfds
registers for MNIST in ``tensorflow_datasets/url_checksums/mnist.txt``).

Working offline: files placed in the download manager's manual folder
(``<tfds data dir>/downloads/manual/`` by default, or
``tfds.download.DownloadConfig(manual_dir=...)``) are used instead of being
downloaded. If a file is neither there nor reachable on the network,
preparation fails within seconds with a :class:`RuntimeError` instead of
tfds's several-minute retry loop.

This module is private: use :func:`saliency_guide.data.load_mnist`.

References:
  Y. LeCun, C. Cortes, C. J. C. Burges. The MNIST database of handwritten
  digits. http://yann.lecun.com/exdb/mnist/
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from saliency_guide import data as _data

__all__ = ["SaliencyGuideMnist", "can_connect", "download_host"]

_CONNECT_TIMEOUT_S = 3.0


def download_host(url: str) -> tuple[str, int]:
  """The ``(host, port)`` a download of ``url`` connects to first.

  That is the HTTPS/HTTP proxy when one is configured for ``url`` (the
  ``https_proxy``/``http_proxy`` environment variables, as ``requests`` and
  tfds's downloader use them), else the URL's own host.

  Args:
    url: an ``http://`` or ``https://`` URL.

  Returns:
    ``(host, port)``.

  Example:
    >>> download_host("https://storage.googleapis.com/cvdf-datasets/mnist/x.gz")[1]
    443
  """
  parsed = urllib.parse.urlsplit(url)
  proxy = urllib.request.getproxies().get(parsed.scheme)
  if proxy and not urllib.request.proxy_bypass(parsed.hostname or ""):
    proxy_parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    default_port = 443 if proxy_parsed.scheme == "https" else 80
    return proxy_parsed.hostname or "", proxy_parsed.port or default_port
  default_port = 443 if parsed.scheme == "https" else 80
  return parsed.hostname or "", parsed.port or default_port


def can_connect(host: str, port: int, timeout: float = _CONNECT_TIMEOUT_S) -> bool:
  """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds.

  The name lookup and the connection run in a daemon thread, so that a slow or
  hanging DNS lookup (which ``socket`` timeouts do not cover) cannot make the
  caller wait longer than ``timeout``.

  Args:
    host: host name or IP address.
    port: TCP port.
    timeout: seconds to wait at most.

  Returns:
    ``True`` if the connection opened, ``False`` on any error or timeout.

  Example:
    >>> import socket
    >>> with socket.socket() as server:
    ...   server.bind(("127.0.0.1", 0))
    ...   server.listen()
    ...   can_connect("127.0.0.1", server.getsockname()[1], timeout=1.0)
    True
  """
  result: list[bool] = []

  def attempt() -> None:
    try:
      with socket.create_connection((host, port), timeout=timeout):
        result.append(True)
    except OSError:
      result.append(False)

  thread = threading.Thread(target=attempt, daemon=True, name="saliency_guide-connect")
  thread.start()
  thread.join(timeout)
  return bool(result and result[0])


def _in_manual_dir(dl_manager: tfds.download.DownloadManager, filename: str) -> bool:
  """Whether ``filename`` is in the download manager's (non-empty) manual folder."""
  try:
    manual_dir = dl_manager.manual_dir
  except (AssertionError, ValueError):  # Folder missing or empty.
    return False
  return (manual_dir / filename).is_file()


class SaliencyGuideMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """MNIST as raw ``uint8`` tensors in array_record files (no TensorFlow needed).

  Features: ``image``, a ``(28, 28, 1)`` ``uint8`` tensor, and ``label``, a
  ``ClassLabel`` with 10 classes. Splits ``train`` (60,000) and ``test``
  (10,000), each in the order of the official files.

  The class is not added to tfds's registry of names (so that importing this
  module twice, e.g. in a notebook, cannot clash); construct it directly:
  ``SaliencyGuideMnist(data_dir=...)``.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {
      "1.0.0": "MNIST as raw uint8 tensors in array_record files."
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional: to prepare without network access, put the four official MNIST "
      f"files ({', '.join(_data.MNIST_FILES)}) in the manual folder."
  )

  @tfds.core.utils.classproperty
  @classmethod
  def url_infos(cls) -> dict[str, Any]:
    """Expected size, SHA-256 and file name of each download URL."""
    return {
        _data.MNIST_URL + name: tfds.core.download.checksums.UrlInfo(
            size=tfds.core.utils.Size(size), checksum=sha256, filename=name
        )
        for name, (size, sha256) in _data.MNIST_FILES.items()
    }

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="The MNIST database of handwritten digits, as raw uint8 tensors.",
        features=tfds.features.FeaturesDict(
            {
                "image": tfds.features.Tensor(
                    shape=_data.MNIST_IMAGE_SHAPE,
                    dtype=np.uint8,
                    encoding=tfds.features.Encoding.BYTES,
                ),
                "label": tfds.features.ClassLabel(num_classes=_data.MNIST_NUM_CLASSES),
            }
        ),
        supervised_keys=("image", "label"),
        # Keep the examples in the order of the official files.
        disable_shuffling=True,
        homepage="http://yann.lecun.com/exdb/mnist/",
        citation=_data.MNIST_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    urls = {name: _data.MNIST_URL + name for name in _data.MNIST_FILES}
    to_download = [name for name in urls if not _in_manual_dir(dl_manager, name)]
    if to_download:
      host, port = download_host(urls[to_download[0]])
      if not can_connect(host, port):
        raise RuntimeError(
            f"MNIST could not be downloaded: {host}:{port} is not reachable (no connection "
            f"within {_CONNECT_TIMEOUT_S:g} s; no network?). To work offline, set the "
            f"environment variable {_data.MNIST_DIR_ENV} (or pass data_dir= to "
            "saliency_guide.data.load_mnist) to a folder holding the official MNIST files "
            f"{', '.join(_data.MNIST_FILES)}."
        )
    paths = dl_manager.download(urls)
    return {
        split: self._generate_examples(
            images_path=paths[images_name], labels_path=paths[labels_name]
        )
        for split, (images_name, labels_name) in _data.SPLIT_FILES.items()
    }

  def _generate_examples(
      self, images_path: os.PathLike, labels_path: os.PathLike
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    images, labels = _data._read_mnist_pair(images_path, labels_path)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
      yield index, {"image": image[..., None], "label": int(label)}
