// Type-checked by web/tests/types.test.mjs (tsc --noEmit): the package's declarations
// (selfcond.d.ts, built on capi.d.ts, which scripts/gen_bindings.py generates from the C header)
// accept what the README shows and refuse what the engine would refuse by name.
import SelfCond, { type ChooseKReport, type CompareResult, type GenerateParams, type ModelInfo } from '../../lib/selfcond.js';
import type { CompareParams, SessionParams } from '../../lib/capi';

export async function usage(): Promise<void> {
  const sc = await SelfCond.create({ threads: 2 });
  const info: ModelInfo = await sc.loadModel('../demo/models/selfcond-mini-30m.scm', { verify: true });
  const arch: string = info.arch;
  const kinds: number = info.sitesPerLayer;
  const table = await sc.loadExperts('../demo/experts/football.json');
  const layerOfBest: number = table.units.layer[0] + table.units.kind[0];
  const g = sc.generate({ prompt: 'Once upon a time', maxTokens: 20, temperature: 0, topP: 0.9, seed: 1, stopAtEos: false,
    experts: [{ table, k: 50 }], forcing: { value: 'on_p90', onlyLastToken: false } }, (t) => t.text);
  const r = await g.done;
  const stop: 'max_tokens' | 'eos' | 'context_full' | 'cancelled' | 'stop_string' = r.stop;
  const forced: number = r.forcedUnits;
  const g2 = sc.generate({ prompt: 'Q: hi\nA:', stopStrings: ['\nQ:'], repeatPenalty: 1.1, repeatLastN: 64 });
  const cmp: CompareResult = await sc.compareMethods({ table, positive: ['a'], negative: ['b'], seeds: 1, ks: [10], methods: 'bias', betas: [4] });
  const k: ChooseKReport = await sc.chooseK({ table, candidates: [5, 50], targetRate: 0.5, pplBudget: 2 });
  const trace = await sc.traceUnit({ sentence: 'A goal.', unit: table.units.id[0] });
  const p: GenerateParams = { maxNewTokens: 5, temperature: 1 };
  const s: SessionParams = { nCtx: 64, kvType: 'f16', precision: 'int8' };
  const c: CompareParams = { grid: { seeds: 2, prompts: ['x'] }, ks: [1], forcing: 'zero' };
  void [arch, kinds, layerOfBest, stop, forced, g2, cmp.points.length, k.k, trace.values, p, s, c];
  // @ts-expect-error: the package's generations do not keep a context (a session pool)
  sc.generate({ prompt: 'x', keepContext: true });
  // @ts-expect-error: not a forcing value the engine knows
  sc.generate({ prompt: 'x', forcing: { value: "max" } });
  // @ts-expect-error: the sampler has no such option
  const bad: GenerateParams = { maxTokens: 5 };
  // @ts-expect-error: a unit is its global id now
  await sc.traceUnit({ sentence: 'x', unit: { site: 1, unit: 2 } });
  void bad;
}
