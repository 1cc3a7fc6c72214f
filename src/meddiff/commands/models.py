"""`meddiff models [NAME] [--long] [--local DIR ...] [--json]`: the shipped and local models, a short table
(`*` marks the model models.yaml recommends for its task) or, for NAME or with --long, their full cards."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models", help="list the shipped and local models with their model cards",
        description="List the models `--checkpoint NAME` accepts: the shipped ones (src/meddiff/checkpoints) and local "
                    "ones (NAME.safetensors files and run folders directly under --local, else $MEDDIFF_MODELS, else "
                    "./runs), as a short table (name, task, modality, default sampler, one headline score against its "
                    "baseline; * = recommended for its task); NAME or --long prints the full cards: task, modality, "
                    "anatomy, training data, licence and measured scores.")
    p.add_argument("name", nargs="?", default=None, help="show this model's full card")
    p.add_argument("--long", action="store_true", help="every model's full card instead of the short table")
    p.add_argument("--local", action="append", default=None, metavar="DIR",
                   help="folder of local models (repeatable; default $MEDDIFF_MODELS, else ./runs)")
    p.add_argument("--json", action="store_true", help="print the cards as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpointing.named import local_models, model_roots, models_table, shipped_models
    from ..errors import CheckpointError

    cards = shipped_models() + local_models(args.local)
    if args.name is not None:
        cards = [c for c in cards if c.name == args.name]
        if not cards:
            names = ", ".join(c.name for c in shipped_models())
            raise CheckpointError(f"no model named {args.name} (shipped: {names}; local models are looked up in "
                                  f"{', '.join(map(str, model_roots(args.local)))})")
    if args.json:
        print(json.dumps([c.to_json() for c in cards], indent=1))
        return 0
    if args.name is None and not args.long:
        print(models_table(cards))
        print("\n* recommended for its task (src/meddiff/checkpoints/models.yaml); `meddiff models NAME` or --long: the full cards")
    else:
        for card in cards:
            print("\n".join(card.lines()) + "\n")
    if not any(c.origin == "local" for c in cards) and args.name is None:
        print(f"(no local models in {', '.join(map(str, model_roots(args.local)))})")
    return 0
