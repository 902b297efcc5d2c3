#!/usr/bin/env python3
"""The bindings of the C API, generated from its header (include/selfcond/selfcond.h).

The header is selfcond's one boundary; every binding projects it. This script reads the
header's declarations and writes what each binding needs to call it, so that a function or a
params field added to the header reaches Python and JavaScript without hand-written glue:

  python/selfcond/_capi.py   ctypes Structures, callback types and argtypes of every function
  web/lib/engine/capi.js     the WebAssembly (wasm32) layout of every struct, enum values and
                             every function's signature, read by web/lib/engine/capi-runtime.js
  web/lib/capi.d.ts          TypeScript interfaces of the params and info structs, as the
                             JavaScript side names them (camelCase; enums as their lower-case
                             names; an array field with its length as one JS array)
  <dir>/exports.txt          -sEXPORTED_FUNCTIONS of the WASM build (with --wasm-dir): every
                             function but those that open a file by path (the browser has no
                             filesystem: models and tables come as bytes)
  <dir>/layout_check.c       static assertions that the wasm32 layouts computed here are the
                             compiler's (built into the WASM module, with --wasm-dir)

Usage: gen_bindings.py [--check] [--wasm-dir DIR]
  --check     compare with the committed files instead of writing them (exit 1 on a difference:
              the ctest `bindings_up_to_date`)
  --wasm-dir  also write exports.txt and layout_check.c into DIR (the WASM build does)

Conventions the header follows for this script (stated at its top): a params struct
selfcond_X_params has selfcond_X_default_params(); an array field `const T* name` is followed by
`size_t n_name`; an int field whose comment starts with "1:" is a flag (a boolean in JS).
"""
import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
HEADER = ROOT / "include/selfcond/selfcond.h"

# C scalar -> (wasm32 kind, size, ctypes name)
SCALARS = {
    "int": ("i32", 4, "ctypes.c_int"),
    "int32_t": ("i32", 4, "ctypes.c_int32"),
    "int64_t": ("i64", 8, "ctypes.c_int64"),
    "uint64_t": ("u64", 8, "ctypes.c_uint64"),
    "uint8_t": ("u8", 1, "ctypes.c_uint8"),
    "float": ("f32", 4, "ctypes.c_float"),
    "double": ("f64", 8, "ctypes.c_double"),
    "size_t": ("u32", 4, "ctypes.c_size_t"),  # wasm32
    "void": ("void", 0, "None"),
}
# Pointers to these are data arrays: ctypes.c_void_p in Python (numpy .ctypes.data, ctypes
# arrays and pointers all pass).
DATA_POINTEES = {"float", "double", "uint8_t", "void"}


def strip_comments(text):
    return re.sub(r"/\*.*?\*/", " ", text, flags=re.S)


def norm_type(t):
    t = re.sub(r"\s+", " ", t.strip())
    t = re.sub(r"\s*\*\s*", "*", t)
    return t


def unconst(t):
    """The type without its const qualifiers: "const char*const*" -> "char**"."""
    return re.sub(r"\bconst\b\s*", "", t)


class Header:
    def __init__(self, text):
        body = re.sub(r"^\s*#.*$", "", text, flags=re.M)
        body = body.replace('extern "C" {', "").replace("}  // extern \"C\"", "")
        self.enums = {}      # name -> [(member, value)]
        self.structs = {}    # name -> [field dict]
        self.opaque = []     # handle type names
        self.callbacks = {}  # name -> (ret, [(type, name)])
        self.functions = []  # (name, ret, [(type, name)])
        for m in re.finditer(r"typedef enum \{(.*?)\}\s*(\w+);", body, re.S):
            members = re.findall(r"(\w+)\s*=\s*(-?\d+)", strip_comments(m.group(1)))
            self.enums[m.group(2)] = [(a, int(b)) for a, b in members]
        for m in re.finditer(r"typedef struct \{(.*?)\}\s*(\w+);", body, re.S):
            self.structs[m.group(2)] = self._fields(m.group(1), m.group(2))
        self.opaque = re.findall(r"typedef struct (\w+) \1;", body)
        code = strip_comments(body)
        for m in re.finditer(r"typedef (\w+) \(\*(\w+)\)\((.*?)\);", code, re.S):
            self.callbacks[m.group(2)] = (m.group(1), self._params(m.group(3)))
        for m in re.finditer(r"SELFCOND_API\s+([\w\s\*]+?)\s*\b(selfcond_\w+)\((.*?)\);", code,
                             re.S):
            self.functions.append((m.group(2), norm_type(m.group(1)), self._params(m.group(3))))

    @staticmethod
    def _params(text):
        text = text.strip()
        if text in ("", "void"):
            return []
        out = []
        for p in text.split(","):
            p = norm_type(p)
            m = re.match(r"(.*?)(\w+)$", p)
            out.append((norm_type(m.group(1)), m.group(2)))
        return out

    @staticmethod
    def _fields(body, struct):
        fields = []
        # declarations, each with the comment that follows it (on its line or continuing)
        for m in re.finditer(r"([^;{}]*?);[ \t]*(/\*.*?\*/)?", body, re.S):
            decl = strip_comments(m.group(1)).strip()
            if not decl:
                continue
            comment = re.sub(r"\s+", " ", (m.group(2) or "")[2:-2]).strip()
            parts = [p.strip() for p in decl.split(",")]
            first = re.match(r"(.*?)(\w+)$", norm_type(parts[0]))
            ctype = norm_type(first.group(1))
            names = [first.group(2)] + parts[1:]
            for name in names:
                fields.append({"type": ctype, "name": name, "comment": comment})
        return fields


