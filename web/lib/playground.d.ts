// TypeScript declarations for selfcond/playground (the <selfcond-playground> custom element).
import type { SelfCond, ModelInfo, ExpertTable, GenerateResult } from './selfcond.js';

/**
 * <selfcond-playground model="..." concepts="label=url ..."> (attributes: model, concepts, prompt,
 * k, max-k, max-tokens, seed, allowed-origins, no-cache). Importing the module defines the element.
 */
export declare class SelfCondPlayground extends HTMLElement {
  /** The engine behind the element, once started. */
  readonly selfcond: SelfCond | null;
  /** Resolves with the model info once the model and the concepts' tables are loaded. */
  readonly ready: Promise<ModelInfo>;
  /** Runs both columns (unconditioned, conditioned); resolves when both are done. */
  generate(): Promise<void>;
  /** Stops both columns after their current token. */
  stop(): void;
  /** Ranks the custom concept from the typed sentences and selects it. */
  rankCustom(): Promise<void>;
}

/** [{label, url}] of a concepts attribute ("label=url" or "url" entries, whitespace-separated). */
export declare function parseConcepts(attr: string | null): { label: string; url: string }[];

export interface SelfCondPlaygroundEventMap {
  'selfcond-ready': CustomEvent<{ model: ModelInfo }>;
  'selfcond-generated': CustomEvent<{ base: GenerateResult; cond: GenerateResult }>;
  'selfcond-ranked': CustomEvent<{ table: ExpertTable }>;
  'selfcond-error': CustomEvent<{ message: string }>;
}

declare global {
  interface HTMLElementTagNameMap {
    'selfcond-playground': SelfCondPlayground;
  }
}

export default SelfCondPlayground;
