// The parts of a selfcond page that the app (web/app.js) and the package's
// <selfcond-playground> element (playground.js) are both made of: loading the model with
// progress, the unconditioned and conditioned streams side by side, ranking a typed-in concept,
// and streaming text into the page. Each is written once, here: a change of behaviour lands in
// both UIs. They only touch the elements they are given, so they work in a shadow root too.

/** Non-empty trimmed lines of a textarea. */
export const lines = (text) => String(text ?? '').split('\n').map((s) => s.trim()).filter(Boolean);

const MiB = (x) => (x / 1048576).toFixed(1);

/**
 * What a load progress event means for the page: the bar's fraction (null: unknown) and the
 * status line.
 * @param {{phase: 'download'|'cache'|'load', loaded: number, total: number, fraction: number|null}} p
 */
export function loadStatus({ phase, loaded, total, fraction }) {
  if (phase === 'cache') return { fraction: 1, text: `Reading the model from the browser’s store… ${MiB(loaded)} MiB` };
  if (phase === 'load') return { fraction: 1, text: 'Checking and preparing the model…' };
  return { fraction, text: `Downloading the model… ${MiB(loaded)}${total ? ` / ${MiB(total)}` : ''} MiB` };
}

/**
 * Loads a model into the engine, reporting progress as status lines (onStatus(text, fraction)),
 * then the concepts' expert tables (tables: [{key, label, url}]); a table that fails is
 * reported through onTableError(label, error) and skipped. Rejects with the load's error
 * (name 'AbortError' when signal aborted it).
 * @returns {Promise<{info: object, tables: {key: string, label: string, table: object}[]}>}
 */
export async function loadModelAndTables(sc, url, { signal, allowedOrigins, verify = true, cache = true, tables = [], onStatus, onTableError } = {}) {
  const info = await sc.loadModel(url, {
    signal, allowedOrigins, verify, cache,
    onProgress: (p) => {
      const s = loadStatus(p);
      onStatus?.(s.text, s.fraction);
    },
  });
  onStatus?.('Loading expert tables…', 1);
  const loaded = [];
  for (const t of tables) {
    try {
      loaded.push({ key: t.key, label: t.label, table: await sc.loadExperts(t.url, { allowedOrigins, cache, name: t.label }) });
    } catch (e) {
      onTableError?.(t.label, e);
    }
  }
  return { info, tables: loaded };
}

/**
 * Streams text into `body`: tokens are collected and appended to one text node at most every
 * TEXT_UPDATE_MS. Setting textContent per token replaced the node each time and made the page
 * restyle, lay out, repaint and re-raster for every token of both streams: with two streams at
 * ~200 tokens/s each, the page's rendering took about half a core, which on a 2-core machine
 * came out of the engine's share (web/README.md, "App speed"). The first text is written at
 * once (time to first token); flush() writes what is pending (before the result).
 */
export const TEXT_UPDATE_MS = 100;
export function textSink(body) {
  const node = document.createTextNode('');
  body.append(node);
  let pending = '';
  let timer = 0;
  const flush = () => {
    clearTimeout(timer);
    timer = 0;
    if (pending) node.appendData(pending);
    pending = '';
  };
  return {
    push(text) {
      if (!node.length) {
        node.appendData(text);
        return;
      }
      pending += text;
      timer ||= setTimeout(flush, TEXT_UPDATE_MS);
    },
    flush,
  };
}

const STOP_TEXT = { eos: 'end of text', max_tokens: '', context_full: 'context full', cancelled: 'stopped' };

/** The line under a finished stream: "30 tokens · 180.2 tok/s · stopped". */
export function generationSummary(r) {
  const why = STOP_TEXT[r.stop] ?? r.stop;
  return `${r.tokens} tokens${r.tokensPerSecond ? ` · ${r.tokensPerSecond.toFixed(1)} tok/s` : ''}${why ? ` · ${why}` : ''}`;
}

/**
 * Generations side by side, one per column ({out, meta, options}: the output element, the line
 * under it, and what this column adds to `opts`: its experts, steering or bias). Each column
 * shows the prompt, then the text as it streams (a .caret on it until it ends), then its
 * summary line; a failed column shows 'error' and the message. They start together and take
 * turns token by token in the engine.
 * @returns {{handles: {cancel(): void}[], done: Promise<PromiseSettledResult<object>[]>}}
 */
export function streamColumns(sc, opts, columns) {
  const finished = [];
  const handles = columns.map((c) => {
    const doc = c.out.ownerDocument;
    const prompt = Object.assign(doc.createElement('span'), { className: 'prompt', textContent: opts.prompt });
    const body = Object.assign(doc.createElement('span'), { className: 'body caret' });
    c.out.replaceChildren(prompt, body);
    // aria-busy: screen readers announce the column once it is complete, not token by token.
    c.out.setAttribute('aria-busy', 'true');
    c.meta.textContent = 'generating…';
    const sink = textSink(body);
    const h = sc.generate({ ...opts, ...c.options }, (t) => sink.push(t.text));
    const end = () => {
      sink.flush();
      body.classList.remove('caret');
      c.out.setAttribute('aria-busy', 'false');
    };
    finished.push(h.done.then((r) => {
      end();
      c.meta.textContent = generationSummary(r);
      return r;
    }, (e) => {
      end();
      c.meta.textContent = 'error';
      c.out.append(Object.assign(doc.createElement('div'), { className: 'error-text', textContent: e.message }));
      throw e;
    }));
    return h;
  });
  return { handles, done: Promise.allSettled(finished) };
}

/**
 * Ranks a concept typed in as sentences (one per line, with and without it). Rejects with a
 * message for the page when a class is empty. onProgress(fraction) per batch.
 * @returns {Promise<{table: object, sentences: number}>}
 */
export async function rankTyped(sc, { name, positiveText, negativeText, onProgress, signal }) {
  const positive = lines(positiveText);
  const negative = lines(negativeText);
  if (!positive.length || !negative.length) {
    // Said here rather than by the engine so that the page can point at the empty box.
    const missing = positive.length ? 'negative' : 'positive';
    const what = missing === 'negative' ? 'without the concept' : 'with the concept';
    throw Object.assign(new Error(`Type at least one sentence ${what}: the ${missing} examples are empty.`), { missing });
  }
  const table = await sc.rank({
    positive, negative, concept: String(name ?? '').trim() || 'custom', signal,
    onProgress: ({ done, total }) => onProgress?.(total ? done / total : 0, done, total),
  });
  return { table, sentences: positive.length + negative.length, positive, negative };
}
