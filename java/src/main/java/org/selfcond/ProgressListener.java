package org.selfcond;

/** Sentences done so far and their total; return false to cancel. */
@FunctionalInterface
public interface ProgressListener {
  boolean onProgress(int done, int total);
}
