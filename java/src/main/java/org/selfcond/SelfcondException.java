package org.selfcond;

/**
 * A call the library refused or that failed: {@link #status()} is the C API's status (a corrupt
 * model file is {@link Status#DATA_LOSS}, a table of another model {@link
 * Status#FAILED_PRECONDITION}, a cancelled ranking {@link Status#CANCELLED}), the message the
 * library's text naming the problem.
 */
public class SelfcondException extends RuntimeException {
  private static final long serialVersionUID = 1L;
  private final Status status;

  /** Called from the JNI layer with the C status code. */
  public SelfcondException(int code, String message) {
    super(Status.of(code) + ": " + message);
    this.status = Status.of(code);
  }

  public Status status() {
    return status;
  }

  /** The C API's numeric status (selfcond_status). */
  public int code() {
    return status.ordinal();
  }
}
