"""Greedy reference outputs from llama.cpp for hark-llm's parity test.

  target/peers/venv/bin/python scripts/peers/llm_reference.py MODEL.gguf OUT.json [--threads 2]

For each prompt (ChatML, with a short system prompt) it records the prompt's token ids as
llama.cpp tokenizes them, the greedy continuation (up to 32 tokens, stopping at the end of the
turn), and the five best logits at every step, so the test can tell a real divergence from a
near-tie flipped by rounding. The JSON lands in crates/hark-llm/tests/data/.
"""
import argparse
import json
import sys

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from llama_cpp_peer import Raw, load  # noqa: E402

SYSTEM = "You are a helpful assistant. Answer in one short sentence."
PROMPTS = [
    "What is the capital of France?",
    "Name a color.",
    "How many legs does a spider have?",
    "What is two plus two?",
    "Who wrote Romeo and Juliet?",
    "What do bees make?",
    "Give me a word that rhymes with cat.",
    "What is the largest planet in our solar system?",
    "Why is the sky blue?",
    "Say hello in Spanish.",
    "What is the boiling point of water in Celsius?",
    "Suggest a name for a pet goldfish.",
]


def chatml(question):
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n"
        f"<|im_start|>assistant\n"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    llm, _ = load({"model": args.model, "threads": args.threads, "ctx": 512})
    raw = Raw(llm)
    end = llm.tokenize(b"<|im_end|>", add_bos=False, special=True)
    stop = {end[0], llm.token_eos()}
    cases = []
    for question in PROMPTS:
        text = chatml(question)
        prompt = llm.tokenize(text.encode(), add_bos=False, special=True)
        raw.clear()
        raw.decode(prompt)
        tokens, tops = [], []
        for _ in range(args.max_tokens):
            logits = np.ctypeslib.as_array(
                __import__("llama_cpp").llama_get_logits_ith(raw.ctx, -1), shape=(raw.n_vocab,)
            )
            best = np.argsort(-logits)[:5]
            tops.append([[int(i), float(logits[i])] for i in best])
            tok = int(best[0])
            tokens.append(tok)
            if tok in stop:
                break
            raw.decode([tok])
        cases.append({"text": text, "prompt": prompt, "tokens": tokens, "top": tops})
    json.dump(
        {
            "engine": "llama.cpp via llama-cpp-python " + __import__("llama_cpp").__version__,
            "model": args.model.rsplit("/", 1)[-1],
            "threads": args.threads,
            "cases": cases,
        },
        open(args.out, "w"),
        indent=1,
    )
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
