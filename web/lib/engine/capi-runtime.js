// The C API from JavaScript: calls into the WebAssembly module (the C API and nothing else,
// wasm/CMakeLists.txt) through the signatures and wasm32 layouts that scripts/gen_bindings.py
// read from include/selfcond/selfcond.h (capi.js, generated). No C function is wrapped by hand:
//   - a params struct is filled from a JS object: its C defaults first (the header's
//     selfcond_X_default_params), then the object's fields by their camelCase names; enums by
//     their lower-case names ('int8', 'on_p50'); a `const T* x; size_t n_x` pair from one array;
//     a flag (an int documented "1: ...") from a boolean. An unknown field is a TypeError that
//     lists the known ones: a typo never silently falls back to a default.
//   - an info struct is read back into an object the same way;
//   - a call returning selfcond_status throws a CApiError (code: 'invalid_argument', ...;
//     message: selfcond_last_error()) unless it succeeded.
// Checking values (ranges, consistency) is the library's job: it reports what is wrong.
import { ENUMS, STRUCTS, FUNCTIONS, VERSION } from './capi.js';

export class CApiError extends Error {
  constructor(fn, code, message) {
    super(message || code);
    this.name = 'CApiError';
    this.fn = fn;
    this.code = code;
  }
}

const ENUM_NAMES = Object.fromEntries(Object.entries(ENUMS).map(([e, m]) =>
  [e, Object.fromEntries(Object.entries(m).map(([k, v]) => [v, k]))]));

// The element type of an array field, from its C type.
const ELEMENT = {
  'const int64_t*': ['i64', 8], 'const double*': ['f64', 8], 'const int32_t*': ['i32', 4],
  'const float*': ['f32', 4], 'const char*const*': ['str', 4],
};

function defaultsFunction(struct) {
  const m = /^selfcond_(\w+)_params$/.exec(struct);
  const name = m && `selfcond_${m[1]}_default_params`;
  return name && FUNCTIONS[name] ? name : null;
}

export class CApi {
  /** @param {object} Module an instantiated engine module (createSelfcondModule) */
  constructor(Module) {
    this.M = Module;
    const missing = Object.keys(FUNCTIONS).filter((n) => typeof Module[`_${n}`] !== 'function');
    if (missing.length) {
      throw new Error(`the engine build lacks ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}: ` +
        'it is older than its glue (rebuild with web/update-wasm.sh)');
    }
    this.decoder = new TextDecoder('utf-8', { ignoreBOM: true });  // a leading U+FEFF is text
    this.encoder = new TextEncoder();
    this.version = this.string(this.raw('selfcond_version'));
    const minor = (v) => v.split('.').slice(0, 2).join('.');
    if (minor(this.version) !== minor(VERSION)) {
      throw new Error(`the engine is C API ${this.version}, its glue ${VERSION}: rebuild the engine`);
    }
  }

  get u8() { return this.M.HEAPU8; }
  get dv() { return new DataView(this.M.HEAPU8.buffer); }
  /** Bytes of WebAssembly memory (it only grows: the peak of everything allocated so far). */
  get heapBytes() { return this.M.HEAPU8.length; }

  /** A call as the module exports it: 64-bit integers as BigInt in, Number out. */
  raw(name, ...args) {
    const f = FUNCTIONS[name];
    if (!f) throw new TypeError(`no C API function ${name}`);
    const conv = args.map((a, i) => {
      const [, k, ctype] = f.params[i] ?? [];
      if (k === 'i64' || k === 'u64') return BigInt(a ?? 0);
      if (k === 'enum' && typeof a === 'string') {
        const v = ENUMS[ctype]?.[a];
        if (v === undefined) throw new TypeError(`${name}: unknown ${f.params[i][0]} '${a}' (one of ${Object.keys(ENUMS[ctype] ?? {}).join(', ')})`);
        return v;
      }
      return a ?? 0;
    });
    const r = this.M[`_${name}`](...conv);
    return typeof r === 'bigint' ? Number(r) : r;
  }

  /** A call returning selfcond_status: throws a CApiError unless it is OK. */
  call(name, ...args) {
    const st = this.raw(name, ...args);
    if (st !== 0) {
      const code = ENUM_NAMES.selfcond_status[st] ?? String(st);
      throw new CApiError(name, code, this.string(this.raw('selfcond_last_error')));
    }
  }

