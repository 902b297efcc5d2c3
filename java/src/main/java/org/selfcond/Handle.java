package org.selfcond;

/**
 * A native object: closed once (close() twice is harmless), and a closed handle throws
 * IllegalStateException instead of reaching freed memory. Calls on one handle are serialized
 * (the C objects are not for concurrent use); different handles are independent.
 */
abstract class Handle implements AutoCloseable {
  private long ptr;

  Handle(long ptr) {
    this.ptr = ptr;
  }

  /** The native pointer; throws if closed. Callers hold the monitor (synchronized methods). */
  final long ptr() {
    if (ptr == 0) throw new IllegalStateException(getClass().getSimpleName() + " is closed");
    return ptr;
  }

  final boolean isClosed() {
    return ptr == 0;
  }

  abstract void free(long ptr);

  @Override
  public synchronized void close() {
    if (ptr != 0) {
      free(ptr);
      ptr = 0;
    }
  }
}
