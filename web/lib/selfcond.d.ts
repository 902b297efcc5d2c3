// TypeScript declarations for the npm package selfcond (web/lib/selfcond.js: the browser API).
// The engine's option and info types are the C API's, generated from include/selfcond/selfcond.h
// (capi.d.ts, scripts/gen_bindings.py): this file builds on them, so a field the header adds or
// drops reaches (or breaks) these declarations, which web/tests/types.test.mjs type-checks.
import type {
  ChooseKParams, CompareParams, ForcingValue, GenerateParams, GridParams,
  ModelInfo as EngineModelInfo, Stop,
} from './capi';

export type * from './capi';

export interface RuntimeInfo {
  /** True when the pthreads build runs (the page is cross-origin isolated and threads > 1). */
  threaded: boolean;
  threads: number;
  /** GEMM engine of the int8 path, e.g. "xnnpack". */
  backend: string;
  pthreads: boolean;
  /** The engine's C API version (selfcond_version). */
  engineVersion: string;
}

/** The engine's selfcond_model_info (name, hash, nLayer, ..., arch, nHeadKv, sitesPerLayer, ...)
 * and what the package adds. */
export interface ModelInfo extends RuntimeInfo, EngineModelInfo {
  /** Short names of the linear layers of a block, by kind (sitesPerLayer of them). */
  siteKinds: string[];
  precision: 'int8' | 'f32';
  /** True when the content hash was checked on load (the default; loadModel({verify: false}) skips it). */
  verified: boolean;
  /** Time of the engine's load call (copy into wasm memory, parse, verify, pack), in ms. */
  loadMs: number;
  /** True when the file came from the browser's store (see listCached) instead of the network. */
  fromCache: boolean;
}

export interface LoadProgress {
  /**
   * 'download': bytes arriving; 'cache': the file was read from the browser's store (once, fraction 1);
   * 'load': the engine is copying, verifying and packing the model.
   */
  phase: 'download' | 'cache' | 'load';
  loaded: number;
  /** 0 when the server sent no Content-Length. */
  total: number;
  /** loaded / total, or null when the total is unknown. */
  fraction: number | null;
}

export interface ExpertUnits {
  /** (n) the block of each unit. */
  layer: Int32Array;
  /** (n) the linear layer within the block (ModelInfo.siteKinds names them). */
  kind: Int32Array;
  /** (n) site = layer * sitesPerLayer + kind. */
  site: Int32Array;
  /** (n) output channel within the site. */
  unit: Int32Array;
  /** (n) average precision as a concept detector, sorted descending. */
  ap: Float32Array;
  /** (n) global unit ids (the model's unit numbering, as traceUnit takes them). */
  id: Float64Array;
}

export declare class ExpertTable {
  /** Handle, valid for the SelfCond instance that created it. */
  readonly id: number;
  readonly concept: string;
  readonly group: string;
  readonly numUnits: number;
  readonly totalUnits: number;
  /** Set on ranked tables. */
  readonly sentences?: number;
  readonly truncated?: number;
  readonly rankMs?: number;
  /** Set on tables loaded from a URL: true when the browser's store gave it. */
  readonly fromCache?: boolean;
  /** All units of the table, best first. */
  readonly units: ExpertUnits;
  /** 'json': native selfcond format; 'csv': ml-selfcond expertise.csv. */
  export(format?: 'json' | 'csv'): Promise<string>;
  /** Saves the table through a browser download; resolves to the file name used. */
  download(format?: 'json' | 'csv', filename?: string): Promise<string>;
  /** counts[layer][kind] of the top-k units. */
  siteCounts(k: number): number[][];
}

export interface ExpertSource {
  table: ExpertTable | number;
  /** Number of top units of the table to force (0 = none). */
  k: number;
}

export interface ForcingOptions {
  /** Value the forced units are set to (default 'on_p50', as in the paper). */
  value?: ForcingValue;
  /** Force only at the last position instead of every position. */
  onlyLastToken?: boolean;
}

