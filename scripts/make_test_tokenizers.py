#!/usr/bin/env python3
"""Writes small tokenizer.json files in the styles of the model families selfcond runs, for the
tokenizer tests (real ones cannot be downloaded here). Each is a BPE trained on the same corpus
(the shared concept datasets' sentences plus a few lines of other scripts), written with the
pipeline its family's tokenizer.json uses:

  gpt2        ByteLevel pre-tokenizer (GPT-2's regex), ByteLevel decoder, no BOS
  llama3      Split (Llama 3's regex, Isolated) + ByteLevel(use_regex false), ignore_merges,
              TemplateProcessing adding <|begin_of_text|>, reserved special tokens
  qwen2       NFC normalizer, Split (Qwen2's regex) + ByteLevel, no BOS, <|im_start|> ...
  smollm2     Digits(individual) + ByteLevel(GPT-2's regex), <|endoftext|> = 0
  llama2      SentencePiece-style: Prepend("▁") + Replace(" ", "▁") normalizer, no pre-tokenizer,
              byte_fallback, fuse_unk, <unk>; decoder Replace + ByteFallback + Fuse + Strip;
              TemplateProcessing adding <s> (TinyLlama's file)
  llama2-metaspace  the same model with transformers' newer conversion: Metaspace pre-tokenizer
              (prepend_scheme "first"), no normalizer, Metaspace decoder

  /usr/bin/python3 scripts/make_test_tokenizers.py OUT_DIR [--shared ../shared] [--merges 1500]

Deterministic: the same inputs give the same files.
"""
import argparse
import collections
import functools
import heapq
import json
import os
import re
import unicodedata

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

EXTRA_TEXT = [
    "Привет, как дела? Москва — столица России.",
    "Ελληνικά: η γλώσσα των Ελλήνων.",
    "中文的句子，包括标点符号。我们喜欢足球。",
    "日本語の文章です。サッカーが好きです。",
    "한국어 문장입니다. 축구를 좋아해요.",
    "Café, naïve, façade, résumé, jalapeño, Zürich, São Paulo.",
    "Emoji: 😀 🎉 ⚽ 👍🏽 and symbols © ® ™ € £ ¥.",
    "Numbers 1234567890, 3.14159, 2026-12-06, $1,000,000.",
    "I'll, you're, we've, they'd, she's, it's, I'm, DON'T, WE'RE.",
    "def main():\n    return x + 1  # code\n\n\tindented\r\nwindows line",
] * 20


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


B2U = bytes_to_unicode()


def corpus(shared):
    lines = []
    for name in ("football.json", "woman.json", "man.json"):
        path = os.path.join(shared, "concepts", name)
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        for cls in ("positive", "negative"):
            lines.extend(s.strip() for s in d["sentences"][cls][:400])
    return lines + EXTRA_TEXT


def train(words, n_merges):
    """BPE over a Counter of words (tuples of symbols): the merges, most frequent pair first
    (ties: the smallest pair), with incremental pair counts and a lazily updated heap."""
    vocab_words = [list(w) for w in words]
    freqs = [words[w] for w in words]
    pairs = collections.Counter()
    where = collections.defaultdict(set)
    for i, w in enumerate(vocab_words):
        for a, b in zip(w, w[1:]):
            pairs[(a, b)] += freqs[i]
            where[(a, b)].add(i)
    heap = [(-c, p) for p, c in pairs.items()]
    heapq.heapify(heap)
    merges = []
    while heap and len(merges) < n_merges:
        neg, (a, b) = heapq.heappop(heap)
        if pairs.get((a, b), 0) != -neg:
            continue  # stale entry
        if -neg < 2:
            break
        merges.append((a, b))
        touched = set()
        for i in list(where[(a, b)]):
            w = vocab_words[i]
            f = freqs[i]
            for x, y in zip(w, w[1:]):
                pairs[(x, y)] -= f
                touched.add((x, y))
                where[(x, y)].discard(i)
            out = []
            k = 0
            while k < len(w):
                if k + 1 < len(w) and w[k] == a and w[k + 1] == b:
                    out.append(a + b)
                    k += 2
                else:
                    out.append(w[k])
                    k += 1
            vocab_words[i] = out
            for x, y in zip(out, out[1:]):
                pairs[(x, y)] += f
                touched.add((x, y))
                where[(x, y)].add(i)
        for p in touched:
            if pairs.get(p, 0) <= 0:
                pairs.pop(p, None)
            else:
                heapq.heappush(heap, (-pairs[p], p))
    return merges


def byte_level_words(lines, pattern):
    rx = re.compile(pattern)
    words = collections.Counter()
    for line in lines:
        for piece in rx.findall(line):
            words[tuple(B2U[b] for b in piece.encode("utf-8"))] += 1
    return words


# Python's re has no \p{..}: a close stand-in for training (only the merges' plausibility
# matters here, not this pre-tokenization).
TRAIN_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]+|\s+(?!\S)|\s+"


@functools.lru_cache(maxsize=None)
def byte_level_merges(lines, n_merges):
    return train(byte_level_words(lines, TRAIN_PATTERN), n_merges)


def byte_level_model(lines, n_merges, extra_flags=None):
    merges = byte_level_merges(tuple(lines), n_merges)
    vocab = {}
    for b in range(256):
        vocab[B2U[b]] = len(vocab)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
             "ignore_merges": False, "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]}
    model.update(extra_flags or {})
    return model


