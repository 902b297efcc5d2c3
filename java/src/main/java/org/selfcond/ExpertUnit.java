package org.selfcond;

/** selfcond_expert_unit: a unit of an expert table and its statistics. */
public final class ExpertUnit {
  /** In the model's unit space (Model.unitName names it). */
  public final long unitId;
  /** The linear layer: layer * sitesPerLayer + kind. */
  public final int site, unit, layer, kind;

  public final float ap, onP50, onP90, offMean;

  ExpertUnit(double[] v) {
    unitId = (long) v[0];
    site = (int) v[1];
    unit = (int) v[2];
    layer = (int) v[3];
    kind = (int) v[4];
    ap = (float) v[5];
    onP50 = (float) v[6];
    onP90 = (float) v[7];
    offMean = (float) v[8];
  }
}
