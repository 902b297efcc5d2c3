package org.selfcond;

/** selfcond_precision: int8 (the default, XNNPACK) or float32 (needs a model loaded with it). */
public enum Precision {
  INT8,
  F32
}
