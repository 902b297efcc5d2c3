package org.selfcond;

/**
 * A ranking in steps: step(n) runs up to n more sentences; finish() gives the table once every
 * sentence ran. Closing it stops it. Keeps its model alive.
 */
public final class Ranking extends Handle {
  /** selfcond_rank_params. */
  public static final class Params {
    public Precision precision = Precision.INT8;
    /** 1: the calling thread; any other value: the model's pool, one session per thread. */
    public int threads = 1;
    /** Per class, the first N sentences (0: all). */
    public int maxSentences = 0;
    /** Keep the best N units (0: all). */
    public long topN = 0;
  }

  private int done, total = -1;

  Ranking(long ptr) {
    super(ptr);
  }

  @Override
  void free(long ptr) {
    Native.rankingFree(ptr);
  }

  /** Runs up to n more sentences; returns how many ran so far. */
  public synchronized int step(int n) {
    int[] dt = Native.rankingStep(ptr(), n);
    done = dt[0];
    total = dt[1];
    return done;
  }

  public synchronized int done() {
    return done;
  }

  /** Sentences in all (known after the first step; -1 before). */
  public synchronized int total() {
    return total;
  }

  public synchronized boolean isDone() {
    return total >= 0 && done >= total;
  }

  public synchronized Experts finish() {
    return new Experts(Native.rankingFinish(ptr()));
  }
}
