package org.selfcond;

/** ml-selfcond's name of a unit: its layer (e.g. "transformer.h.3.mlp.c_fc:0") and index. */
public final class UnitName {
  public final String layer;
  public final int unit;

  UnitName(String layer, int unit) {
    this.layer = layer;
    this.unit = unit;
  }

  @Override
  public String toString() {
    return layer + " unit " + unit;
  }
}