/** The sampler's options are the engine's selfcond_generate_params (temperature, topK, topP,
 * seed, stopAtEos, stopStrings, repeatPenalty, repeatLastN), with maxNewTokens named maxTokens.
 * keepContext is not offered here: the worker hands each generation a session from its pool
 * (README "For page authors"). */
export interface GenerateOptions extends Omit<GenerateParams, 'maxNewTokens' | 'keepContext'> {
  prompt: string;
  /** Default 50. */
  maxTokens?: number;
  experts?: ExpertSource[];
  forcing?: ForcingOptions;
  /** Adds alpha x vector to the residual stream after block `layer` at every position. */
  steer?: SteerOptions;
  /** Adds bias[i] to the logit of tokens[i] at every step. */
  bias?: LogitBias;
}

export interface SteerOptions {
  /** n_embd numbers, e.g. steeringVector().vector. */
  vector: Float32Array | number[];
  /** The block after which it is added (0..n_layer-1). */
  layer: number;
  /** Strength: the vector is multiplied by alpha (0 = off). */
  alpha: number;
}

export interface LogitBias {
  tokens: number[];
  bias: number[];
}

export interface ConceptWord {
  word: string;
  /** Log-odds of the word in the positive sentences against the negatives. */
  logOdds: number;
  /** Sentences of each class the word occurs in. */
  positive: number;
  negative: number;
}

export interface SteeringVector {
  vector: Float32Array;
  layer: number;
  /** L2 norm of the vector. */
  norm: number;
}

export interface UnitTrace {
  /** Global unit id (the model's unit numbering). */
  unit: number;
  /** The text of each token of the sentence. */
  tokens: string[];
  /** The unit's response at each token. */
  values: number[];
}

export interface ComparePoint {
  method: 'none' | 'experts' | 'steer' | 'bias';
  /** k, alpha or beta (0 for 'none'). */
  strength: number;
  layer: number | null;
  samples: number;
  mentions: number;
  /** Share (0..1) of the continuations that contain one of the concept words. */
  mention_rate: number;
  /** Perplexity of prompt + continuation under the unforced model. */
  ppl: number;
  mean_ppl: number;
  median_ppl: number;
  scorer_ppl: number;
  scorer_mean_ppl: number;
  /** Self-BLEU over the continuations of the point (higher: less diverse). */
  self_bleu: number;
  mean_ap?: number;
  [key: string]: unknown;
}

export interface CompareResult {
  experiment: 'compare';
  concept: string;
  options: Record<string, unknown>;
  concept_words: { word: string; log_odds: number; positive: number; negative: number }[];
  bias_tokens: number;
  steer_norm: number;
  /** 'none' first, then each method's grid. */
  points: ComparePoint[];
  examples: { point: number; prompt: string; text: string; words: string[] }[];
}

/** The engine's selfcond_compare_params, its grid's prompts/seeds/newTokens at the top (with a
 * small grid by default) and steerLayer named layer. */
export interface CompareOptions extends Omit<CompareParams, 'grid' | 'steerLayer'> {
  table: ExpertTable | number;
  positive: string[];
  negative: string[];
  prompts?: GridParams['prompts'];
  /** Seeds per prompt (default 2). */
  seeds?: number;
  /** Tokens per continuation (default 16). */
  newTokens?: number;
  /** Block of the steering vector (default n_layer / 2). */
  layer?: number;
}

/** The engine's selfcond_choose_k_params, its grid's prompts/seeds/newTokens at the top. */
export interface ChooseKOptions extends Omit<ChooseKParams, 'grid'> {
  table: ExpertTable | number;
  /** The concept's sentences: their log-odds words mark a mention (none: its name does). */
  positive?: string[];
  negative?: string[];
  prompts?: GridParams['prompts'];
  seeds?: number;
  newTokens?: number;
}

export interface ChooseKReport {
  k: number;
  met: boolean;
  reason: string;
  words: string[];
  tried: (ComparePoint & { k: number })[];
  options: Record<string, unknown>;
}

export interface TokenEvent {
  /** Complete UTF-8 text for this step (may be "" while a character is incomplete). */
  text: string;
  /** Token id, or -1 for a final flush. */
  token: number;
  /** Tokens produced so far. */
  index: number;
}

