"""Command line: ``python -m saliency_guide pretrain [NAME ...]``.

``pretrain`` trains (or loads from the cache) the named models of
:data:`saliency_guide.zoo.MODEL_SPECS`, all of them by default, and prints what
each was trained and evaluated on (for a model on shuffled labels, also the
training accuracy it reached on them). The docs build runs it once before executing
the tutorials, so that no tutorial waits on training and no two notebooks train
the same model.
"""

from __future__ import annotations

import argparse

from saliency_guide import zoo


def main(argv: list[str] | None = None) -> None:
  """Parse ``argv`` and run the sub-command."""
  parser = argparse.ArgumentParser(prog="python -m saliency_guide", description=__doc__)
  commands = parser.add_subparsers(dest="command", required=True)
  pretrain = commands.add_parser("pretrain", help="train or load the named models")
  pretrain.add_argument("names", nargs="*", metavar="NAME",
                        help=f"models to prepare (default: all of {sorted(zoo.MODEL_SPECS)})")
  pretrain.add_argument("--shuffled-labels", action="store_true",
                        help="also prepare each model trained on shuffled labels until it "
                             "fits them (zoo.SHUFFLED_LABELS_RECIPE)")
  args = parser.parse_args(argv)
  if args.command == "pretrain":
    unknown = sorted(set(args.names) - set(zoo.MODEL_SPECS))
    if unknown:
      parser.error(f"unknown model name(s) {unknown}; expected some of {sorted(zoo.MODEL_SPECS)}")
    for name in args.names or sorted(zoo.MODEL_SPECS):
      for shuffle in (False, True) if args.shuffled_labels else (False,):
        print(zoo.pretrained(name, shuffle_labels=shuffle, progress=False).describe(), flush=True)


if __name__ == "__main__":
  main()
