import { SelfCond } from 'selfcond';

const $ = (id) => document.getElementById(id);
const sc = await SelfCond.create();  // the threaded build when the page is cross-origin isolated
const model = await sc.loadModel('../models/selfcond-mini-30m.scm', { onProgress: (p) => ($('progress').value = p.fraction ?? 0) });
$('status').textContent = `${model.name}: ${model.threads} thread(s), ${model.fromCache ? 'from the cache' : 'downloaded'}`;
const football = await sc.loadExperts('../experts/football.json');
await sc.generate({ prompt: 'Once upon a time', maxTokens: 40, experts: [{ table: football, k: 50 }] }, (t) => ($('out').textContent += t.text)).done;
const cats = await sc.rank({ concept: 'cats', positive: ['The cat purred on my lap.', 'Our kitten chased a toy mouse.', 'She fed the cats.'],
  negative: ['The train left at noon.', 'Stocks fell on Monday.', 'He painted the fence.'] });
$('ranked').textContent = `${cats.concept}: ${cats.numUnits} units ranked, best AP ${cats.units.ap[0].toFixed(3)}`;
