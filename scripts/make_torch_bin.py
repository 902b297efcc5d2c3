#!/usr/bin/env python3
"""Writes PyTorch `pytorch_model.bin` checkpoints from a safetensors checkpoint directory, byte for
byte the way `torch.save(state_dict, f)` writes them, without torch (stdlib + numpy): the fixtures
of tests/torch_checkpoint_test.cc and the seeds of fuzz/torch_checkpoint_fuzz.cc.

  /usr/bin/python3 scripts/make_torch_bin.py SRC_DIR OUT_DIR [options]

SRC_DIR holds model.safetensors (or model.safetensors.index.json and its shards). OUT_DIR gets
pytorch_model.bin (or, with --shards N, pytorch_model-0000i-of-0000N.bin and
pytorch_model.bin.index.json) plus copies of SRC_DIR's *.json / *.txt files other than the
safetensors index, so OUT_DIR is a whole Hugging Face model directory.

The zip format (torch >= 1.6, `_use_new_zipfile_serialization=True`): entries STORED, each one's
data aligned to 64 bytes by an extra field 'FB' of padding in its local header (PyTorch's
inline_container.cc), under one folder named after the file ("pytorch_model/"):
data.pkl, .format_version, .storage_alignment, byteorder, data/<key>..., version,
.data/serialization_id. data.pkl is a protocol 2 pickle made by Python's own pickle.Pickler: the
tensors reduce to `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False,
OrderedDict())` and storages are persistent ids ('storage', torch.<T>Storage, key, 'cpu', numel),
the globals resolving to stand-in objects registered under the torch module names.

Options:
  --dtype f32|f16    store floating tensors in this dtype (default: as in SRC_DIR)
  --shards N         split into N files with an index
  --legacy           the pre-1.6 format (magic, protocol 1001, sys_info, the object, the storage
                     keys, then each storage as int64 element count + raw bytes)
  --transpose-one NAME  store 2-D tensor NAME as the transposed view of a transposed storage
                     (non-contiguous: stride (1, rows))
  --alias NEW=OLD    add tensor NEW sharing OLD's storage (tied weights)
  --malicious [GLOBAL]  write data.pkl = pickle.dumps({'weight': X}) where X reduces to
                     (os.system, ('touch /tmp/pwned',)) (pickle writes 'posix system' on Linux);
                     with GLOBAL (e.g. builtins.eval), that global in its place
  --only N           keep only the first N tensors (sorted by name) - small fixtures
  --protocol N       pickle protocol of data.pkl (torch.save's pickle_protocol; default 2)
  --zip64            ZIP64 sizes and offsets for every entry and a ZIP64 end record

SRC_DIR "tiny" stands for five small built-in tensors (F32, F16, I64, BF16, an empty one): the
fuzz seeds.
"""
import argparse
import collections
import io
import json
import os
import pickle
import shutil
import struct
import sys
import types
import zlib

import numpy as np

# ---- stand-ins for the torch objects pickle refers to by name ------------------------------

_torch = types.ModuleType("torch")
_torch_utils = types.ModuleType("torch._utils")
_torch._utils = _torch_utils


def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
    raise RuntimeError("stand-in")


_rebuild_tensor_v2.__module__ = "torch._utils"
_rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
_torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2

STORAGE_CLASSES = {}
for _name, _dt in [("FloatStorage", "<f4"), ("HalfStorage", "<f2"), ("DoubleStorage", "<f8"),
                   ("LongStorage", "<i8"), ("IntStorage", "<i4"), ("ShortStorage", "<i2"),
                   ("CharStorage", "i1"), ("ByteStorage", "u1"), ("BoolStorage", "?"),
                   ("BFloat16Storage", "<u2")]:
    _cls = type(_name, (), {"__module__": "torch"})
    setattr(_torch, _name, _cls)
    STORAGE_CLASSES[_name] = _cls
sys.modules.setdefault("torch", _torch)
sys.modules.setdefault("torch._utils", _torch_utils)

SAFETENSORS_TO_STORAGE = {"F32": ("FloatStorage", 4), "F16": ("HalfStorage", 2),
                          "BF16": ("BFloat16Storage", 2), "F64": ("DoubleStorage", 8),
                          "I64": ("LongStorage", 8), "I32": ("IntStorage", 4),
                          "I16": ("ShortStorage", 2), "I8": ("CharStorage", 1),
                          "U8": ("ByteStorage", 1), "BOOL": ("BoolStorage", 1)}


