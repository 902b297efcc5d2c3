#!/usr/bin/env python3
"""Random-init Hugging Face checkpoints of the Llama family, the same weights as GGUF F32 files for
llama.cpp, and the token prompts to run: the inputs of the Llama-family correctness tests
(tests/llama_reference.sh runs llama.cpp on them; tests/llama_test.cc compares selfcond).

  /usr/bin/python3 scripts/make_llama_checkpoints.py OUT_DIR --tokenizers TOK_DIR

TOK_DIR holds the test tokenizers (scripts/make_test_tokenizers.py). Each variant covers some of:
grouped-query attention, tied and untied heads, q/k/v, o and MLP biases, llama3 and linear rope
scaling, head_dim different from hidden_size / heads, a padded embedding (Qwen2), BF16 / F16 /
F32 safetensors. Weights are scaled so that the logits are peaked (clear greedy choices).

Per variant V: OUT_DIR/V/ (config.json, generation_config.json, tokenizer.json,
model.safetensors), OUT_DIR/V.gguf, OUT_DIR/V.prompts.json ({"prompts": [[ids...], ...],
"n_gen": N}). The GGUF is written the way llama.cpp's convert_hf_to_gguf.py writes these
families: arch "llama" (q/k rows permuted for llama.cpp's adjacent-pair RoPE, llama3 scaling as
rope_freqs) or "qwen2" (rotate-half RoPE, no permutation).
"""
import argparse
import json
import math
import os
import shutil
import struct

import numpy as np

VARIANTS = [
    # name, model_type, tokenizer style, dims, options
    dict(name="llama3", model_type="llama", tok="llama3", hidden=256, layers=3, heads=8, kv=2,
         head_dim=None, ff=512, tied=True, theta=500000.0,
         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
         dtype="bf16"),
    dict(name="llama-bias", model_type="llama", tok="llama2", hidden=192, layers=2, heads=4, kv=4,
         head_dim=64, ff=384, tied=False, theta=10000.0, attention_bias=True, mlp_bias=True,
         dtype="f32"),
    dict(name="qwen2", model_type="qwen2", tok="qwen2", hidden=192, layers=3, heads=6, kv=2,
         head_dim=None, ff=448, tied=True, theta=1000000.0, vocab_pad=40, dtype="f16"),
    dict(name="mistral", model_type="mistral", tok="llama2-metaspace", hidden=128, layers=2,
         heads=8, kv=2, head_dim=None, ff=256, tied=False, theta=10000.0,
         rope_scaling={"type": "linear", "factor": 2.0}, dtype="f32"),
    dict(name="smollm2", model_type="llama", tok="smollm2", hidden=144, layers=3, heads=9, kv=3,
         head_dim=None, ff=384, tied=True, theta=100000.0, dtype="f32"),
]

# Random models with the shapes of the small models devices ship (vocabulary padded to the real
# size), for the speed comparison with llama.cpp (scripts/bench_llama_peers.sh): --bench-shapes.
BENCH_SHAPES = [
    dict(name="smollm2-135m-shaped", model_type="llama", tok="smollm2", hidden=576, layers=30,
         heads=9, kv=3, head_dim=None, ff=1536, tied=True, theta=100000.0, vocab=49152,
         ctx=2048, dtype="bf16"),
    dict(name="qwen2.5-0.5b-shaped", model_type="qwen2", tok="qwen2", hidden=896, layers=24,
         heads=14, kv=2, head_dim=None, ff=4864, tied=True, theta=1000000.0, vocab=151936,
         ctx=2048, dtype="bf16"),
    dict(name="llama3.2-1b-shaped", model_type="llama", tok="llama3", hidden=2048, layers=16,
         heads=32, kv=8, head_dim=64, ff=8192, tied=True, theta=500000.0, vocab=128256,
         rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
         ctx=2048, dtype="bf16"),
]

ARCH_CLASS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
              "mistral": "MistralForCausalLM"}


# ---- safetensors -----------------------------------------------------------------------------

def to_bf16_bits(a):
    u = a.astype(np.float32).view(np.uint32)
    # round to nearest even
    r = ((u >> 16) & 1) + 0x7FFF
    return ((u + r) >> 16).astype(np.uint16)