# ---- wasm32 layouts ---------------------------------------------------------------------------


def kind_of(h, ctype):
    """(kind, size, align, detail) of a C type in wasm32."""
    if ctype.endswith("*"):
        return ("ptr", 4, 4, ctype)
    base = unconst(ctype)
    if base in h.enums:
        return ("enum", 4, 4, base)
    if base in SCALARS:
        k, size, _ = SCALARS[base]
        return (k, size, size, base)
    if base in h.structs:
        layout = struct_layout(h, base)
        return ("struct", layout["size"], layout["align"], base)
    if base in h.callbacks:
        return ("ptr", 4, 4, base)  # a function pointer (a table index in wasm32)
    raise SystemExit(f"gen_bindings: unknown type '{ctype}'")


_layouts = {}


def struct_layout(h, name):
    if name in _layouts:
        return _layouts[name]
    off, align, out = 0, 1, []
    for f in h.structs[name]:
        kind, size, al, detail = kind_of(h, f["type"])
        off = (off + al - 1) // al * al
        out.append({**f, "kind": kind, "offset": off, "detail": detail})
        off += size
        align = max(align, al)
    size = (off + align - 1) // align * align
    _layouts[name] = {"size": size, "align": align, "fields": out}
    return _layouts[name]


def camel(name):
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def enum_prefix(members):
    names = [m for m, _ in members]
    if len(names) == 1:
        return names[0][: names[0].rfind("_") + 1]
    p = names[0]
    for n in names[1:]:
        while not n.startswith(p):
            p = p[:-1]
    return p[: p.rfind("_") + 1]


def enum_js_names(members):
    pre = enum_prefix(members)
    return {m[len(pre):].lower(): v for m, v in members}


def is_flag(field):
    return field["type"] == "int" and field["comment"].startswith("1:")


def length_pairs(fields):
    """{string field: its length field} for `const char* x; size_t x_len;` pairs."""
    names = {f["name"] for f in fields}
    return {f["name"]: f["name"] + "_len" for f in fields
            if unconst(f["type"]) == "char*" and f["name"] + "_len" in names}


def array_pairs(fields):
    """{pointer field name: count field name} for `const T* x; size_t n_x;` pairs."""
    names = {f["name"] for f in fields}
    return {f["name"]: "n_" + f["name"] for f in fields
            if f["type"].endswith("*") and "n_" + f["name"] in names}


def js_struct_table(h):
    out = {}
    for name in h.structs:
        lay = struct_layout(h, name)
        pairs = array_pairs(h.structs[name])
        lengths = length_pairs(h.structs[name])
        counts = set(pairs.values()) | set(lengths.values())
        fields = []
        for f in lay["fields"]:
            e = {"c": f["name"], "js": camel(f["name"]), "offset": f["offset"], "kind": f["kind"]}
            if f["kind"] == "enum":
                e["enum"] = f["detail"]
            if f["kind"] == "struct":
                e["struct"] = f["detail"]
            if f["kind"] == "ptr":
                e["ctype"] = f["type"]
            if f["name"] in pairs:
                e["count"] = pairs[f["name"]]
            if f["name"] in lengths:
                e["length"] = lengths[f["name"]]
            if f["name"] in counts:
                e["isCount"] = True
            if is_flag(f):
                e["flag"] = True
            fields.append(e)
        out[name] = {"size": lay["size"], "align": lay["align"], "fields": fields}
    return out


def js_kind(h, ctype):
    if ctype.endswith("*"):
        return "ptr"
    base = unconst(ctype)
    if base in h.structs:
        return "struct:" + base
    return kind_of(h, ctype)[0] if base != "void" else "void"


