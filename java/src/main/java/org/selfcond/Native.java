package org.selfcond;

/**
 * The JNI projection of the C API (include/selfcond/selfcond.h), one method per C function or
 * close to it. Strings cross as UTF-8 byte arrays (JNI's own string functions use "modified
 * UTF-8", which mangles characters outside the BMP). Failures throw {@link SelfcondException}.
 * The public classes (Model, Session, Experts, Ranking, Generation) wrap this.
 */
final class Native {
  static {
    String lib = System.getProperty("selfcond.jni.library");
    if (lib != null && !lib.isEmpty()) {
      System.load(lib);
    } else {
      System.loadLibrary("selfcond_jni");
    }
  }

  private Native() {}

  static native String version();

  static native long modelLoadFile(
      byte[] path, boolean verifyHash, int threads, long maxMemory, ProgressListener progress);

  static native long modelLoadBytes(
      byte[] data, boolean verifyHash, int threads, long maxMemory, ProgressListener progress);

  static native long modelLoadFd(
      int fd,
      long offset,
      long length,
      boolean verifyHash,
      int threads,
      long maxMemory,
      ProgressListener progress);

  static native void modelFree(long model);

  /** name, hash, arch. */
  static native byte[][] modelInfoStrings(long model);

  /**
   * n_layer, n_embd, n_head, n_ctx, n_inner, vocab_size, eos_id, num_units, n_head_kv, head_dim,
   * bos_id, threads, file_bytes, packed_bytes, sites_per_layer.
   */
  static native long[] modelInfoNumbers(long model);

  static native int[] tokenize(long model, byte[] text);

  static native byte[] detokenize(long model, int[] tokens);

  /** ml-selfcond's layer name; unitInLayer[0] receives the unit's index in it. */
  static native byte[] unitName(long model, long unitId, int[] unitInLayer);

  static native long expertsLoadFile(long model, byte[] path, boolean allowUnhashed);

  static native long expertsParse(long model, byte[] text, boolean allowUnhashed);

  static native void expertsFree(long experts);

  /** concept, group, model_hash. */
  static native byte[][] expertsInfoStrings(long experts);

  /** num_units, total_units, num_positive, num_negative, num_truncated. */
  static native long[] expertsInfoNumbers(long experts);

  /** unit_id, site, unit, layer, kind, ap, on_p50, on_p90, off_mean. */
  static native double[] expertsUnit(long experts, long rank);

  static native byte[] expertsToString(long experts, int format);

  static native long sessionCreate(
      long model, int precision, int threads, int nCtx, int kvType, long maxMemory);

  static native void sessionFree(long session);

  /** Thread-safe (selfcond_session_abort). */
  static native void sessionAbort(long session);

  /** n_ctx, n_past, kv_cache_bytes, forced_units. */
  static native long[] sessionInfo(long session);

  static native void sessionSetForcing(
      long session, long[] experts, long[] topK, int value, boolean onlyLastToken);

  static native long generationStart(
      long session,
      byte[] prompt,
      int maxNewTokens,
      float temperature,
      int topK,
      float topP,
      long seed,
      boolean stopAtEos,
      boolean keepContext,
      byte[][] stopStrings,
      float repeatPenalty,
      int repeatLastN);

  /**
   * One more token: the piece of text that became complete UTF-8; state receives token, done,
   * stop, prompt_tokens, new_tokens.
   */
  static native byte[] generationNext(long generation, int[] state);

  static native void generationCancel(long generation);

  static native void generationFree(long generation);

  static native long rankingStart(
      long model,
      byte[] concept,
      byte[][] positive,
      byte[][] negative,
      int precision,
      int threads,
      int maxSentences,
      long topN);

  /** done, total. */
  static native int[] rankingStep(long ranking, int n);

  static native long rankingFinish(long ranking);

  static native void rankingFree(long ranking);

  static native long rank(
      long model,
      byte[] concept,
      byte[][] positive,
      byte[][] negative,
      int precision,
      int threads,
      int maxSentences,
      long topN,
      ProgressListener progress);
}
