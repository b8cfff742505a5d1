"""Command line: ``python -m kalm_lib {train,mine,teacher,evaluate,pipeline,reproduce,book} ...``.

Every stage has a command, so ``accelerate launch`` / ``torchrun`` runs the whole pipeline without notebooks::

    accelerate launch -m kalm_lib pipeline --profile paper --run-dir runs/paper     # all of it, in order
    accelerate launch -m kalm_lib train --profile gpu --stage pretrain               # stage 1
    accelerate launch -m kalm_lib mine --profile gpu                                 # hard negatives, stage-1 model
    accelerate launch -m kalm_lib train --profile gpu --stage finetune               # stage 2
    accelerate launch -m kalm_lib teacher --profile gpu                              # teacher scores
    accelerate launch -m kalm_lib train --profile gpu --stage distill                # stage 3
    python -m kalm_lib evaluate --profile gpu                                        # the final suite

Mining and teacher scoring use every process of the launch (each encodes its shard; rank 0 writes).
``--set KEY=VALUE`` overrides a stage config's value (for ``pipeline``: every stage's).
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

    def run_args(q, stage_set: bool = True):
        q.add_argument("--profile", default="smoke")
        q.add_argument("--run-dir", help="the run folder (default runs/<profile>)")
        if stage_set:
            q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                           help="override a stage config value (repeatable)")

    run_args(sub.add_parser("mine", help="stage 2's hard negatives, mined with the stage-1 model "
                                         "(the profile's mining section; --set: the fine-tuning config's)"))
    run_args(sub.add_parser("teacher", help="stage 3's teacher scores of every distillation example "
                                            "(cached, resumable; --set: the distillation config's)"))
    e = sub.add_parser("evaluate", help="score each finished stage model (and the teacher) on the final suite")
    run_args(e, stage_set=False)
    e.add_argument("--stages", nargs="+", default=["pretrain", "finetune", "distill"])
    e.add_argument("--max-rows", type=int, help="row cap per task (default: the profile's eval.final_max_rows)")
    e.add_argument("--tasks", nargs="+", help="task names (default: the profile's eval.final_tasks)")
    pl = sub.add_parser("pipeline", help="pretrain, mine, finetune, teacher, distill, evaluate: the whole run")
    run_args(pl)
    pl.add_argument("--no-eval", action="store_true", help="stop after distillation")

    r = sub.add_parser("reproduce", help="run every notebook for a profile, then build the book")
    r.add_argument("--profile", default="smoke")
    r.add_argument("--build-dir", default=None, help="default build/<profile>")
    r.add_argument("--no-book", action="store_true")
    r.add_argument("--from", dest="start", default=None, metavar="NOTEBOOK",
                   help="re-run from this notebook on (e.g. 05_evaluate), reusing the earlier ones' outputs")

    d = sub.add_parser("data", help="fetch every Hub repository a profile reads into a local copy (KALM_HUB_DIR) "
                                    "for runs without the network (resumable)")
    d.add_argument("--profile", default="smoke")
    d.add_argument("--hub-dir", required=True, help="where the copy goes; then run with KALM_HUB_DIR=<this folder>")
    d.add_argument("--list", action="store_true", help="only list the repositories and who reads each")

    b = sub.add_parser("book", help="build the book from the latest reproduce output")
    b.add_argument("--build-dir", default="build/smoke")

    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.command == "data":
        from kalm_lib.fetch import fetch, profile_repos

        if args.list:
            for r in profile_repos(args.profile):
                print(f"{r.kind:8s} {r.repo}{'@' + r.revision if r.revision else ''}  ({r.why})"
                      + (f" subsets {', '.join(r.subsets)}" if r.subsets else ""))
            return 0
        folders = fetch(args.profile, args.hub_dir)
        print(f"{len(folders)} repositories under {args.hub_dir}: run with KALM_HUB_DIR={args.hub_dir}")
        return 0
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
    if args.command in ("mine", "teacher", "evaluate", "pipeline"):
        from kalm_lib.config import parse_override

        run_dir = args.run_dir or f"runs/{args.profile}"
        overrides = dict(parse_override(x) for x in getattr(args, "set", []))
        if args.command == "mine":
            print(_mine(args.profile, run_dir, overrides).to_string())
        elif args.command == "teacher":
            for name, path in _teacher(args.profile, run_dir, overrides).items():
                print(f"{name}: {path}")
        elif args.command == "evaluate":
            print(_evaluate(args.profile, run_dir, args.stages, args.tasks, args.max_rows).to_string())
        else:
            _pipeline(args.profile, run_dir, overrides, evaluate=not args.no_eval)
        # after evaluation (rank 0 alone, maybe for hours) no barrier: the other ranks have left already
        _finish_distributed(barrier=args.command in ("mine", "teacher") or getattr(args, "no_eval", False))
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


def _distributed() -> bool:
    """Join the launch's process group (``accelerate launch`` / ``torchrun`` set WORLD_SIZE) for the steps that
    are not a training stage (accelerate does it there); True when this is rank 0 or no launch."""
    from kalm_lib.distributed import ensure_process_group, is_main_process

    ensure_process_group()
    return is_main_process()


def _finish_distributed(barrier: bool = True) -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def _mine(profile: str, run_dir: str, overrides: dict):
    from kalm_lib.stages import mine_for_finetune

    _distributed()
    return mine_for_finetune(profile, run_dir, overrides=overrides)


def _teacher(profile: str, run_dir: str, overrides: dict) -> dict:
    from kalm_lib.stages import score_for_distill

    _distributed()
    return score_for_distill(profile, run_dir, overrides=overrides)


def _evaluate(profile: str, run_dir: str, stages, tasks, max_rows):
    """The final suite for each finished stage (rank 0 only: evaluation is one process)."""
    import pandas as pd

    from kalm_lib import evaluation as ev

    main = _distributed()
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()  # every stage model is written; then the other ranks leave (evaluation is one process)
    if not main:
        return pd.DataFrame()
    suite, cap = ev.final_suite(profile)
    tasks = tasks or suite
    frames = []
    for stage, path in ev.stage_checkpoints(run_dir, stages).items():
        frames.append(ev.evaluate_model(path, tasks=tasks, output_dir=f"{run_dir}/eval/final", model_name=stage,
                                        max_rows=max_rows if max_rows is not None else cap))
    if not frames:
        raise SystemExit(f"no finished stage model under {run_dir} (looked for {', '.join(stages)})")
    out = pd.concat(frames, ignore_index=True)
    ev.record_models(f"{run_dir}/eval/final", list(dict.fromkeys(out["model"])))
    return out


def _pipeline(profile: str, run_dir: str, overrides: dict, evaluate: bool = True) -> None:
    """The paper's three stages with their data steps between, as the notebooks run them."""
    from kalm_lib.config import stage_config
    from kalm_lib.train import train_stage

    log = logging.getLogger("kalm_lib.pipeline")
    for step in ("pretrain", "mine", "finetune", "teacher", "distill"):
        log.info("pipeline %s: %s", profile, step)
        if step == "mine":
            _mine(profile, run_dir, overrides)
        elif step == "teacher":
            _teacher(profile, run_dir, overrides)
        else:
            train_stage(stage_config(profile, step, run_dir, overrides))
    if evaluate:
        print(_evaluate(profile, run_dir, ["pretrain", "finetune", "distill"], None, None).to_string())


if __name__ == "__main__":
    sys.exit(main())