def added(content, id_, special=True, lstrip=False, rstrip=False, normalized=None):
    return {"id": id_, "content": content, "single_word": False, "lstrip": lstrip,
            "rstrip": rstrip, "normalized": (not special) if normalized is None else normalized,
            "special": special}


def byte_level_decoder():
    return {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}


def doc(model, added_tokens, normalizer, pre_tokenizer, post_processor, decoder):
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens,
            "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": post_processor,
            "decoder": decoder, "model": model}


def gpt2(lines, n):
    model = byte_level_model(lines, n)
    eot = len(model["vocab"])
    model["vocab"]["<|endoftext|>"] = eot
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return doc(model, [added("<|endoftext|>", eot)], None, bl,
               {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                "use_regex": True}, byte_level_decoder()), [eot]


def llama3(lines, n):
    model = byte_level_model(lines, n, {"ignore_merges": True})
    base = len(model["vocab"])
    names = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
             "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    toks = [added(t, base + i) for i, t in enumerate(names)]
    # A non-special added token that strips the spaces around it (lstrip / rstrip paths).
    toks.append(added("<tool>", base + len(names), special=False, lstrip=True, rstrip=True,
                      normalized=False))
    pre = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated",
         "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    post = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                  {"Sequence": {"id": "A", "type_id": 0}},
                  {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                  {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [base],
                                                  "tokens": ["<|begin_of_text|>"]}}}]}
    return doc(model, toks, None, pre, post, byte_level_decoder()), [base + 1, base + 5]


def qwen2(lines, n):
    model = byte_level_model(lines, n)
    base = len(model["vocab"])
    names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    toks = [added(t, base + i) for i, t in enumerate(names)]
    pre = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated",
         "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
         "use_regex": False}]}
    post = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
            "use_regex": False}
    return doc(model, toks, {"type": "NFC"}, pre, post, byte_level_decoder()), [base, base + 2]


def smollm2(lines, n):
    model = byte_level_model(lines, n)
    # <|endoftext|> and friends take the first ids, the byte tokens follow.
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for t in model["vocab"]:
        vocab[t] = len(vocab)
    model["vocab"] = vocab
    toks = [added(t, i) for i, t in enumerate(specials)]
    pre = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    post = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
            "use_regex": True}
    return doc(model, toks, None, pre, post, byte_level_decoder()), [0, 2]


SPIECE = "\u2581"


def sentencepiece_model(lines, n):
    words = collections.Counter()
    chars = collections.Counter()
    for line in lines:
        for w in line.split(" "):
            if not w:
                continue
            w = SPIECE + w
            words[tuple(w)] += 1
            chars.update(w)
    # Rare characters are left to byte fallback, as SentencePiece's character coverage does.
    keep = sorted(c for c, k in chars.items() if k >= 3)
    words = collections.Counter({tuple(c if c in keep else "\0" for c in w): k
                                 for w, k in words.items()})
    merges = [m for m in train(words, n) if "\0" not in m[0] + m[1]]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for c in keep:
        vocab.setdefault(c, len(vocab))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    model = {"type": "BPE", "dropout": None, "unk_token": "<unk>",
             "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
             "byte_fallback": True, "ignore_merges": False, "vocab": vocab,
             "merges": [[a, b] for a, b in merges]}
    toks = [added("<unk>", 0), added("<s>", 1), added("</s>", 2)]
    post = {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    return model, toks, post


def llama2(lines, n):
    model, toks, post = sentencepiece_model(lines, n)
    norm = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": SPIECE},
        {"type": "Replace", "pattern": {"String": " "}, "content": SPIECE}]}
    dec = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": SPIECE}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    return doc(model, toks, norm, None, post, dec), [2]


def llama2_metaspace(lines, n):
    model, toks, post = sentencepiece_model(lines, n)
    pre = {"type": "Metaspace", "replacement": SPIECE, "prepend_scheme": "first", "split": False}
    dec = {"type": "Metaspace", "replacement": SPIECE, "prepend_scheme": "first", "split": False}
    return doc(model, toks, None, pre, post, dec), [2]


STYLES = {"gpt2": gpt2, "llama3": llama3, "qwen2": qwen2, "smollm2": smollm2, "llama2": llama2,
          "llama2-metaspace": llama2_metaspace}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                     "shared"))
    ap.add_argument("--merges", type=int, default=1500)
    ap.add_argument("--styles", default=",".join(STYLES))
    args = ap.parse_args()
    lines = corpus(args.shared)
    os.makedirs(args.out_dir, exist_ok=True)
    for style in args.styles.split(","):
        d, eos = STYLES[style](lines, args.merges)
        with open(os.path.join(args.out_dir, f"{style}.tokenizer.json"), "w",
                  encoding="utf-8") as f:
            json.dump(d, f, ensure_ascii=False, indent=1)
        with open(os.path.join(args.out_dir, f"{style}.eos.json"), "w") as f:
            json.dump(eos, f)
        n_vocab = max(max(d["model"]["vocab"].values()), max(t["id"] for t in d["added_tokens"])) + 1
        print(f"  {style}: {n_vocab} tokens, {len(d['model']['merges'])} merges")


if __name__ == "__main__":
    main()