  /** Runs fn(arena) and frees every allocation the arena made. */
  scoped(fn) {
    const a = new Arena(this);
    try {
      return fn(a);
    } finally {
      a.free();
    }
  }

  /** The UTF-8 string at ptr: NUL-terminated, or `len` bytes. Copied out first (a
   * TextDecoder refuses views of the threaded build's shared memory). */
  string(ptr, len) {
    if (!ptr) return '';
    const u8 = this.u8;
    const end = len == null ? u8.indexOf(0, ptr) : ptr + len;
    return this.decoder.decode(u8.slice(ptr, end < 0 ? u8.length : end));
  }

  /** A string the library returned for the caller (char** outputs): read, then freed. */
  takeString(ptr) {
    try {
      return this.string(ptr);
    } finally {
      this.raw('selfcond_string_free', ptr);
    }
  }

  /** A struct at ptr as an object (camelCase fields; enums by name; flags as booleans). */
  read(struct, ptr) {
    const s = STRUCTS[struct];
    if (!s) throw new TypeError(`no C struct ${struct}`);
    const dv = this.dv;
    const out = {};
    for (const f of s.fields) {
      if (f.isCount) continue;
      const at = ptr + f.offset;
      let v;
      switch (f.kind) {
        case 'i32': v = dv.getInt32(at, true); break;
        case 'u32': v = dv.getUint32(at, true); break;
        case 'u8': v = dv.getUint8(at); break;
        case 'i64': v = Number(dv.getBigInt64(at, true)); break;
        case 'u64': v = Number(dv.getBigUint64(at, true)); break;
        case 'f32': v = dv.getFloat32(at, true); break;
        case 'f64': v = dv.getFloat64(at, true); break;
        case 'enum': v = ENUM_NAMES[f.enum][dv.getInt32(at, true)] ?? dv.getInt32(at, true); break;
        case 'struct': v = this.read(f.struct, at); break;
        case 'ptr': {
          const p = dv.getUint32(at, true);
          if (f.ctype === 'const char*') {
            const len = f.length ? dv.getUint32(ptr + s.fields.find((x) => x.c === f.length).offset, true) : undefined;
            v = this.string(p, len);
          } else {
            v = p;
          }
          break;
        }
        default: throw new TypeError(`${struct}.${f.c}: unknown kind ${f.kind}`);
      }
      out[f.js] = f.flag ? v !== 0 : v;
    }
    return out;
  }
}

/** Allocations made for one call, freed together (CApi.scoped). */
class Arena {
  constructor(capi) {
    this.c = capi;
    this.ptrs = [];
  }

  free() {
    for (const p of this.ptrs) this.c.M._free(p);
    this.ptrs.length = 0;
  }

  /** n zeroed bytes. */
  alloc(n) {
    const p = this.c.M._malloc(Math.max(1, n));
    if (!p) throw new RangeError(`engine out of memory: could not allocate ${n} bytes`);
    this.ptrs.push(p);
    this.c.u8.fill(0, p, p + Math.max(1, n));
    return p;
  }

  /** A NUL-terminated UTF-8 copy of s (null/undefined: NULL). */
  str(s) {
    if (s == null) return 0;
    if (typeof s !== 'string') throw new TypeError(`expected a string, got ${typeof s}`);
    const b = this.c.encoder.encode(s);
    const p = this.alloc(b.length + 1);
    this.c.u8.set(b, p);
    return p;
  }

  /** An array of strings as `const char* const*`. */
  strs(list, what = 'strings') {
    if (!Array.isArray(list) || list.some((x) => typeof x !== 'string')) {
      throw new TypeError(`${what} must be an array of strings`);
    }
    const ptrs = list.map((s) => this.str(s));
    const p = this.alloc(4 * list.length);
    const dv = this.c.dv;
    ptrs.forEach((q, i) => dv.setUint32(p + 4 * i, q, true));
    return p;
  }

