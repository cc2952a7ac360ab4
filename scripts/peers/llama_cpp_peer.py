"""llama.cpp (through llama-cpp-python) as the peer `hark bench llm` measures against.

Reads one JSON request on stdin, prints one JSON answer on stdout. Token ids come from Hark's
own tokenizer so both engines compute exactly the same tokens.

  {"mode": "bench", "model": PATH, "threads": N, "ctx": 2048, "prompt": [ids], "decode": 128, "runs": 3}
  {"mode": "speculative", "model": PATH, "draft": PATH, "threads": N, "ctx": 1024,
   "prompts": [[ids], ...], "max_tokens": 48, "k": 4, "stop": [ids]}

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

    def decode(self, tokens, all_logits=False):
        """`tokens` after what is cached, in batches of 512; logits for the last one, or for
        every one with `all_logits` (a verify batch)."""
        b = self.batch
        for start in range(0, len(tokens), 512):
            chunk = tokens[start : start + 512]
            b.n_tokens = len(chunk)
            for i, t in enumerate(chunk):
                b.token[i] = t
                b.pos[i] = self.pos + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = all_logits or i == len(chunk) - 1
            if llama_cpp.llama_decode(self.ctx, b) != 0:
                raise RuntimeError("llama_decode failed")
            self.pos += len(chunk)

    def argmax(self, i=-1):
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,)
        )
        return int(np.argmax(logits))

    def rollback(self, pos):
        """Forgets every position from `pos` on."""
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self.ctx), 0, pos, -1)
        self.pos = pos


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


def greedy(target, prompt, max_tokens, stop, step):
    """Decodes after `prompt` until a stop token or `max_tokens` tokens. `step(tok, room)` puts
    the decided token `tok` through and returns the next one and how many it decided on the way
    (accepted drafts, at most `room`). Returns the tokens decoded after the first and the time."""
    target.decode(prompt)
    tok, out = target.argmax(), 1
    t0 = time.perf_counter()
    while tok not in stop and out < max_tokens:
        tok, extra = step(tok, max_tokens - out - 1)
        out += 1 + extra
    return out - 1, time.perf_counter() - t0


def speculative(req):
    """Greedy decoding of each prompt, plainly and with draft-model speculation as llama.cpp's
    speculative-simple example does it (the draft proposes k tokens greedily, one target batch
    checks them, both caches are cut back past the first mismatch), on llama.cpp's C API."""
    target_llm, _ = load(req)
    draft_llm, _ = load({**req, "model": req["draft"]})
    target, draft = Raw(target_llm), Raw(draft_llm)
    k, max_tokens, stop = req["k"], req["max_tokens"], set(req["stop"])
    counts = {"drafted": 0, "accepted": 0}

    def plain_step(tok, _room):
        target.decode([tok])
        return target.argmax(), 0

    def speculative_step(tok, room):
        base = target.pos
        drafts, d = [], tok
        for _ in range(k):
            draft.decode([d])
            d = draft.argmax()
            drafts.append(d)
        target.decode([tok] + drafts, all_logits=True)
        n, nxt = 0, target.argmax(0)
        while n < min(k, room) and nxt == drafts[n] and nxt not in stop:
            n += 1
            nxt = target.argmax(n)
        counts["drafted"] += k
        counts["accepted"] += n
        keep = base + 1 + n
        target.rollback(keep)
        if draft.pos < keep:
            # Every draft was kept: the draft has yet to see its own last one.
            draft.decode(drafts[draft.pos - base - 1 : n])
        else:
            draft.rollback(keep)
        return nxt, n

    plain_tokens = plain_s = spec_tokens = spec_s = 0
    for prompt in req["prompts"]:
        target.clear()
        tokens, seconds = greedy(target, prompt, max_tokens, stop, plain_step)
        plain_tokens, plain_s = plain_tokens + tokens, plain_s + seconds
        target.clear()
        draft.clear()
        draft.decode(prompt)
        tokens, seconds = greedy(target, prompt, max_tokens, stop, speculative_step)
        spec_tokens, spec_s = spec_tokens + tokens, spec_s + seconds
    return {
        "engine": f"llama.cpp (llama-cpp-python {__version__})",
        "plain_tok_s": plain_tokens / plain_s if plain_s > 0 else 0.0,
        "speculative_tok_s": spec_tokens / spec_s if spec_s > 0 else 0.0,
        "acceptance": counts["accepted"] / counts["drafted"] if counts["drafted"] else 0.0,
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
    answer = {"bench": bench, "speculative": speculative}[req["mode"]](req)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
