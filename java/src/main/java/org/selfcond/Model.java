package org.selfcond;

import java.util.List;

/**
 * A selfcond model (.scm): immutable and shared by its sessions, rankings and tables, which keep
 * it alive in the library even after this handle is closed. Loading verifies the file's content
 * hash unless told not to.
 */
public final class Model extends Handle {
  /** Load options (selfcond_model_params). */
  public static final class Params {
    /** Recompute the file's SHA-256 and refuse a mismatch (default true). */
    public boolean verifyHash = true;
    /** Threads of the model's pool, used by sessions with threads != 1 (<= 0: every core). */
    public int threads = 0;
    /**
     * Memory the model may hold (packed weights, float copies, a copy of the file): a load that
     * needs more fails with RESOURCE_EXHAUSTED before allocating. 0: no limit.
     */
    public long maxMemoryBytes = 0;
    /** The load's progress in per mille (total 1000); returning false cancels. May be null. */
    public ProgressListener progress = null;
  }

  private final ModelInfo info;

  private Model(long ptr) {
    super(ptr);
    this.info = new ModelInfo(Utf8.strings(Native.modelInfoStrings(ptr)), Native.modelInfoNumbers(ptr));
  }

  public static Model load(String path) {
    return load(path, new Params());
  }

  public static Model load(String path, Params p) {
    return new Model(
        Native.modelLoadFile(
            Utf8.bytes(path, "path"), p.verifyHash, p.threads, p.maxMemoryBytes, p.progress));
  }

  /**
   * length bytes from offset of an open file (length 0: to its end), e.g. an uncompressed APK
   * asset: {@code AssetFileDescriptor a = assets.openFd("model.scm"); Model.loadFd(
   * a.getParcelFileDescriptor().getFd(), a.getStartOffset(), a.getLength(), params)}. The
   * descriptor is duplicated: it may be closed afterwards.
   */
  public static Model loadFd(int fd, long offset, long length, Params p) {
    return new Model(
        Native.modelLoadFd(
            fd, offset, length, p.verifyHash, p.threads, p.maxMemoryBytes, p.progress));
  }

  /** From the file's bytes (an Android asset read into memory, a download). */
  public static Model fromBytes(byte[] data, Params p) {
    if (data == null) throw new IllegalArgumentException("data is null");
    return new Model(
        Native.modelLoadBytes(data, p.verifyHash, p.threads, p.maxMemoryBytes, p.progress));
  }

  @Override
  void free(long ptr) {
    Native.modelFree(ptr);
  }

  public ModelInfo info() {
    return info;
  }

  public synchronized int[] tokenize(String text) {
    return Native.tokenize(ptr(), Utf8.bytes(text, "text"));
  }

  public synchronized String detokenize(int[] tokens) {
    return Utf8.string(Native.detokenize(ptr(), tokens));
  }

  /** ml-selfcond's name of a unit: its layer ("transformer.h.3.mlp.c_fc:0") and index. */
  public synchronized UnitName unitName(long unitId) {
    int[] index = new int[1];
    String layer = Utf8.string(Native.unitName(ptr(), unitId, index));
    return new UnitName(layer, index[0]);
  }

  /** An expert table (selfcond JSON or ml-selfcond expertise.csv) checked against this model. */
  public synchronized Experts loadExperts(String path) {
    return new Experts(Native.expertsLoadFile(ptr(), Utf8.bytes(path, "path"), false));
  }

  /** The same from the table's text. allowUnhashed: accept a table without a model hash. */
  public synchronized Experts parseExperts(String text, boolean allowUnhashed) {
    return new Experts(Native.expertsParse(ptr(), Utf8.bytes(text, "table"), allowUnhashed));
  }

  public Session newSession() {
    return newSession(new Session.Params());
  }

  public synchronized Session newSession(Session.Params p) {
    return new Session(
        Native.sessionCreate(
            ptr(), p.precision.ordinal(), p.threads, p.nCtx, p.kvF16 ? 1 : 0, p.maxMemoryBytes));
  }

  /**
   * Ranks every unit as an expert for a concept, blocking; progress (may be null) is called
   * with sentences done and their total, and returning false cancels (a SelfcondException with
   * status CANCELLED).
   */
  public synchronized Experts rank(
      String concept,
      List<String> positive,
      List<String> negative,
      Ranking.Params p,
      ProgressListener progress) {
    return new Experts(
        Native.rank(
            ptr(),
            Utf8.bytes(concept, "concept"),
            Utf8.all(positive, "positive sentence"),
            Utf8.all(negative, "negative sentence"),
            p.precision.ordinal(),
            p.threads,
            p.maxSentences,
            p.topN,
            progress));
  }

  /** A ranking in steps (progress between steps, stop by closing it). */
  public synchronized Ranking startRanking(
      String concept, List<String> positive, List<String> negative, Ranking.Params p) {
    return new Ranking(
        Native.rankingStart(
            ptr(),
            Utf8.bytes(concept, "concept"),
            Utf8.all(positive, "positive sentence"),
            Utf8.all(negative, "negative sentence"),
            p.precision.ordinal(),
            p.threads,
            p.maxSentences,
            p.topN));
  }

  /** The library's version (the C API's). */
  public static String version() {
    return Native.version();
  }
}
