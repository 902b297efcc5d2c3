package org.selfcond;

/** selfcond_model_info. */
public final class ModelInfo {
  public final String name;
  /** SHA-256 of the weights (hex); expert tables name it. */
  public final String hash;
  /** "gpt2" or "llama" (the Llama family: Llama, Qwen2, Mistral, SmolLM). */
  public final String arch;

  public final int nLayer, nEmbd, nHead, nCtx, nInner, vocabSize, eosId;
  /** Units of the linear layers of every block (the unit space). */
  public final long numUnits;

  public final int nHeadKv, headDim, bosId, threads;
  public final long fileBytes, packedBytes;
  /** Linear layers of a block that hold units: 4 (GPT-2), 7 (Llama family). */
  public final int sitesPerLayer;

  ModelInfo(String[] s, long[] n) {
    name = s[0];
    hash = s[1];
    arch = s[2];
    nLayer = (int) n[0];
    nEmbd = (int) n[1];
    nHead = (int) n[2];
    nCtx = (int) n[3];
    nInner = (int) n[4];
    vocabSize = (int) n[5];
    eosId = (int) n[6];
    numUnits = n[7];
    nHeadKv = (int) n[8];
    headDim = (int) n[9];
    bosId = (int) n[10];
    threads = (int) n[11];
    fileBytes = n[12];
    packedBytes = n[13];
    sitesPerLayer = (int) n[14];
  }

  @Override
  public String toString() {
    return name + " (" + arch + ", " + nLayer + " layers, " + numUnits + " units, context " + nCtx
        + ")";
  }
}
