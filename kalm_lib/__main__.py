"""Command line: ``python -m kalm_lib {train,reproduce,book} ...``.

``train`` runs one stage from a YAML config, so a multi-GPU or multi-node user can launch it with
``accelerate launch -m kalm_lib train --config ...`` or ``torchrun ... -m kalm_lib train ...``.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kalm_lib", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one stage from a config")
    g = t.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", help="a stage YAML file (e.g. configs/smoke/finetune.yaml)")
    g.add_argument("--profile", help="a profile name; needs --stage")
    t.add_argument("--stage", choices=["pretrain", "finetune", "distill"])
    t.add_argument("--run-dir", help="fills {run_dir} in the config (default runs/<profile>)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=1e-4 (repeatable)")
    rg = t.add_mutually_exclusive_group()
    rg.add_argument("--fresh", action="store_true",
                    help="delete the output folder's checkpoints, metrics and final model and train from scratch "
                         "(= --set resume=fresh)")
    rg.add_argument("--restart-schedule", action="store_true",
                    help="keep the latest checkpoint's weights and optimizer moments, start this config's lr "
                         "schedule and data order at step 0 (= --set resume=restart_schedule)")

    r = sub.add_parser("reproduce", help="run every notebook for a profile, then build the book")
    r.add_argument("--profile", default="smoke")
    r.add_argument("--build-dir", default=None, help="default build/<profile>")
    r.add_argument("--no-book", action="store_true")
    r.add_argument("--from", dest="start", default=None, metavar="NOTEBOOK",
                   help="re-run from this notebook on (e.g. 05_evaluate), reusing the earlier ones' outputs")

    b = sub.add_parser("book", help="build the book from the latest reproduce output")
    b.add_argument("--build-dir", default="build/smoke")

    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.command == "train":
        from kalm_lib.config import load_config, parse_override, stage_config
        from kalm_lib.train import train_stage

        overrides = dict(parse_override(s) for s in args.set)
        if args.fresh or args.restart_schedule:
            overrides["resume"] = "fresh" if args.fresh else "restart_schedule"
        if args.profile:
            if not args.stage:
                p.error("--profile needs --stage")
            cfg = stage_config(args.profile, args.stage, args.run_dir or f"runs/{args.profile}", overrides)
        else:
            cfg = load_config(args.config, overrides=overrides, run_dir=args.run_dir)
        print(train_stage(cfg))
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        return 0
    if args.command == "reproduce":
        from kalm_lib.reproduce import reproduce

        reproduce(args.profile, args.build_dir or f"build/{args.profile}", build_book=not args.no_book,
                  start=args.start)
        return 0
    if args.command == "book":
        from kalm_lib.book import build_book

        print(build_book(args.build_dir))
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
