"""Encoding throughput: ``KaLMEmbedder.encode`` against ``SentenceTransformer.encode``, same model, same texts.

Equal work: the peer is loaded from the folder ``KaLMEmbedder.save`` wrote (bidirectional, mean pooling,
L2 norm) and the kalm side is a ``KaLMEmbedder`` around that same backbone module, so both run the very same
parameter tensors (see ``_common.kalm_on``); both encode the same real texts in the same input order with
the same batch size and max length, and return normalised float32 numpy arrays; the outputs are compared
(max |Δ|). How each side cuts its batches is the libraries' own choice and part of what is measured: the
peer sorts by character length, kalm by token count (``KaLMEmbedder.length_sorted_batches``); the number
of tokens each side embedded (padding included) is counted at the shared token-embedding module and printed.

Two text sets: ``sts`` (1,024 STS Benchmark test sentences, 4–22 tokens, max length 128) and ``scifact``
(128 SciFact claims and 64 abstracts, 8–638 tokens, max length 256: a retrieval corpus's mix).
Rounds alternate kalm/peer (ABBA) after a warm-up round.

Run: ``.venv/bin/python benchmarks/bench_encode.py [--quick] [--sets sts,scifact]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def scifact_texts(n_queries: int, n_docs: int) -> list[str]:
    """SciFact claims (short) and abstracts ("title text", long), interleaved: a retrieval corpus's mix."""
    base = C.data_dir() / "en" / "retr-scifact"
    with (base / "queries.jsonl").open(encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for _, line in zip(range(n_queries), f)]
    with (base / "corpus.jsonl").open(encoding="utf-8") as f:
        docs = [(lambda r: f"{r.get('title', '')} {r['text']}".strip())(json.loads(line))
                for _, line in zip(range(n_docs), f)]
    step = max(1, len(queries) // max(1, len(docs)))
    out = []
    for i, d in enumerate(docs):
        out.extend(queries[i * step:(i + 1) * step])
        out.append(d)
    out.extend(queries[len(docs) * step:])
    return out


def _count_embedded(backbone):
    """A forward pre-hook on the backbone's token-embedding module that adds up the (padded) tokens it
    looks up; returns (counter, handle). On the embedding module, not the backbone: sentence-transformers
    calls the backbone's ``forward`` method directly, past module hooks."""
    seen = [0]

    def hook(_m, args):
        seen[0] += args[0].numel()
    return seen, backbone.get_input_embeddings().register_forward_pre_hook(hook)


def run_set(name: str, kalm, st, texts: list[str], batch_size: int, max_len: int, rounds: int) -> dict:
    import numpy as np

    kalm.max_length = max_len
    st.max_seq_length = max_len
    lengths = [len(x) for x in kalm.tokenizer(texts)["input_ids"]]
    n_tokens = sum(min(L, max_len) for L in lengths)
    print(f"\n-- {name}: {len(texts)} texts, {n_tokens} tokens after truncation (min {min(lengths)}, median "
          f"{int(statistics.median(lengths))}, max {max(lengths)} before), batch {batch_size}, max_len {max_len}")
    out, embedded = {}, {}

    def counted(side, fn):
        def run(_r):
            seen, h = _count_embedded(C.st_backbone(st))
            try:
                out[side] = fn()
            finally:
                h.remove()
            embedded[side] = seen[0]
        return run

    sides = {"kalm": counted("kalm", lambda: kalm.encode(texts, batch_size=batch_size, show_progress_bar=False)),
             "peer": counted("peer", lambda: st.encode(texts, batch_size=batch_size, show_progress_bar=False,
                                                       convert_to_numpy=True))}
    times, cpu = C.interleave(sides, rounds=rounds, warmup=1)
    diff = float(np.abs(out["kalm"] - out["peer"]).max())
    r = C.speed_ratio(times["kalm"], times["peer"])
    res = {"set": name, "texts": len(texts), "tokens": n_tokens, "batch_size": batch_size, "max_len": max_len,
           "rounds": rounds, "kalm_texts_per_s": len(texts) / statistics.median(times["kalm"]),
           "peer_texts_per_s": len(texts) / statistics.median(times["peer"]),
           "kalm_tokens_per_s": n_tokens / statistics.median(times["kalm"]),
           "peer_tokens_per_s": n_tokens / statistics.median(times["peer"]),
           "kalm_embedded_tokens": embedded["kalm"], "peer_embedded_tokens": embedded["peer"],
           "max_abs_embedding_diff": diff, **r, "cpu_time_ratio": statistics.median(cpu["peer"]) / statistics.median(cpu["kalm"]),
           "times_kalm": times["kalm"], "times_peer": times["peer"], "cpu_kalm": cpu["kalm"], "cpu_peer": cpu["peer"]}
    print(f"   kalm_lib : {C.fmt(res['kalm_texts_per_s'], 1):>8} texts/s  {C.fmt(res['kalm_tokens_per_s'], 0):>8} tokens/s")
    print(f"   peer     : {C.fmt(res['peer_texts_per_s'], 1):>8} texts/s  {C.fmt(res['peer_tokens_per_s'], 0):>8} tokens/s")
    print(f"   ratio kalm/peer = {r['ratio']:.3f}x  (per-round quartiles {r['round_ratio_q1']:.3f} / "
          f"{r['round_ratio_median']:.3f} / {r['round_ratio_q3']:.3f}); CPU-time ratio {res['cpu_time_ratio']:.3f}x;"
          "  target >= 1.0x")
    for side in ("kalm", "peer"):
        print(f"   {side} embedded {embedded[side]:,} tokens ({1 - n_tokens / embedded[side]:.1%} padding)")
    print(f"   equal work: same embeddings, max |Δ| = {diff:.2e}")
    return res


SETS = {"sts": dict(max_len=128), "scifact": dict(max_len=256)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sets", default="sts,scifact", help="comma-separated subset of " + ",".join(SETS))
    ap.add_argument("--texts", type=int, default=1024, help="STS-B sentences")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args(argv)
    import torch

    sets = args.sets.split(",")
    unknown = [x for x in sets if x not in SETS]
    if unknown:
        ap.error(f"unknown set(s) {unknown}; choose from {sorted(SETS)}")
    info = C.print_header("encoding throughput: KaLMEmbedder.encode vs SentenceTransformer.encode")
    torch.manual_seed(0)
    own, st, _ = C.build_pair(max_length=128)
    kalm = C.kalm_on(st, own.tokenizer, 128)
    del own
    kalm.eval()
    st.eval()
    rounds = args.rounds or (2 if args.quick else 8)
    result = {"machine": info, "command": "benchmarks/bench_encode.py" + (" --quick" if args.quick else "")}
    for name in sets:
        texts = (C.sts_sentences(256 if args.quick else args.texts) if name == "sts"
                 else scifact_texts(*((32, 16) if args.quick else (128, 64))))
        res = run_set(name, kalm, st, texts, args.batch_size, SETS[name]["max_len"], rounds)
        result["encode" if name == "sts" else f"encode_{name}"] = res
    C.write_json("encode", result)
    return result


if __name__ == "__main__":
    main()
