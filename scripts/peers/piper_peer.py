"""Piper (the PyPI `piper-tts` engine) as the peer `hark bench tts` measures against.

Reads one JSON request on stdin, prints one JSON answer on stdout.

  {"mode": "bench", "model": PATH, "config": PATH, "espeak_data": PATH, "threads": N,
   "texts": ["...", ...], "runs": 3}
  -> {"engine": "piper-tts X.Y.Z", "load_s": s, "sample_rate": hz, "espeak_data": PATH,
      "texts": [{"text": "...", "runs": [{"ttfa_ms": ms, "total_ms": ms, "audio_s": s,
                                          "rtf": x}, ...]}, ...],
      "peak_rss_bytes": n}

  {"mode": "wav", "model": PATH, "config": PATH, "threads": N, "text": "...", "out": PATH}
  -> {"engine": ..., "load_s": s, "sample_rate": hz, "espeak_data": PATH, "out": PATH,
      "samples": n, "audio_s": s}
     (16-bit mono WAV at the voice's rate; sentences are joined with no added silence)

The voice is loaded once (load_s: config and ONNX session; espeak-ng itself initialises on the
first phonemization, which the warm-up sentence does before anything is measured). Each run
times piper-tts's own streaming API, `PiperVoice.synthesize`, which phonemizes the whole text and
then yields one AudioChunk per sentence: ttfa_ms is from the call until the first chunk is
available, total_ms until the last; rtf = total_ms / 1000 / audio_s.

Threads: `PiperVoice.load` always builds its session with default SessionOptions, so this script
builds the voice itself (the same CPU-only path as `load`) with an onnxruntime InferenceSession
whose SessionOptions.intra_op_num_threads = threads (as Hark's own session sets intra threads).

espeak-ng: piper-tts links espeak-ng 1.52 statically and ships the matching espeak-ng-data inside
the package; that bundled data is what it uses. The request's "espeak_data" (Hark's Debian 1.51
data) is accepted and ignored, so that library and data stay the same version; the answer's
"espeak_data" names the directory actually used.

Installed by scripts/setup-peers.
"""
import importlib.metadata
import json
import resource
import sys
import time
import wave

import onnxruntime
from piper import PiperConfig, PiperVoice
from piper.phonemize_espeak import ESPEAK_DATA_DIR

VERSION = importlib.metadata.version("piper-tts")
WARM_UP = "Hello there."


def load(req):
    started = time.perf_counter()
    with open(req["config"], "r", encoding="utf-8") as f:
        config = PiperConfig.from_dict(json.load(f))
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = int(req.get("threads", 1))
    opts.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(req["model"]), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    voice = PiperVoice(session=session, config=config, espeak_data_dir=ESPEAK_DATA_DIR)
    return voice, time.perf_counter() - started


def speak(voice, text):
    """One timed synthesis through the streaming API: (ttfa_s, total_s, samples)."""
    samples = 0
    ttfa = None
    t0 = time.perf_counter()
    for chunk in voice.synthesize(text):
        if ttfa is None:
            ttfa = time.perf_counter() - t0
        samples += len(chunk.audio_float_array)
    total = time.perf_counter() - t0
    return (total if ttfa is None else ttfa), total, samples


def header(voice, load_s):
    return {
        "engine": f"piper-tts {VERSION}",
        "load_s": load_s,
        "sample_rate": voice.config.sample_rate,
        "espeak_data": str(voice.espeak_data_dir),
    }


def bench(req):
    voice, load_s = load(req)
    rate = voice.config.sample_rate
    speak(voice, WARM_UP)
    texts = []
    for text in req["texts"]:
        runs = []
        for _ in range(req.get("runs", 3)):
            ttfa, total, samples = speak(voice, text)
            audio_s = samples / rate
            runs.append(
                {
                    "ttfa_ms": ttfa * 1000.0,
                    "total_ms": total * 1000.0,
                    "audio_s": audio_s,
                    "rtf": total / audio_s if audio_s > 0 else None,
                }
            )
        texts.append({"text": text, "runs": runs})
    answer = header(voice, load_s)
    answer["texts"] = texts
    answer["peak_rss_bytes"] = peak_rss_bytes()
    return answer


def wav(req):
    voice, load_s = load(req)
    samples = 0
    with wave.open(req["out"], "wb") as f:
        f.setframerate(voice.config.sample_rate)
        f.setsampwidth(2)
        f.setnchannels(1)
        for chunk in voice.synthesize(req["text"]):
            f.writeframes(chunk.audio_int16_bytes)
            samples += len(chunk.audio_float_array)
    answer = header(voice, load_s)
    answer.update(
        {"out": req["out"], "samples": samples, "audio_s": samples / voice.config.sample_rate}
    )
    return answer


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
    answer = {"bench": bench, "wav": wav}[req["mode"]](req)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
