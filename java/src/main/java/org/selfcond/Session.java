package org.selfcond;

/**
 * A session: a KV cache and the conditioning (forced expert units) on one model, used by one
 * thread at a time (llama.cpp's context). Keeps its model alive.
 */
public final class Session extends Handle {
  /** selfcond_session_params. */
  public static final class Params {
    public Precision precision = Precision.INT8;
    /** 1: the calling thread; any other value: the model's pool. */
    public int threads = 1;
    /** Positions of the KV cache (0: the model's context). */
    public int nCtx = 0;
    /** A float16 KV cache (half the memory). */
    public boolean kvF16 = false;
    /** Memory the session may allocate (KV cache, scratch); 0: half the device's memory. */
    public long maxMemoryBytes = 0;
  }

  /** What forced units are set to (selfcond_forcing_value). */
  public enum ForcingValue {
    ON_P50,
    ON_P90,
    OFF_MEAN,
    ZERO
  }

  /** selfcond_generate_params. */
  public static final class GenerateParams {
    public int maxNewTokens = 50;
    /** 0: greedy. */
    public float temperature = 1f;
    /** 0: off. */
    public int topK = 0;
    /** 1: off. */
    public float topP = 1f;
    /** The same seed gives the same text on every platform. */
    public long seed = 0;

    public boolean stopAtEos = true;
    /**
     * Continue the session's context: the prompt goes after the KV cache's tokens ("" continues
     * the last generation) and the new tokens stay in it (a chat).
     */
    public boolean keepContext = false;
    /** The text ends before the first of these it holds (stop STOP_STRING). May be null. */
    public String[] stopStrings = null;
    /** llama.cpp's repetition penalty on the last repeatLastN tokens (1: off; -1: all). */
    public float repeatPenalty = 1f;

    public int repeatLastN = 64;
  }

  /** What a whole generation produced. */
  public static final class Result {
    public final String text;
    public final int promptTokens, newTokens;
    public final Generation.Stop stop;

    Result(String text, int promptTokens, int newTokens, Generation.Stop stop) {
      this.text = text;
      this.promptTokens = promptTokens;
      this.newTokens = newTokens;
      this.stop = stop;
    }
  }

  private final Object abortLock = new Object();
  private volatile long abortPtr;

  Session(long ptr) {
    super(ptr);
    abortPtr = ptr;
  }

  @Override
  void free(long ptr) {
    synchronized (abortLock) {
      abortPtr = 0;
      Native.sessionFree(ptr);
    }
  }

  /**
   * From any thread: stops the call running on this session, a long prefill included (it throws
   * SelfcondException CANCELLED, the KV cache as before it); a generation past its prefill ends
   * with stop CANCELLED. With no call running, the next one is stopped. A no-op once closed.
   */
  public void abort() {
    synchronized (abortLock) {
      if (abortPtr != 0) Native.sessionAbort(abortPtr);
    }
  }

  /** Positions in the KV cache (what the next token follows). */
  public synchronized int nPast() {
    return (int) Native.sessionInfo(ptr())[1];
  }

  /** Units the forcing overwrites (a top-k beyond its table counts the table's size). */
  public synchronized long forcedUnits() {
    return Native.sessionInfo(ptr())[3];
  }

  /** Forces the table's top k experts to their median "on" response at every position. */
  public void setForcing(Experts experts, long k) {
    setForcing(new Experts[] {experts}, new long[] {k}, ForcingValue.ON_P50, false);
  }

  /** Several tables (a unit in several gets the mean of their values); none clears it. */
  public synchronized void setForcing(
      Experts[] tables, long[] topK, ForcingValue value, boolean onlyLastToken) {
    if (tables.length != topK.length) {
      throw new IllegalArgumentException("one top-k per table: " + tables.length + " tables, "
          + topK.length + " values");
    }
    long[] ptrs = new long[tables.length];
    for (int i = 0; i < tables.length; i++) ptrs[i] = tables[i].pointer();
    Native.sessionSetForcing(ptr(), ptrs, topK, value.ordinal(), onlyLastToken);
  }

  public void clearForcing() {
    setForcing(new Experts[0], new long[0], ForcingValue.ON_P50, false);
  }

  /**
   * Prefills the prompt (from position 0, or after the cache with keepContext) and returns the
   * generation to step.
   */
  public synchronized Generation start(String prompt, GenerateParams p) {
    return new Generation(
        Native.generationStart(
            ptr(),
            Utf8.bytes(prompt, "prompt"),
            p.maxNewTokens,
            p.temperature,
            p.topK,
            p.topP,
            p.seed,
            p.stopAtEos,
            p.keepContext,
            p.stopStrings == null ? null : Utf8.all(java.util.Arrays.asList(p.stopStrings), "stop string"),
            p.repeatPenalty,
            p.repeatLastN));
  }

  /** Generates to the end, streaming to listener (may be null; false stops). */
  public Result generate(String prompt, GenerateParams p, TokenListener listener) {
    StringBuilder text = new StringBuilder();
    try (Generation g = start(prompt, p)) {
      while (true) {
        Generation.Step s = g.next();
        text.append(s.piece);
        boolean go = true;
        if (listener != null && (s.token >= 0 || !s.piece.isEmpty())) {
          go = listener.onToken(s.token, s.piece);
        }
        if (s.done) return new Result(text.toString(), s.promptTokens, s.newTokens, s.stop);
        if (!go) g.cancel();
      }
    }
  }
}