export interface GenerateResult {
  /** 'stop_string' when the text reached one of stopStrings (the text ends before it). */
  stop: Stop;
  tokens: number;
  /** Units the forcing overwrote (a k beyond its table counts the table's size). */
  forcedUnits: number;
  promptTokens?: number;
  ms: number;
  tokensPerSecond?: number;
}

export interface Generation {
  id: number;
  /** Stops after the current token; done then resolves with stop = 'cancelled'. */
  cancel(): void;
  /** Rejects with the engine's error (e.g. "prompt is 400 tokens; the context is 256 (at most 255 prompt tokens)"). */
  done: Promise<GenerateResult>;
}

export interface RankOptions {
  positive: string[];
  negative: string[];
  concept?: string;
  /** Keep only the best N units (0 = all). */
  topN?: number;
  onProgress?: (p: { done: number; total: number }) => void;
  signal?: AbortSignal;
}

export interface BenchResult {
  promptTokens: number;
  prefillMs: number;
  /** Prefill plus the first step (which samples the first token): the engine's time to first token. */
  firstTokenMs: number;
  decodeTokens: number;
  decodeMs: number;
}

export interface BenchRankResult {
  sentences: number;
  startMs: number;
  stepMs: number;
  finishMs: number;
  totalMs: number;
}

export interface MemoryInfo {
  /** Size of the WebAssembly memory. It never shrinks, so this is the peak so far. */
  wasmBytes: number;
  /** The model file, copied into wasm memory once (0 before a model is loaded). */
  fileBytes: number;
  packedBytes: number;
  /** KV caches of all sessions (one per concurrent generation, kept for reuse). */
  kvCacheBytes: number;
  sessions: number;
  /** Generations running now. */
  generating: number;
  ranking: boolean;
}

export interface LoadModelOptions {
  onProgress?: (p: LoadProgress) => void;
  /**
   * Cancels the download or the load in the engine; the promise then rejects with a
   * DOMException named 'AbortError'. A cancel before the bytes reach the engine keeps the model
   * loaded before; a later one unloads it. The engine stays usable either way.
   */
  signal?: AbortSignal;
  /** Check the file's SHA-256 content hash (default true). */
  verify?: boolean;
  /** Origins besides the page's own that a URL may come from; '*' allows any. Default: none. */
  allowedOrigins?: string[] | '*';
  /**
   * Keep the file in the browser (Cache Storage, keyed by its content hash) and load that copy
   * while the server reports the same validators (ETag / Last-Modified / Content-Length) or
   * cannot be reached. Default true (where Cache Storage exists: secure contexts).
   */
  cache?: boolean;
}

/** One file the browser holds (see listCached). */
export interface CachedFile {
  /** The URL it was loaded from (resolved). */
  url: string;
  kind: 'model' | 'table';
  /** Content hash: the model's own (its header, checked by the engine), or SHA-256 of the table's text. */
  sha256: string;
  /** Model name or table concept. */
  name: string | null;
  bytes: number;
  /** ISO 8601 time it was stored. */
  storedAt: string;
  etag: string | null;
  lastModified: string | null;
  contentLength: number | null;
}

/** Name of the Cache Storage cache the package uses. */
export declare const CACHE_NAME: string;
/** True where files can be stored (Cache Storage: secure contexts, i.e. https or localhost). */
export declare function cacheAvailable(): boolean;
/** What the browser holds, oldest first. */
export declare function listCached(): Promise<CachedFile[]>;
/** Removes all stored files, or those matching every given field; resolves to the number of URLs removed. */
export declare function clearCached(filter?: { url?: string | URL; kind?: 'model' | 'table'; sha256?: string }): Promise<number>;

/**
 * Resolves a model or table URL against the page and throws unless its origin is the page's
 * own or in allowedOrigins ('*': any).
 */
export declare function checkUrl(source: string | URL, allowedOrigins?: string[] | '*'): URL;

