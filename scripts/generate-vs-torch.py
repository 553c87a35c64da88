#!/usr/bin/env python3
"""Greedy generation by SmolLM2-135M in PyTorch eager (transformers, fp32, its KV cache), as the
peer of `fuselage generate`: prefill ms and decode tokens/s of the same prompt and token count.

    PEERS_VENV/bin/python scripts/generate-vs-torch.py --gguf MODEL.gguf --prompt TEXT \
        --max-tokens 64 --threads 2

Prints one JSON object: tokens, prefill_ms, decode_tokens_per_s, decode_median_ms, and
prefill128_ms: the median of 5 forwards over 128 tokens at batch 1 (the time to re-run a
128-token prefix, the same shape as `fuselage bench MODEL --batch 1 --seq 128`).
"""
import argparse
import json
import os
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(a.threads)
    d, f = os.path.split(os.path.abspath(a.gguf))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).eval()
    ids = tok(a.prompt, return_tensors="pt", add_special_tokens=False).input_ids
    out, times = [], []
    with torch.inference_mode():
        # One warm-up generation of a few tokens (allocator, kernels), then the timed one.
        model(ids[:, :4], use_cache=True)
        past = None
        feed = ids
        for _ in range(a.max_tokens):
            t0 = time.perf_counter()
            r = model(feed, past_key_values=past, use_cache=True)
            nxt = int(torch.argmax(r.logits[0, -1]))
            times.append(time.perf_counter() - t0)
            past = r.past_key_values
            out.append(nxt)
            feed = torch.tensor([[nxt]])
        # A 128-token forward (the prompt's ids repeated), median of 5 after one warm-up.
        long = ids.repeat(1, 128 // ids.shape[1] + 1)[:, :128]
        model(long, use_cache=False)
        fwd = []
        for _ in range(5):
            t0 = time.perf_counter()
            model(long, use_cache=False)
            fwd.append(time.perf_counter() - t0)
    dec = times[1:]
    srt = sorted(dec)
    print(json.dumps({
        "peer": "pytorch-eager",
        "torch": torch.__version__,
        "threads": a.threads,
        "prompt_tokens": int(ids.shape[1]),
        "tokens": out,
        "continuation": tok.decode(out),
        "prefill_ms": times[0] * 1e3,
        "decode_median_ms": (srt[len(srt) // 2] * 1e3) if srt else 0.0,
        "decode_tokens_per_s": (len(dec) / sum(dec)) if dec else 0.0,
        "prefill128_ms": sorted(fwd)[2] * 1e3,
    }))


if __name__ == "__main__":
    main()