def bf16_bits_to_f32(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def write_safetensors(path, tensors, dtype):
    """tensors: name -> float32 array; stored as dtype; returns the float32 values as stored.
    Streams one tensor at a time (the 1B-shaped benchmark model is 5 GB as float32)."""
    st, size = {"bf16": ("BF16", 2), "f16": ("F16", 2)}.get(dtype, ("F32", 4))
    header, offset = {}, 0
    for name in sorted(tensors):
        n = int(np.prod(tensors[name].shape)) * size
        header[name] = {"dtype": st, "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    stored = {}
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name in sorted(tensors):
            a = tensors[name].astype(np.float32)
            if dtype == "bf16":
                bits = to_bf16_bits(a)
                f.write(bits.tobytes())
                stored[name] = bf16_bits_to_f32(bits)
            elif dtype == "f16":
                hh = a.astype(np.float16)
                f.write(hh.tobytes())
                stored[name] = hh.astype(np.float32)
            else:
                f.write(a.tobytes())
                stored[name] = a
            tensors[name] = None  # keep one copy of the weights in memory
    return stored


# ---- GGUF ------------------------------------------------------------------------------------

T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR = 4, 5, 6, 7, 8, 9


def gguf_str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def gguf_kv(key, vtype, value):
    out = gguf_str(key) + struct.pack("<I", vtype)
    if vtype == T_U32:
        return out + struct.pack("<I", value)
    if vtype == T_F32:
        return out + struct.pack("<f", value)
    if vtype == T_BOOL:
        return out + struct.pack("<B", 1 if value else 0)
    if vtype == T_STR:
        return out + gguf_str(value)
    if vtype == T_ARR:
        etype, items = value
        out += struct.pack("<IQ", etype, len(items))
        if etype == T_STR:
            return out + b"".join(gguf_str(x) for x in items)
        if etype == T_I32:
            return out + struct.pack(f"<{len(items)}i", *items)
        if etype == T_F32:
            return out + struct.pack(f"<{len(items)}f", *items)
    raise ValueError(key)


def q8_0_blocks(a):
    """ggml's quantize_row_q8_0_ref: blocks of 32 along a row, d = max|x| / 127 stored as
    float16, q = round-half-away(x / d); 34 bytes per block."""
    x = a.reshape(-1, 32)
    d = np.abs(x).max(axis=1) / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    y = x * inv[:, None]
    q = (np.sign(y) * np.floor(np.abs(y) + 0.5)).astype(np.int8)
    out = np.empty((x.shape[0], 34), dtype=np.uint8)
    out[:, :2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q.view(np.uint8)
    return out.tobytes()


def write_gguf(path, kvs, tensors, qtype="f32"):
    """kvs: list of (key, type, value); tensors: list of (name, float32 array). qtype "q8_0"
    stores 2-D weights as Q8_0 (as convert_hf_to_gguf.py --outtype q8_0 does; norms and
    rope_freqs stay F32)."""
    align = 32
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    head += b"".join(gguf_kv(*kv) for kv in kvs)
    infos, offset, plan = b"", 0, []
    for name, a in tensors:
        dims = list(reversed(a.shape))  # ggml: ne[0] is the fastest-varying dimension
        q8 = qtype == "q8_0" and a.ndim == 2 and dims[0] % 32 == 0
        nbytes = a.size // 32 * 34 if q8 else a.size * 4
        infos += gguf_str(name) + struct.pack("<I", len(dims))
        infos += b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", 8 if q8 else 0, offset)  # type 8 = Q8_0, 0 = F32
        pad = (align - nbytes % align) % align
        plan.append((a, q8, pad))
        offset += nbytes + pad
    body = head + infos
    body += b"\0" * ((align - len(body) % align) % align)
    with open(path, "wb") as f:
        f.write(body)
        for a, q8, pad in plan:
            a = np.ascontiguousarray(a, dtype=np.float32)
            f.write(q8_0_blocks(a) if q8 else a.tobytes())
            f.write(b"\0" * pad)


def utf8_safe_vocab(id_to_tok, merges, specials):
    """For the benchmark GGUFs: random weights generate arbitrary tokens, and a lone byte token
    (0x80..0xFF) makes invalid UTF-8, on which wllama's JSON output fails. Tokens whose bytes are
    not valid UTF-8 on their own get an ASCII name (<bNNN>), and merges that could reach them are
    dropped (an ASCII prompt tokenizes the same). The weights, hence the speed, are unchanged."""
    chars = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cps, n = chars[:], 0
    for b in range(256):
        if b not in chars:
            chars.append(b)
            cps.append(256 + n)
            n += 1
    byte_of = {chr(c): b for b, c in zip(chars, cps)}

    def utf8(tok):
        try:
            bytes(byte_of[c] for c in tok).decode("utf-8")
            return True
        except (KeyError, UnicodeDecodeError):
            return False

    def ascii_piece(tok):
        return all(c in byte_of and byte_of[c] < 0x80 for c in tok)

    out = [t if i in specials or t.startswith("<pad_") or utf8(t) else f"<b{i}>"
           for i, t in enumerate(id_to_tok)]
    kept = [m for m in merges if all(ascii_piece(x) for x in m.split(" "))]
    return out, kept


def permute_rows(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute: rotate-half rows -> adjacent pairs."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama3_rope_factors(head_dim, theta, rs):
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / lo, old / hi
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - lo) / (hi - lo)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


# ---- one variant -----------------------------------------------------------------------------

def make_variant(v, tok_dir, out_dir, rng, gguf_type="f32"):
    name = v["name"]
    tok = json.load(open(os.path.join(tok_dir, f"{v['tok']}.tokenizer.json"), encoding="utf-8"))
    eos = json.load(open(os.path.join(tok_dir, f"{v['tok']}.eos.json")))
    n_tok = max(max(tok["model"]["vocab"].values()), max(t["id"] for t in tok["added_tokens"])) + 1
    V = v.get("vocab") or n_tok + v.get("vocab_pad", 0)
    ctx = v.get("ctx", 512)
    d, L, H, KV, F = v["hidden"], v["layers"], v["heads"], v["kv"], v["ff"]
    hd = v["head_dim"] or d // H
    qd, kvd = H * hd, KV * hd
    bias_qkv = v["model_type"] == "qwen2" or v.get("attention_bias", False)
    bias_o = v.get("attention_bias", False)
    bias_mlp = v.get("mlp_bias", False)

    def mat(n, k, gain=1.0):
        return (rng.standard_normal((n, k)) * gain / math.sqrt(k)).astype(np.float32)

    def vec(n, scale=0.1):
        return (rng.standard_normal(n) * scale).astype(np.float32)

    t = {}
    # Embedding rows of std 0.5: with RMSNorm before the (tied) head, logits have std
    # ~0.5 sqrt(d), a peaked distribution. The final norm's weights have random signs
    # (magnitudes ~1, so no outlier channels): with all of them near +1 a tied head would score
    # the input token itself highest (its embedding dominates the residual stream) and the model
    # would only repeat it.
    t["model.embed_tokens.weight"] = (rng.standard_normal((V, d)) * 0.5).astype(np.float32)
    if not v["tied"]:
        t["lm_head.weight"] = (rng.standard_normal((V, d)) * 0.5).astype(np.float32)
    t["model.norm.weight"] = (rng.choice([-1.0, 1.0], d) * (1 + vec(d))).astype(np.float32)
    for i in range(L):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = 1 + vec(d)
        t[p + "post_attention_layernorm.weight"] = 1 + vec(d)
        t[p + "self_attn.q_proj.weight"] = mat(qd, d)
        t[p + "self_attn.k_proj.weight"] = mat(kvd, d)
        t[p + "self_attn.v_proj.weight"] = mat(kvd, d)
        t[p + "self_attn.o_proj.weight"] = mat(d, qd)
        t[p + "mlp.gate_proj.weight"] = mat(F, d)
        t[p + "mlp.up_proj.weight"] = mat(F, d)
        t[p + "mlp.down_proj.weight"] = mat(d, F)
        if bias_qkv:
            for x, n in (("q", qd), ("k", kvd), ("v", kvd)):
                t[p + f"self_attn.{x}_proj.bias"] = vec(n)
        if bias_o:
            t[p + "self_attn.o_proj.bias"] = vec(d)
        if bias_mlp:
            for x, n in (("gate", F), ("up", F), ("down", d)):
                t[p + f"mlp.{x}_proj.bias"] = vec(n)

    ckpt = os.path.join(out_dir, name)
    os.makedirs(ckpt, exist_ok=True)
    stored = write_safetensors(os.path.join(ckpt, "model.safetensors"), t, v["dtype"])
    config = {
        "architectures": [ARCH_CLASS[v["model_type"]]], "model_type": v["model_type"],
        "hidden_size": d, "intermediate_size": F, "num_hidden_layers": L,
        "num_attention_heads": H, "num_key_value_heads": KV, "hidden_act": "silu",
        "max_position_embeddings": ctx, "rms_norm_eps": 1e-5, "rope_theta": v["theta"],
        "tie_word_embeddings": v["tied"], "vocab_size": V, "torch_dtype": "float32",
        "bos_token_id": None, "eos_token_id": eos if len(eos) > 1 else eos[0],
    }
    if v["head_dim"]:
        config["head_dim"] = hd
    if "rope_scaling" in v:
        config["rope_scaling"] = v["rope_scaling"]
    if v["model_type"] == "llama":
        config["attention_bias"] = bias_o
        config["mlp_bias"] = bias_mlp
    if v["model_type"] == "mistral":
        config["sliding_window"] = None
    if v["model_type"] == "qwen2":
        config["use_sliding_window"] = False
        config["sliding_window"] = 4096
    with open(os.path.join(ckpt, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    with open(os.path.join(ckpt, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": eos}, f)
    shutil.copy(os.path.join(tok_dir, f"{v['tok']}.tokenizer.json"),
                os.path.join(ckpt, "tokenizer.json"))

    # ---- the same weights for llama.cpp ----
    arch = "qwen2" if v["model_type"] == "qwen2" else "llama"
    kvs = [("general.architecture", T_STR, arch), ("general.name", T_STR, name),
           ("general.file_type", T_U32, 7 if gguf_type == "q8_0" else 0),
           (f"{arch}.block_count", T_U32, L), (f"{arch}.context_length", T_U32, ctx),
           (f"{arch}.embedding_length", T_U32, d), (f"{arch}.feed_forward_length", T_U32, F),
           (f"{arch}.attention.head_count", T_U32, H),
           (f"{arch}.attention.head_count_kv", T_U32, KV),
           (f"{arch}.attention.key_length", T_U32, hd),
           (f"{arch}.attention.value_length", T_U32, hd),
           (f"{arch}.rope.dimension_count", T_U32, hd),
           (f"{arch}.attention.layer_norm_rms_epsilon", T_F32, 1e-5),
           (f"{arch}.rope.freq_base", T_F32, v["theta"]), (f"{arch}.vocab_size", T_U32, V)]
    rs = v.get("rope_scaling")
    if rs and rs.get("type", rs.get("rope_type")) == "linear":
        kvs += [(f"{arch}.rope.scaling.type", T_STR, "linear"),
                (f"{arch}.rope.scaling.factor", T_F32, rs["factor"])]
    # The vocabulary (llama.cpp needs one; the test feeds token ids).
    id_to_tok = [f"<pad_{i}>" for i in range(V)]
    for s, i in tok["model"]["vocab"].items():
        id_to_tok[i] = s
    specials = {a["id"] for a in tok["added_tokens"] if a.get("special")}
    for a in tok["added_tokens"]:
        id_to_tok[a["id"]] = a["content"]
    spm = tok["model"].get("byte_fallback", False)
    types = [3 if i in specials or i >= n_tok else 1 for i in range(V)]
    if spm:
        for i, s in enumerate(id_to_tok):
            if len(s) == 6 and s.startswith("<0x") and s.endswith(">"):
                types[i] = 6
        kvs += [("tokenizer.ggml.model", T_STR, "llama"),
                ("tokenizer.ggml.tokens", T_ARR, (T_STR, id_to_tok)),
                ("tokenizer.ggml.scores", T_ARR, (T_F32, [-float(i) for i in range(V)])),
                ("tokenizer.ggml.token_type", T_ARR, (T_I32, types))]
    else:
        merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
        if gguf_type == "q8_0":
            id_to_tok, merges = utf8_safe_vocab(id_to_tok, merges, specials)
        kvs += [("tokenizer.ggml.model", T_STR, "gpt2"), ("tokenizer.ggml.pre", T_STR, "default"),
                ("tokenizer.ggml.tokens", T_ARR, (T_STR, id_to_tok)),
                ("tokenizer.ggml.token_type", T_ARR, (T_I32, types)),
                ("tokenizer.ggml.merges", T_ARR, (T_STR, merges))]
    kvs += [("tokenizer.ggml.eos_token_id", T_U32, eos[0]),
            ("tokenizer.ggml.add_bos_token", T_BOOL, False),
            ("tokenizer.ggml.add_eos_token", T_BOOL, False)]
    g = []
    g.append(("token_embd.weight", stored["model.embed_tokens.weight"]))
    g.append(("output_norm.weight", stored["model.norm.weight"]))
    if not v["tied"]:
        g.append(("output.weight", stored["lm_head.weight"]))
    if rs and rs.get("rope_type") == "llama3":
        g.append(("rope_freqs.weight", llama3_rope_factors(hd, v["theta"], rs)))
    perm = arch == "llama"
    for i in range(L):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        g.append((b + "attn_norm.weight", stored[p + "input_layernorm.weight"]))
        g.append((b + "ffn_norm.weight", stored[p + "post_attention_layernorm.weight"]))
        for x, heads in (("q", H), ("k", KV), ("v", None)):
            w = stored[p + f"self_attn.{x}_proj.weight"]
            g.append((b + f"attn_{x}.weight", permute_rows(w, heads) if perm and heads else w))
            if p + f"self_attn.{x}_proj.bias" in stored:
                bb = stored[p + f"self_attn.{x}_proj.bias"]
                g.append((b + f"attn_{x}.bias", permute_rows(bb, heads) if perm and heads else bb))
        g.append((b + "attn_output.weight", stored[p + "self_attn.o_proj.weight"]))
        if p + "self_attn.o_proj.bias" in stored:
            g.append((b + "attn_output.bias", stored[p + "self_attn.o_proj.bias"]))
        for x, gx in (("gate", "ffn_gate"), ("up", "ffn_up"), ("down", "ffn_down")):
            g.append((b + f"{gx}.weight", stored[p + f"mlp.{x}_proj.weight"]))
            if p + f"mlp.{x}_proj.bias" in stored:
                g.append((b + f"{gx}.bias", stored[p + f"mlp.{x}_proj.bias"]))
    write_gguf(os.path.join(out_dir, f"{name}.gguf"), kvs, g, gguf_type)

    # ---- prompts: the template's prefix (BOS) + random ordinary tokens. Random weights make
    # some greedy choices knife-edge (two logits a hair apart: a coin flip for any quantization),
    # so there are 64 candidates and llama.cpp keeps the 4 whose greedy choices have the widest
    # top-2 margins (tests/reference/llama_logits.cc), chosen before selfcond runs. ----
    prefix = []
    post = tok.get("post_processor") or {}
    procs = post.get("processors", [post])
    for pp in procs:
        if pp.get("type") == "TemplateProcessing":
            for item in pp["single"]:
                if "SpecialToken" in item:
                    prefix.append(next(a["id"] for a in tok["added_tokens"]
                                       if a["content"] == item["SpecialToken"]["id"]))
                else:
                    break
    ordinary = [i for i in range(n_tok) if i not in specials]
    prompts = [prefix + [int(x) for x in rng.choice(ordinary, n)] for n in (6, 13, 24, 40) * 16]
    with open(os.path.join(out_dir, f"{name}.prompts.json"), "w") as f:
        json.dump({"prompts": prompts, "n_gen": 10, "keep": 4, "vocab_size": V}, f)
    return V


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--tokenizers", required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--bench-shapes", default="",
                    help="comma-separated names of BENCH_SHAPES ('all'): write those instead of "
                         "the test variants, with Q8_0 GGUF files and a 128-token prompt each")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    if args.bench_shapes:
        names = args.bench_shapes.split(",")
        for v in BENCH_SHAPES:
            if names != ["all"] and v["name"] not in names:
                continue
            V = make_variant(v, args.tokenizers, args.out_dir, rng, "q8_0")
            tok = json.load(open(os.path.join(args.tokenizers, f"{v['tok']}.tokenizer.json"),
                                 encoding="utf-8"))
            specials = {a["id"] for a in tok["added_tokens"]}
            ordinary = [i for i in tok["model"]["vocab"].values() if i not in specials]
            with open(os.path.join(args.out_dir, f"{v['name']}.bench-prompt.json"), "w") as f:
                json.dump([int(x) for x in rng.choice(ordinary, 128)], f)
            print(f"  {v['name']}: {v['model_type']}, vocab {V}, {v['dtype']}, Q8_0 GGUF", flush=True)
        return
    for v in VARIANTS:
        V = make_variant(v, args.tokenizers, args.out_dir, rng)
        print(f"  {v['name']}: {v['model_type']}, vocab {V}, {v['dtype']}")


if __name__ == "__main__":
    main()