class Storage:
    def __init__(self, key, cls_name, data):
        self.key, self.cls_name, self.data = key, cls_name, data  # data: raw bytes
        self.elem = {"FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
                     "DoubleStorage": 8, "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2,
                     "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1}[cls_name]

    def numel(self):
        return len(self.data) // self.elem


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce_ex__(self, protocol):
        # torch/_tensor.py _reduce_ex_internal for a plain CPU tensor.
        return (_rebuild_tensor_v2, (self.storage, self.offset, tuple(self.size),
                                     tuple(self.stride), False, collections.OrderedDict()))


def contiguous_strides(shape):
    strides, s = [], 1
    for d in reversed(shape):
        strides.append(s)
        s *= d
    return tuple(reversed(strides))


def dump_pickle(obj, legacy, protocol=2):
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=protocol)

    def persistent_id(o):
        if isinstance(o, Storage):
            pid = ("storage", STORAGE_CLASSES[o.cls_name], o.key, "cpu", o.numel())
            return pid + (None,) if legacy else pid
        return None

    pickler.persistent_id = persistent_id
    pickler.dump(obj)
    return buf.getvalue()


# ---- zip writer (PyTorchStreamWriter: stored, data aligned to 64 with an 'FB' extra) -------

ALIGN = 64


class ZipWriter:
    def __init__(self, f, zip64=False):
        self.f, self.entries, self.zip64 = f, [], zip64

    def write(self, name, data):
        name_b = name.encode()
        offset = self.f.tell()
        start = offset + 30 + len(name_b) + 4  # where the data would start with an empty FB field
        pad = (ALIGN - start % ALIGN) % ALIGN
        extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
        crc = zlib.crc32(data) & 0xFFFFFFFF
        # version needed 20 (miniz), no flags, method 0, time/date of 1980-01-01.
        self.f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, crc, len(data),
                                 len(data), len(name_b), len(extra)))
        self.f.write(name_b + extra)
        assert self.f.tell() % ALIGN == 0
        self.f.write(data)
        self.entries.append((name_b, crc, len(data), offset))

    def close(self):
        cd_offset = self.f.tell()
        m32 = 0xFFFFFFFF
        for name_b, crc, size, offset in self.entries:
            # --zip64: every size and offset in a ZIP64 extra field, as for archives over 4 GiB.
            extra = struct.pack("<HHQQQ", 1, 24, size, size, offset) if self.zip64 else b""
            s32, o32 = (m32, m32) if self.zip64 else (size, offset)
            self.f.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x032D, 45, 0, 0, 0, 0x21,
                                     crc, s32, s32, len(name_b), len(extra), 0, 0, 0,
                                     0o100644 << 16, o32))
            self.f.write(name_b + extra)
        cd_size = self.f.tell() - cd_offset
        n = len(self.entries)
        if self.zip64:
            z64 = self.f.tell()
            self.f.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 0x032D, 45, 0, 0, n, n,
                                     cd_size, cd_offset))
            self.f.write(struct.pack("<IIQI", 0x07064B50, 0, z64, 1))
            self.f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, m32, m32, 0))
            return
        self.f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, cd_size, cd_offset, 0))


def save_zip(path, state_dict, storages, data_pkl=None, protocol=2, zip64=False):
    top = os.path.splitext(os.path.basename(path))[0]
    if data_pkl is None:
        data_pkl = dump_pickle(state_dict, legacy=False, protocol=protocol)
    with open(path, "wb") as f:
        z = ZipWriter(f, zip64)
        z.write(f"{top}/data.pkl", data_pkl)
        z.write(f"{top}/.format_version", b"1")
        z.write(f"{top}/.storage_alignment", b"64")
        z.write(f"{top}/byteorder", b"little")
        for s in storages:
            z.write(f"{top}/data/{s.key}", s.data)
        z.write(f"{top}/version", b"3\n")
        z.write(f"{top}/.data/serialization_id", b"1234567890123456789012345678901234567890")
        z.close()


def save_legacy(path, state_dict, storages, protocol=2, zip64=False):
    out = io.BytesIO()
    magic = 0x1950A86A20F9469CFC6C
    out.write(pickle.dumps(magic, protocol=2))
    out.write(pickle.dumps(1001, protocol=2))
    sys_info = dict(protocol_version=1001, little_endian=True,
                    type_sizes=dict(short=2, int=4, long=4))
    out.write(pickle.dumps(sys_info, protocol=2))
    out.write(dump_pickle(state_dict, legacy=True, protocol=protocol))
    keys = sorted(s.key for s in storages)
    out.write(pickle.dumps(keys, protocol=2))
    by_key = {s.key: s for s in storages}
    for k in keys:
        s = by_key[k]
        out.write(struct.pack("<q", s.numel()))
        out.write(s.data)
    with open(path, "wb") as f:
        f.write(out.getvalue())


# ---- reading the source checkpoint -------------------------------------------------------------


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        b, e = spec["data_offsets"]
        out[name] = (spec["dtype"], tuple(spec["shape"]), data[b:e])
    return out


def tiny_source():
    """A few small tensors of several dtypes (fuzz seeds)."""
    def t(dtype, shape, a):
        return (dtype, shape, np.asarray(a).tobytes())
    return {
        "a.weight": t("F32", (2, 3), np.arange(6, dtype="<f4") / 4),
        "a.bias": t("F16", (3,), np.array([0.5, -1, 2], "<f2")),
        "b.ids": t("I64", (2,), np.array([7, -3], "<i8")),
        "c.scale": t("BF16", (3, 2), np.array([0x3F80, 0xC000, 0, 0x3F00, 0x4040, 0x3E80], "<u2")),
        "d.empty": t("F32", (0, 4), np.zeros(0, "<f4")),
    }


