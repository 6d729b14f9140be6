#!/usr/bin/env python3
"""Greedy tokens of `moe run` against llama.cpp's llama-simple on the same GGUF file (a manual check, not
a ctest: llama.cpp is not part of the build).

Usage: llama_cpp_greedy.py MOE LLAMA_SIMPLE MODEL.gguf N "PROMPT"
Runs `MOE run -m MODEL -p PROMPT -n N --temp 0 --ignore-eos --json` and `LLAMA_SIMPLE -m MODEL -n N PROMPT`
(greedy), turns moe's generated token ids into bytes with the file's vocabulary (tokenizer.ggml.tokens:
byte-level BPE through the GPT-2 byte-to-unicode map, or SentencePiece (tokenizer.ggml.model "llama")
with U+2581 as the space and <0xHH> byte tokens) and compares them with the bytes llama-simple printed
after the prompt (which it may print after "<s> "): bytes, not text, because single tokens may be
partial UTF-8 sequences.
Prints whether they are equal and, if not, the first generated token whose bytes differ.
Exit status: 0 equal, 1 different.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import forward  # noqa: E402  (its GGUF parser)


def byte_decoder():
    """GPT-2's map from the printable characters of byte-level BPE tokens back to bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def main():
    moe, llama, model, n, prompt = sys.argv[1:6]
    d = json.loads(subprocess.run([moe, "run", "-m", model, "-p", prompt, "-n", n, "--temp", "0", "--ignore-eos",
                                   "--json"], capture_output=True, check=True).stdout)
    out = subprocess.run([llama, "-m", model, "-n", n, prompt], capture_output=True, check=True, timeout=600).stdout
    kv = forward.Gguf(model).kv
    vocab = kv["tokenizer.ggml.tokens"]
    spm = kv.get("tokenizer.ggml.model") == "llama"
    dec = byte_decoder()

    def piece(s):
        if spm:
            if len(s) == 6 and s.startswith("<0x") and s.endswith(">"):
                return bytes([int(s[3:5], 16)])
            return s.replace("\u2581", " ").encode()
        return bytes(dec[ch] for ch in s)

    def detok(ids):
        return b"".join(piece(vocab[i]) for i in ids)

    got = detok(d["generated_tokens"])
    p = prompt.encode()
    at = out.find(p)
    want = (out[at + len(p):] if at >= 0 else out).rstrip(b"\n")
    print(f"{model}: prompt tokens {d['prompt_tokens']}")
    print(f"  moe generated {len(d['generated_tokens'])}: {d['generated_tokens']}")
    if want == got:
        print("  llama-simple: identical")
        return 0
    pre = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
    acc = 0
    for j, t in enumerate(d["generated_tokens"]):
        acc += len(detok([t]))
        if acc > pre:
            print(f"  llama-simple: DIFFERENT from generated token {j} on ({pre} of {len(got)} bytes equal)")
            break
    else:
        print(f"  llama-simple: DIFFERENT (lengths {len(want)} / {len(got)} bytes)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
