// Reference token ids for the tokenizer.json test files (scripts/make_test_tokenizers.py), from
// npm @huggingface/tokenizers (tokenizers.js): for every DIR/<style>.tokenizer.json, a fixed set
// of texts plus seeded random ones, encoded with the post-processor's special tokens, and each
// sequence's decoding without special tokens. tests/hf_tokenizer_test.cc compares selfcond's
// Tokenizer with them.
//
//   node tests/tokenizer_reference.mjs DIR [N_RANDOM=300]    (writes DIR/<style>.vectors.json)
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';

const dir = process.argv[2];
const nRandom = Number(process.argv[3] ?? 300);
if (!dir) {
  console.error('usage: node tests/tokenizer_reference.mjs DIR [N_RANDOM]');
  process.exit(2);
}

const FIXED = [
  '', ' ', 'Hello', 'Hello world', ' Hello world', 'Hello  world', 'Hello world ', '\n', '\n\n',
  'The football match ended with a goal in the last minute.',
  "I'll, you're, we've, they'd, she's, it's, I'm, DON'T, WE'RE, We'Re.",
  'Numbers 1234567890 and 3.14159, 2026-12-06, $1,000,000, 12 345.',
  'Привет, как дела? Москва — столица России.',
  '中文的句子，包括标点符号。日本語の文章です。한국어 문장입니다.',
  'Café naïve façade — “quotes” and ‘single’ … e\u0301 a\u0308 n\u0303 (combining marks)',
  'Emoji 😀🎉 ⚽ 👍🏽 👨‍👩‍👧 © ® ™ € £ ¥',
  'def main():\n    return x + 1  # code\n\n\tindented\r\nwindows line\r\n',
  '   leading and trailing   ', '\t\t tabs \t', 'a\u00a0b\u0085c\ufeffd\u2028e\u3000f',
  '<|begin_of_text|>Hello<|end_of_text|>', 'x<|eot_id|> y', 'Use the <tool>  now',
  'word <tool> word', '<s> and </s> and <unk>', '<|im_start|>user\nHi<|im_end|>',
  '<|endoftext|>', 'The <|endoftext|> is special', 'ZZZZZZZZ qqqqq xyzzy ǅ ǈ',
  '1 22 333 4444 55555 666666', "'s 'S 'll 'LL", 'a\r\n\r\nb', '   \n   x',
];

// Characters the random texts are drawn from: ASCII, spaces of every kind the patterns treat
// differently, accented and combining Latin, other scripts, emoji (astral), digits of other
// scripts, and pieces of the special tokens. All assigned in Unicode 14 (selfcond's tables).
const POOL = [
  ...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789',
  ...' .,;:!?\'"-()[]{}<>|/\\@#$%^&*_+=~`', ' ', ' ', ' ', '\n', '\t', '\r',
  '\u00a0', '\u0085', '\ufeff', '\u2028', '\u3000', '\u200b',
  ...'éèêëàâäôöûüçñÉÀÇÑßøåæœ', '\u0301', '\u0308', '\u0327', '\u0303',
  ...'абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВ', ...'αβγδεζηθλμπσωΩΣ',
  ...'中文字足球我们的是日本語한국어', ...'가각간나다', '\u1100', '\u1161', '\u11a8',
  '😀', '🎉', '⚽', '👍', '🏽', '\u200d', ...'٠١٢٣٤', ...'०१२', '½', '²', 'Ⅻ',
  "'s", "'T", "'re", "'ll", '<|', '|>', '<s>', '</s>', '<tool>', '<|endoftext|>',
  '<|begin_of_text|>', '<unk>', '\u2581',
];

// mulberry32: a seeded PRNG so the texts are the same on every run.
function rng(seed) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomTexts(n, seed) {
  const r = rng(seed);
  const out = [];
  for (let i = 0; i < n; ++i) {
    const len = 1 + Math.floor(r() * (i % 10 === 0 ? 200 : 40));
    let s = '';
    for (let k = 0; k < len; ++k) s += POOL[Math.floor(r() * POOL.length)];
    out.push(s);
  }
  return out;
}

const files = fs.readdirSync(dir).filter((f) => f.endsWith('.tokenizer.json')).sort();
if (files.length === 0) {
  console.error(`no *.tokenizer.json in ${dir}`);
  process.exit(1);
}
for (const file of files) {
  const style = file.replace(/\.tokenizer\.json$/, '');
  const json = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
  const tok = new Tokenizer(json, {});
  const texts = [...FIXED, ...randomTexts(nRandom, 1234)];
  const cases = texts.map((text) => {
    const ids = tok.encode(text).ids;
    const decoded = ids.length > 0
      ? tok.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false })
      : '';
    return { text, ids, decoded };
  });
  fs.writeFileSync(path.join(dir, `${style}.vectors.json`), JSON.stringify({ style, cases }));
  console.log(`  ${style}: ${cases.length} texts`);
}
