"""Encoding throughput: ``KaLMEmbedder.encode`` against ``SentenceTransformer.encode``, same model, same texts.

Equal work: the peer is loaded from the folder ``KaLMEmbedder.save`` wrote (bidirectional, mean pooling,
L2 norm) and the kalm side is a ``KaLMEmbedder`` around that same backbone module, so both run the very same
parameter tensors (see ``_common.kalm_on``); both encode the same real, mixed-length STS Benchmark test
sentences with the same
batch size and max length, both sort by character length before batching (so their batches hold the
same texts), both return normalised float32 numpy arrays; the outputs are compared (max |Δ|).
Rounds alternate kalm/peer (ABBA) after a warm-up round.

Run: ``.venv/bin/python benchmarks/bench_encode.py [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--texts", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args(argv)
    import numpy as np
    import torch

    info = C.print_header("encoding throughput: KaLMEmbedder.encode vs SentenceTransformer.encode")
    torch.manual_seed(0)
    own, st, _ = C.build_pair(max_length=args.max_len)
    kalm = C.kalm_on(st, own.tokenizer, args.max_len)
    del own
    kalm.eval()
    st.eval()
    n = 256 if args.quick else args.texts
    texts = C.sts_sentences(n)
    lengths = [len(x) for x in kalm.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    n_tokens = sum(min(L, args.max_len) for L in lengths)
    print(f"   {len(texts)} STS-B test sentences, {n_tokens} tokens (min {min(lengths)}, median "
          f"{int(statistics.median(lengths))}, max {max(lengths)}), batch {args.batch_size}, max_len {args.max_len}")
    out = {}

    def kalm_side(_r):
        out["kalm"] = kalm.encode(texts, batch_size=args.batch_size, show_progress_bar=False)

    def peer_side(_r):
        out["peer"] = st.encode(texts, batch_size=args.batch_size, show_progress_bar=False, convert_to_numpy=True)

    rounds = args.rounds or (2 if args.quick else 8)
    times, cpu = C.interleave({"kalm": kalm_side, "peer": peer_side}, rounds=rounds, warmup=1)
    diff = float(np.abs(out["kalm"] - out["peer"]).max())
    r = C.speed_ratio(times["kalm"], times["peer"])
    res = {"texts": len(texts), "tokens": n_tokens, "batch_size": args.batch_size, "max_len": args.max_len,
           "rounds": rounds, "kalm_texts_per_s": len(texts) / statistics.median(times["kalm"]),
           "peer_texts_per_s": len(texts) / statistics.median(times["peer"]),
           "kalm_tokens_per_s": n_tokens / statistics.median(times["kalm"]),
           "peer_tokens_per_s": n_tokens / statistics.median(times["peer"]),
           "max_abs_embedding_diff": diff, **r, "cpu_time_ratio": statistics.median(cpu["peer"]) / statistics.median(cpu["kalm"]),
           "times_kalm": times["kalm"], "times_peer": times["peer"], "cpu_kalm": cpu["kalm"], "cpu_peer": cpu["peer"]}
    print(f"   kalm_lib : {C.fmt(res['kalm_texts_per_s'], 1):>8} texts/s  {C.fmt(res['kalm_tokens_per_s'], 0):>8} tokens/s")
    print(f"   peer     : {C.fmt(res['peer_texts_per_s'], 1):>8} texts/s  {C.fmt(res['peer_tokens_per_s'], 0):>8} tokens/s")
    print(f"   ratio kalm/peer = {r['ratio']:.3f}x  (per-round quartiles {r['round_ratio_q1']:.3f} / "
          f"{r['round_ratio_median']:.3f} / {r['round_ratio_q3']:.3f}); CPU-time ratio {res['cpu_time_ratio']:.3f}x;"
          "  target >= 1.0x")
    print(f"   equal work: same embeddings, max |Δ| = {diff:.2e}")
    result = {"machine": info, "command": "benchmarks/bench_encode.py" + (" --quick" if args.quick else ""),
              "encode": res}
    C.write_json("encode", result)
    return result


if __name__ == "__main__":
    main()