def takes_path(params):
    """A function that opens a file by name or descriptor: not in the WASM module (no
    filesystem there)."""
    return any((pname == "path" and ptype == "const char*") or (pname == "fd" and ptype == "int")
               for ptype, pname in params)


def write_js(h):
    import json

    functions = {}
    for name, ret, params in h.functions:
        if takes_path(params):
            continue
        functions[name] = {
            "ret": js_kind(h, ret),
            "params": [[pname, js_kind(h, ptype), ptype] for ptype, pname in params],
        }
    enums = {name: enum_js_names(m) for name, m in h.enums.items()}
    structs = js_struct_table(h)
    d = lambda x: json.dumps(x, indent=1, sort_keys=False)
    return (
        "// GENERATED by scripts/gen_bindings.py from include/selfcond/selfcond.h: do not edit.\n"
        "// The C API as the WebAssembly module (wasm32) lays it out; capi-runtime.js reads it.\n"
        f"export const VERSION = {json.dumps(header_version(h))};\n"
        f"export const ENUMS = {d(enums)};\n"
        f"export const STRUCTS = {d(structs)};\n"
        f"export const FUNCTIONS = {d(functions)};\n"
    )


def header_version(h):
    text = HEADER.read_text()
    parts = [re.search(rf"#define SELFCOND_VERSION_{p} (\d+)", text).group(1)
             for p in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(parts)


# ---- TypeScript -------------------------------------------------------------------------------


def ts_name(struct):
    return "".join(p[:1].upper() + p[1:] for p in struct[len("selfcond_"):].split("_"))


def ts_type(h, f, pairs):
    t = f["type"]
    base = unconst(t)
    if f["name"] in pairs:
        return "string[]" if base.startswith("char*") else "number[]"
    if t.endswith("char*") and t.count("*") == 1:
        return "string"
    if base in h.enums:
        return " | ".join(f"'{n}'" for n in enum_js_names(h.enums[base]))
    if base in h.structs:
        return ts_name(base) if base.endswith("_params") else "Partial<" + ts_name(base) + ">"
    if t.endswith("*"):
        return "number /* pointer */"
    if is_flag(f):
        return "boolean"
    if base in ("int64_t", "uint64_t"):
        return "number | bigint"
    return "number"


def write_dts(h):
    lines = ["// GENERATED by scripts/gen_bindings.py from include/selfcond/selfcond.h: do not edit.",
             "// The C API's params and info structs as the JavaScript side names them: fields in",
             "// camelCase, enums as their lower-case names, an array with its length as one",
             "// array. A params object may leave out any field: the C default is used.",
             ""]
    for name, members in h.enums.items():
        vals = " | ".join(f"'{n}'" for n in enum_js_names(members))
        lines.append(f"export type {ts_name(name)} = {vals};")
    lines.append("")
    for name, fields in h.structs.items():
        pairs = array_pairs(fields)
        counts = set(pairs.values()) | set(length_pairs(fields).values())
        optional = name.endswith("_params") or name.endswith("_source")
        lines.append(f"export interface {ts_name(name)} {{")
        for f in fields:
            if f["name"] in counts:
                continue
            if f["comment"]:
                lines.append(f"  /** {f['comment']} */")
            q = "?" if optional else ""
            lines.append(f"  {camel(f['name'])}{q}: {ts_type(h, f, pairs)};")
        lines.append("}")
        lines.append("")
    lines.append("/** Every C API function the WebAssembly engine exports (not those that open a file by")
    lines.append(" * path: the browser has no filesystem). */")
    lines.append("export type CApiFunction =")
    for fname, _, params in h.functions:
        if not takes_path(params):
            lines.append(f"  | '{fname}'")
    lines[-1] += ";"
    return "\n".join(lines) + "\n"


# ---- Python -----------------------------------------------------------------------------------


def py_class(struct):
    return ts_name(struct)


def py_type(h, ctype, in_struct=False, callback_arg=False):
    if ctype.endswith("*"):
        base = unconst(ctype)
        pointee = base[:-1]
        if pointee == "char":
            if callback_arg:
                return "ctypes.POINTER(ctypes.c_char)"  # with a length: not NUL-terminated
            # char* (not const) is a string the library returned, given back to be freed
            return "ctypes.c_char_p" if "const" in ctype else "ctypes.c_void_p"
        if pointee == "char*":  # char** (an output string) or const char* const* (strings)
            return "ctypes.POINTER(ctypes.c_char_p)" if "const" in ctype else "_pp"
        if pointee.endswith("*"):  # T** (an output handle)
            return "_pp"
        if pointee in h.opaque:
            return "ctypes.c_void_p"
        if pointee in h.structs:
            return f"ctypes.POINTER({py_class(pointee)})"
        if pointee in DATA_POINTEES:
            return "ctypes.c_void_p"
        if pointee in SCALARS:
            return f"ctypes.POINTER({SCALARS[pointee][2]})"
        raise SystemExit(f"gen_bindings: no ctypes type for '{ctype}'")
    base = unconst(ctype)
    if base in h.enums:
        return "c_enum"
    if base in h.structs:
        return py_class(base)
    if base in h.callbacks:
        return base.upper()[len("SELFCOND_"):]
    return SCALARS[base][2]


def write_py(h):
    out = ['"""GENERATED by scripts/gen_bindings.py from include/selfcond/selfcond.h: do not edit.',
           "",
           "The ctypes declarations of the C API: one Structure per struct, one callback type per",
           'callback typedef, and PROTOTYPES: name -> (restype, argtypes) of every function."""',
           "",
           "import ctypes",
           "",
           f"HEADER_VERSION = ({', '.join(header_version(h).split('.')[:2])})",
           "",
           "c_status = ctypes.c_int",
           "c_enum = ctypes.c_int",
           "_pp = ctypes.POINTER(ctypes.c_void_p)  # an output handle or string",
           ""]
    for name, members in h.enums.items():
        for m, v in members:
            out.append(f"{m} = {v}")
    out.append("")
    # Callback types first: params structs hold some (a load's progress).
    for name, (ret, params) in h.callbacks.items():
        args = ", ".join([py_type(h, ret)] + [py_type(h, t, callback_arg=True) for t, _ in params])
        out.append(f"{name.upper()[len('SELFCOND_'):]} = ctypes.CFUNCTYPE({args})")
    out.append("")
    for name, fields in h.structs.items():
        out.append("")
        out.append(f"class {py_class(name)}(ctypes.Structure):")
        out.append("    _fields_ = [")
        for f in fields:
            out.append(f"        (\"{f['name']}\", {py_type(h, f['type'], in_struct=True)}),")
        out.append("    ]")
        out.append("")
    out.append("")
    out.append("PROTOTYPES = {")
    for name, ret, params in h.functions:
        if ret == "const char*" and any(t == "size_t*" for t, _ in params):
            restype = "ctypes.c_void_p"  # bytes with a length: read with ctypes.string_at
        elif ret == "selfcond_status":
            restype = "c_status"
        else:
            restype = py_type(h, ret)
        args = ", ".join(py_type(h, t) for t, _ in params)
        out.append(f"    \"{name}\": ({restype}, [{args}]),")
    out.append("}")
    return "\n".join(out) + "\n"


# ---- WASM build inputs ------------------------------------------------------------------------


def write_exports(h, extra):
    import json
    names = ["_" + n for n, _, p in h.functions if not takes_path(p)]
    names += ["_malloc", "_free"] + ["_" + e for e in extra]
    return json.dumps(names) + "\n"


def write_layout_check(h):
    lines = ["/* GENERATED by scripts/gen_bindings.py: the wasm32 layouts capi.js assumes. */",
             "#include <stddef.h>", '#include "selfcond/selfcond.h"', ""]
    for name in h.structs:
        lay = struct_layout(h, name)
        lines.append(f'_Static_assert(sizeof({name}) == {lay["size"]}, "{name} size");')
        for f in lay["fields"]:
            lines.append(f'_Static_assert(offsetof({name}, {f["name"]}) == {f["offset"]}, '
                         f'"{name}.{f["name"]}");')
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--wasm-dir")
    ap.add_argument("--extra-export", action="append", default=[],
                    help="another C function the WASM module exports (its test hooks)")
    args = ap.parse_args()
    h = Header(HEADER.read_text())
    if not h.functions or not h.structs:
        raise SystemExit("gen_bindings: parsed no functions or structs from the header")
    outputs = {
        ROOT / "python/selfcond/_capi.py": write_py(h),
        ROOT / "web/lib/engine/capi.js": write_js(h),
        ROOT / "web/lib/capi.d.ts": write_dts(h),
    }
    if args.wasm_dir:
        d = pathlib.Path(args.wasm_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / "exports.txt").write_text(write_exports(h, args.extra_export))
        (d / "layout_check.c").write_text(write_layout_check(h))
    stale = []
    for path, text in outputs.items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        elif not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("out of date with include/selfcond/selfcond.h (run scripts/gen_bindings.py): " +
              ", ".join(stale))
        return 1
    print(f"bindings: {len(h.functions)} functions, {len(h.structs)} structs, "
          f"{len(h.enums)} enums")
    return 0


if __name__ == "__main__":
    sys.exit(main())
