"""The recipe's fixed names, owned here and imported by the configuration, the data catalog and the evaluation:
the three training stages, in order (PAPER.md §3)."""

STAGES = ("pretrain", "finetune", "distill")