/**
 * Events: 'restarted' (CustomEvent, detail {error}): the engine failed (ran out of memory,
 * aborted) and the worker replaced it with a fresh instance; everything running failed with
 * the same message and the model must be loaded again.
 */
export declare class SelfCond extends EventTarget {
  /**
   * threads: default min(cores, 4) when crossOriginIsolated, else 1. testHooks: enables fault
   * injection in the worker (tests only).
   */
  /**
   * workerUrl: where engine/worker.js is served (default: ./engine/worker.js next to the package's
   * entry, found through import.meta.url; loader.mjs and both builds must sit next to it).
   */
  static create(opts?: { threads?: number; workerUrl?: string | URL; testHooks?: boolean }): Promise<SelfCond>;
  /** Same as the module's listCached. */
  static listCached(): Promise<CachedFile[]>;
  /** Same as the module's clearCached. */
  static clearCached(filter?: { url?: string | URL; kind?: 'model' | 'table'; sha256?: string }): Promise<number>;
  readonly runtime: RuntimeInfo | null;
  readonly model: ModelInfo | null;
  readonly threaded: boolean;
  loadModel(source: string | URL | ArrayBuffer | ArrayBufferView, opts?: LoadModelOptions): Promise<ModelInfo>;
  /** A URL (same-origin unless allowedOrigins allows it), or the table's text (native JSON or ml-selfcond CSV). */
  loadExperts(source: string | URL, opts?: { name?: string; allowedOrigins?: string[] | '*'; signal?: AbortSignal; /** accept a table without model hash (expertise.csv): shape-checked only */ allowUnhashed?: boolean; /** keep it in the browser (default true) */ cache?: boolean }): Promise<ExpertTable>;
  exportTable(table: ExpertTable | number, format?: 'json' | 'csv'): Promise<string>;
  removeTable(table: ExpertTable | number): Promise<boolean>;
  /** Up to four generations may run at once (sessions of one model); they take turns token by token. */
  generate(opts: GenerateOptions, onToken?: (t: TokenEvent) => void): Generation;
  rank(opts: RankOptions): Promise<ExpertTable>;
  /** The concept's most typical words by log-odds (function words excluded), best first. */
  conceptWords(opts: { positive: string[]; negative: string[]; maxWords?: number }): Promise<ConceptWord[]>;
  /** Mean residual after block `layer` (default n_layer / 2) over positives minus negatives. Blocks the engine ~1-2 s. */
  steeringVector(opts: { positive: string[]; negative: string[]; layer?: number }): Promise<SteeringVector>;
  /** The single-token forms of the words with bias beta, for generate({bias}). */
  wordLogitBias(opts: { words: string[]; beta: number }): Promise<LogitBias>;
  /** One unit's response at every token of a sentence; unit: its global id (table.units.id). */
  traceUnit(opts: { sentence: string; unit: number }): Promise<UnitTrace>;
  /** Experts, steering vector and logit bias side by side on a small grid. Blocks the engine a few seconds. */
  compareMethods(opts: CompareOptions): Promise<CompareResult>;
  /** How many of the table's experts to force (the CLI's --experts T:auto). Blocks the engine while it calibrates. */
  chooseK(opts: ChooseKOptions): Promise<ChooseKReport>;
  tokenize(text: string): Promise<number[]>;
  detokenize(ids: ArrayLike<number>): Promise<string>;
  /** Greedy prefill + decode of decodeTokens tokens, timed inside the worker. */
  /** Benchmark helper: prefill + decode timed inside the worker (greedy unless `sampling`). */
  bench(opts: { prompt: string; decodeTokens?: number; sampling?: { temperature?: number; topK?: number; topP?: number; seed?: number } }): Promise<BenchResult>;
  /** Benchmark helper: the engine's own ranking time (start, all sentences, finish) in the worker. */
  benchRank(opts: { positive: string[]; negative: string[]; concept?: string; topN?: number }): Promise<BenchRankResult>;
  /** Memory of the engine (the worker's WebAssembly memory and what the model accounts for). */
  memory(): Promise<MemoryInfo>;
  terminate(): void;
}

export default SelfCond;
