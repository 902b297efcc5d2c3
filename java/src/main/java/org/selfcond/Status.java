package org.selfcond;

/** The C API's selfcond_status, by name. */
public enum Status {
  OK,
  INVALID_ARGUMENT,
  NOT_FOUND,
  OUT_OF_RANGE,
  FAILED_PRECONDITION,
  DATA_LOSS,
  RESOURCE_EXHAUSTED,
  CANCELLED,
  INTERNAL,
  UNIMPLEMENTED;

  static Status of(int code) {
    Status[] all = values();
    return code >= 0 && code < all.length ? all[code] : INTERNAL;
  }
}
