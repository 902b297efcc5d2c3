package org.selfcond;

/**
 * A generation in steps (selfcond_generation): next() samples and runs one token. cancel() may
 * be called from any thread (a UI's stop button): the next step reports done with stop
 * CANCELLED. The session is the generation's until it is closed.
 */
public final class Generation extends Handle {
  /** Why a generation ended (selfcond_stop). */
  public enum Stop {
    MAX_TOKENS,
    EOS,
    CONTEXT_FULL,
    CANCELLED,
    /** The text reached one of GenerateParams.stopStrings. */
    STOP_STRING
  }

  /** One step. */
  public static final class Step {
    /** The new token; -1 for a final call that only flushes text. */
    public final int token;
    /** Text that became complete UTF-8 (may be empty). */
    public final String piece;

    public final boolean done;
    public final Stop stop;
    public final int promptTokens, newTokens;

    Step(byte[] piece, int[] s) {
      this.piece = Utf8.string(piece);
      token = s[0];
      done = s[1] != 0;
      stop = Stop.values()[s[2]];
      promptTokens = s[3];
      newTokens = s[4];
    }
  }

  private final Object cancelLock = new Object();
  private volatile long cancelPtr;

  Generation(long ptr) {
    super(ptr);
    cancelPtr = ptr;
  }

  @Override
  void free(long ptr) {
    synchronized (cancelLock) {
      cancelPtr = 0;
      Native.generationFree(ptr);
    }
  }

  public synchronized Step next() {
    int[] state = new int[5];
    byte[] piece = Native.generationNext(ptr(), state);
    return new Step(piece, state);
  }

  /** Thread-safe: ends the generation at the next step (a no-op once closed). */
  public void cancel() {
    synchronized (cancelLock) {
      if (cancelPtr != 0) Native.generationCancel(cancelPtr);
    }
  }
}