  /** A typed copy of numbers: kind 'i32' | 'f32' | 'i64' | 'f64'. */
  array(kind, values, what = 'values') {
    if (values == null || typeof values.length !== 'number') throw new TypeError(`${what} must be an array of numbers`);
    const size = kind === 'i64' || kind === 'f64' ? 8 : 4;
    const p = this.alloc(size * values.length);
    const dv = this.c.dv;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (typeof v !== 'number' && typeof v !== 'bigint') throw new TypeError(`${what}[${i}] is not a number`);
      const at = p + size * i;
      if (kind === 'i32') dv.setInt32(at, Number(v), true);
      else if (kind === 'f32') dv.setFloat32(at, Number(v), true);
      else if (kind === 'i64') dv.setBigInt64(at, BigInt(Math.trunc(Number(v))), true);
      else dv.setFloat64(at, Number(v), true);
    }
    return p;
  }

  /** A zeroed output slot of n bytes (a handle, a count). */
  out(n = 8) {
    return this.alloc(n);
  }

  u32(p) {
    return this.c.dv.getUint32(p, true);
  }

  /** A params struct: the C defaults, then obj's fields (see the file comment). */
  params(struct, obj = {}) {
    const s = STRUCTS[struct];
    if (!s) throw new TypeError(`no C struct ${struct}`);
    const p = this.alloc(s.size);
    const def = defaultsFunction(struct);
    if (def) this.c.raw(def, p);  // returned through a pointer (wasm32's struct return)
    this.write(struct, p, obj);
    return p;
  }

  /** An array of structs, each from its object (zeroed first: no defaults). */
  structs(struct, list) {
    const s = STRUCTS[struct];
    const p = this.alloc(s.size * Math.max(1, list.length));
    list.forEach((o, i) => this.write(struct, p + i * s.size, o));
    return p;
  }

  write(struct, base, obj) {
    const s = STRUCTS[struct];
    if (obj == null) return;
    if (typeof obj !== 'object') throw new TypeError(`${struct}: options must be an object`);
    const known = s.fields.filter((f) => !f.isCount);
    for (const [key, value] of Object.entries(obj)) {
      if (value === undefined) continue;
      const f = known.find((x) => x.js === key);
      if (!f) {
        throw new TypeError(`unknown option '${key}' (${struct}: ${known.map((x) => x.js).join(', ')})`);
      }
      this.field(struct, s, base, f, value);
    }
  }

  field(struct, s, base, f, value) {
    const dv = () => this.c.dv;  // re-read after each allocation: memory may have grown
    const at = base + f.offset;
    const name = `${struct}.${f.js}`;
    const num = (v) => {
      const n = typeof v === 'boolean' ? Number(v) : v;
      if (typeof n !== 'number' && typeof n !== 'bigint') throw new TypeError(`${name} must be a number`);
      return n;
    };
    if (f.count) {
      const [kind] = ELEMENT[f.ctype] ?? [];
      if (!kind) throw new TypeError(`${name}: arrays of ${f.ctype} are not supported`);
      const list = value === null ? [] : Array.from(value);
      const p = kind === 'str' ? this.strs(list, name) : this.array(kind, list, name);
      dv().setUint32(at, p, true);
      dv().setUint32(base + s.fields.find((x) => x.c === f.count).offset, list.length, true);
      return;
    }
    switch (f.kind) {
      case 'struct': this.write(f.struct, at, value); return;
      case 'enum': {
        const v = typeof value === 'number' ? value : ENUMS[f.enum][value];
        if (v === undefined) throw new TypeError(`${name}: unknown value '${value}' (one of ${Object.keys(ENUMS[f.enum]).join(', ')})`);
        dv().setInt32(at, v, true);
        return;
      }
      case 'ptr':
        if (f.ctype === 'const char*') dv().setUint32(at, this.str(value), true);
        else dv().setUint32(at, num(value), true);
        return;
      case 'i32': {
        const v = Number(num(value));
        if (!Number.isInteger(v)) throw new TypeError(`${name} must be an integer (got ${value})`);
        dv().setInt32(at, v, true);
        return;
      }
      case 'u32': dv().setUint32(at, Number(num(value)), true); return;
      case 'u8': dv().setUint8(at, Number(num(value))); return;
      case 'i64': dv().setBigInt64(at, BigInt(Math.trunc(Number(num(value)))), true); return;
      case 'u64': dv().setBigUint64(at, BigInt.asUintN(64, BigInt(Math.trunc(Number(num(value))))), true); return;
      case 'f32': dv().setFloat32(at, Number(num(value)), true); return;
      case 'f64': dv().setFloat64(at, Number(num(value)), true); return;
      default: throw new TypeError(`${name}: unknown kind ${f.kind}`);
    }
  }
}
