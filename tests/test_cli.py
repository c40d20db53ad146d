"""``python -m saliency_guide pretrain`` prepares the models."""

import pytest

from saliency_guide import __main__ as cli
from saliency_guide import zoo


def test_pretrain_prepares_each_named_model(monkeypatch, capsys):
  asked = []

  class Record:
    def __init__(self, name, shuffle):
      self.text = f"{name} shuffled={shuffle}"

    def describe(self):
      return self.text

  monkeypatch.setattr(zoo, "pretrained", lambda name, shuffle_labels, progress: (
      asked.append((name, shuffle_labels)) or Record(name, shuffle_labels)))
  cli.main(["pretrain", "cnn", "--shuffled-labels"])
  assert asked == [("cnn", False), ("cnn", True)]
  assert "cnn shuffled=True" in capsys.readouterr().out


def test_pretrain_without_names_prepares_every_model(monkeypatch):
  asked = []
  monkeypatch.setattr(zoo, "pretrained", lambda name, shuffle_labels, progress: (
      asked.append(name) or type("R", (), {"describe": lambda self: name})()))
  cli.main(["pretrain"])
  assert asked == sorted(zoo.MODEL_SPECS)


def test_unknown_model_name_is_rejected():
  with pytest.raises(SystemExit):
    cli.main(["pretrain", "resnet"])
