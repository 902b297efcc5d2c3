package org.selfcond;

/**
 * Each new token with the text that became complete (may be empty: a token can end inside a
 * character; token -1: a final call that only flushes text). Return false to stop.
 */
@FunctionalInterface
public interface TokenListener {
  boolean onToken(int token, String piece);
}
