package org.selfcond;

/** An expert table (units sorted by AP, best first), checked against its model when loaded. */
public final class Experts extends Handle {
  public final String concept, group, modelHash;
  public final long numUnits, totalUnits;
  public final int numPositive, numNegative, numTruncated;

  Experts(long ptr) {
    super(ptr);
    String[] s = Utf8.strings(Native.expertsInfoStrings(ptr));
    long[] n = Native.expertsInfoNumbers(ptr);
    concept = s[0];
    group = s[1];
    modelHash = s[2];
    numUnits = n[0];
    totalUnits = n[1];
    numPositive = (int) n[2];
    numNegative = (int) n[3];
    numTruncated = (int) n[4];
  }

  @Override
  void free(long ptr) {
    Native.expertsFree(ptr);
  }

  /** The rank-th unit (0 = best AP). */
  public synchronized ExpertUnit unit(long rank) {
    return new ExpertUnit(Native.expertsUnit(ptr(), rank));
  }

  /** selfcond's JSON table. */
  public synchronized String toJson() {
    return Utf8.string(Native.expertsToString(ptr(), 0));
  }

  /** ml-selfcond's expertise.csv. */
  public synchronized String toCsv() {
    return Utf8.string(Native.expertsToString(ptr(), 1));
  }

  synchronized long pointer() {
    return ptr();
  }
}
