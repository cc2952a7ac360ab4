"""llama.cpp (through llama-cpp-python) as the peer `hark bench llm` measures against.

Reads one JSON request on stdin, prints one JSON answer on stdout. Token ids come from Hark's
own tokenizer so both engines compute exactly the same tokens.

  {"mode": "bench", "model": PATH, "threads": N, "ctx": 2048, "prompt": [ids], "decode": 128, "runs": 3}

Greedy references for the parity test come from llm_reference.py, which reuses `load` and `Raw`.

Installed by scripts/setup-peers.
"""
import json
import resource
import sys
import time

import numpy as np
import llama_cpp
from llama_cpp import Llama, __version__


def load(req):
    started = time.perf_counter()
    llm = Llama(
        model_path=req["model"],
        n_threads=req["threads"],
        n_threads_batch=req["threads"],
        n_ctx=req.get("ctx", 2048),
        n_batch=512,
        logits_all=False,
        verbose=False,
    )
    return llm, time.perf_counter() - started


class Raw:
    """llama.cpp's C API called directly (batch reused, logits read in place), so the timings
    are llama.cpp's, not the Python wrapper's per-call overhead."""

    def __init__(self, llm):
        self.ctx = llm._ctx.ctx
        vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self.batch = llama_cpp.llama_batch_init(max(512, llm.n_ctx()), 0, 1)
        self.pos = 0

    def clear(self):
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        self.pos = 0

    def decode(self, tokens):
        b = self.batch
        for start in range(0, len(tokens), 512):
            chunk = tokens[start : start + 512]
            b.n_tokens = len(chunk)
            for i, t in enumerate(chunk):
                b.token[i] = t
                b.pos[i] = self.pos + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = i == len(chunk) - 1
            if llama_cpp.llama_decode(self.ctx, b) != 0:
                raise RuntimeError("llama_decode failed")
            self.pos += len(chunk)

    def argmax(self):
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,)
        )
        return int(np.argmax(logits))


def bench(req):
    llm, load_s = load(req)
    raw = Raw(llm)
    prompt = req["prompt"]
    raw.clear()
    raw.decode(prompt[:8])  # warm-up
    runs = []
    for _ in range(req.get("runs", 3)):
        raw.clear()
        t0 = time.perf_counter()
        raw.decode(prompt)
        t1 = time.perf_counter()
        tok = raw.argmax()
        t2 = time.perf_counter()
        n = req.get("decode", 128)
        for _ in range(n):
            raw.decode([tok])
            tok = raw.argmax()
        t3 = time.perf_counter()
        runs.append(
            {
                "prefill_tok_s": len(prompt) / (t1 - t0),
                "ttft_ms": (t2 - t0) * 1000.0,
                "decode_tok_s": n / (t3 - t2),
            }
        )
    return {
        "engine": f"llama.cpp (llama-cpp-python {__version__})",
        "load_s": load_s,
        "runs": runs,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def peak_rss_bytes():
    """This process's own peak RSS. Not getrusage's ru_maxrss: Linux carries that across fork and
    exec, so it would report the parent's (Hark's) peak when Hark's is the larger."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main():
    req = json.load(sys.stdin)
    answer = {"bench": bench}[req["mode"]](req)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