def read_source(src):
    if src == "tiny":
        return tiny_source()
    index = os.path.join(src, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        tensors = {}
        for fn in files:
            tensors.update(read_safetensors(os.path.join(src, fn)))
        return tensors
    return read_safetensors(os.path.join(src, "model.safetensors"))


def convert_dtype(dtype, raw, want):
    if want is None or dtype not in ("F32", "F16", "BF16"):
        return dtype, raw
    if dtype == "BF16":
        a = (np.frombuffer(raw, "<u2").astype("<u4") << 16).view("<f4")
    else:
        a = np.frombuffer(raw, "<f4" if dtype == "F32" else "<f2")
    target = {"f32": ("F32", "<f4"), "f16": ("F16", "<f2")}[want]
    return target[0], a.astype(target[1]).tobytes()


def build_state(names, tensors, args, key_base, ordered):
    """Tensors (and their storages, in key order) for one file."""
    state = collections.OrderedDict() if ordered else {}
    storages = []
    by_name = {}
    for i, name in enumerate(names):
        dtype, shape, raw = tensors[name]
        dtype, raw = convert_dtype(dtype, raw, args.dtype)
        cls_name, elem = SAFETENSORS_TO_STORAGE[dtype]
        key = str(key_base + i) if not args.legacy else str(140000000000 + 64 * (key_base + i))
        if name == args.transpose_one:
            if len(shape) != 2:
                sys.exit(f"--transpose-one {name}: not a 2-D tensor")
            rows, cols = shape
            a = np.frombuffer(raw, np.dtype(f"V{elem}")).reshape(rows, cols)
            st = Storage(key, cls_name, np.ascontiguousarray(a.T).tobytes())  # (cols, rows)
            t = Tensor(st, 0, shape, (1, rows))
        else:
            st = Storage(key, cls_name, raw)
            t = Tensor(st, 0, shape, contiguous_strides(shape))
        storages.append(st)
        state[name] = t
        by_name[name] = t
    for alias in args.alias or []:
        new, old = alias.split("=", 1)
        if old in by_name:
            o = by_name[old]
            state[new] = Tensor(o.storage, o.offset, o.size, o.stride)
    if ordered:
        # torch's Module.state_dict(): an OrderedDict with a _metadata attribute (BUILD state).
        meta = collections.OrderedDict()
        meta[""] = {"version": 1}
        state._metadata = meta
    return state, storages


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--dtype", choices=["f32", "f16"])
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--legacy", action="store_true")
    ap.add_argument("--transpose-one")
    ap.add_argument("--alias", action="append")
    ap.add_argument("--malicious", nargs="?", const="")
    ap.add_argument("--only", type=int)
    ap.add_argument("--protocol", type=int, default=2, help="pickle protocol (torch: 2)")
    ap.add_argument("--zip64", action="store_true", help="ZIP64 records for every entry")
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    if args.malicious is not None:
        mod, _, name = args.malicious.rpartition(".")

        class Evil:
            def __reduce__(self):
                return (os.system, ("touch /tmp/pwned",))

        data = pickle.dumps({"weight": Evil()}, protocol=2)
        if args.malicious:  # another global in place of os.system
            real = b"c" + os.system.__module__.encode() + b"\nsystem\n"
            data = data.replace(real, b"c" + mod.encode() + b"\n" + name.encode() + b"\n")
        save_zip(os.path.join(args.out, "pytorch_model.bin"), None, [], data_pkl=data)
        return

    tensors = read_source(args.src)
    names = sorted(tensors)
    if args.only:
        names = names[:args.only]
    for fn in os.listdir(args.src) if args.src != "tiny" else []:
        if (fn.endswith(".json") or fn.endswith(".txt")) and fn != "model.safetensors.index.json":
            shutil.copyfile(os.path.join(args.src, fn), os.path.join(args.out, fn))
    def save(path, state, storages):
        (save_legacy if args.legacy else save_zip)(path, state, storages,
                                                   protocol=args.protocol, zip64=args.zip64)

    if args.shards <= 1:
        state, storages = build_state(names, tensors, args, 0, ordered=True)
        save(os.path.join(args.out, "pytorch_model.bin"), state, storages)
        return
    n = args.shards
    per = (len(names) + n - 1) // n
    weight_map, total = {}, 0
    for i in range(n):
        part = names[i * per:(i + 1) * per]
        fn = f"pytorch_model-{i + 1:05d}-of-{n:05d}.bin"
        # transformers' save_pretrained saves each shard as a plain dict.
        state, storages = build_state(part, tensors, args, 0, ordered=False)
        save(os.path.join(args.out, fn), state, storages)
        for name in state:
            weight_map[name] = fn
        total += sum(len(s.data) for s in storages)
    with open(os.path.join(args.out, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


if __name__ == "__main__":
    main()
