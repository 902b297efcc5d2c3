// Generates tests/data/tokenizer_vectors.json: GPT-2 token ids of varied texts computed by the
// reference encoder, npm gpt-3-encoder (a JS port of OpenAI's encoder.py). The C++ test reads the
// JSON, so CI does not need npm.
//
//   cd tests && npm install && node gen_tokenizer_vectors.js [path/to/football.json]
//
// gpt-3-encoder's merge table is keyed by String([a, b]) = "a,b", so a pair of tokens that is not
// a merge can alias one that is when the tokens contain commas. encoder.py has no such bug (and
// HF tokenizers agree with it), so for every text we also run a faithful port of encoder.py's
// bpe() (exact pair keys) on the same pre-tokenization, and store its ids as "ids". Texts where
// the two disagree carry the gpt-3-encoder result in "gpt3_encoder_ids" for the record; the
// generator also searches for a few such texts so the test exercises the difference.
'use strict';
const fs = require('fs');
const path = require('path');
const enc = require('gpt-3-encoder');

const pkgDir = path.dirname(require.resolve('gpt-3-encoder'));
const encoder = JSON.parse(fs.readFileSync(path.join(pkgDir, 'encoder.json'), 'utf8'));
const bpeLines = fs.readFileSync(path.join(pkgDir, 'vocab.bpe'), 'utf8').split('\n');
const ranks = new Map();
bpeLines.slice(1, bpeLines.length - 1).forEach((line, i) => {
  const [a, b] = line.split(' ');
  ranks.set(a + ' ' + b, i);  // tokens never contain U+0020 (it is Ġ in this alphabet)
});

// bytes_to_unicode(), as in encoder.py.
const byteEncoder = [];
{
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    byteEncoder[b] = String.fromCharCode(printable ? b : 256 + n++);
  }
}
const pat = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

// encoder.py's bpe() with exact pair keys.
function bpeExact(token) {
  let word = token.split('');
  while (word.length > 1) {
    let best = null;
    let bestRank = Infinity;
    for (let i = 0; i + 1 < word.length; i++) {
      const r = ranks.get(word[i] + ' ' + word[i + 1]);
      if (r !== undefined && r < bestRank) {
        bestRank = r;
        best = [word[i], word[i + 1]];
      }
    }
    if (best === null) break;
    const out = [];
    for (let i = 0; i < word.length;) {
      if (i + 1 < word.length && word[i] === best[0] && word[i + 1] === best[1]) {
        out.push(best[0] + best[1]);
        i += 2;
      } else {
        out.push(word[i]);
        i += 1;
      }
    }
    word = out;
  }
  return word;
}

function encodeExact(text) {
  const ids = [];
  const te = new TextEncoder();
  for (const m of text.matchAll(pat)) {
    const token = Array.from(te.encode(m[0]), (b) => byteEncoder[b]).join('');
    for (const t of bpeExact(token)) ids.push(encoder[t]);
  }
  return ids;
}

const decoder = [];
for (const [t, id] of Object.entries(encoder)) decoder[id] = t;
const byteDecoder = new Map(byteEncoder.map((c, b) => [c, b]));
// Hex of the bytes the ids decode to (gpt-3-encoder's decode() drops a leading BOM).
function decodeBytes(ids) {
  const bytes = [];
  for (const id of ids) for (const c of decoder[id]) bytes.push(byteDecoder.get(c));
  return Buffer.from(bytes).toString('hex');
}

// Deterministic PRNG (mulberry32).
function rng(seed) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const texts = [
  // Basics and the four reference prompts' style.
  '', ' ', 'a', 'Hello world', 'Hello, world!', 'Once upon a time', 'The football team',
  'hello world ', 'hello world  ', '  leading spaces', 'trailing spaces   ',
  // Whitespace runs (\s+(?!\S) keeps the last space for the next word).
  'a  b', 'a   b', 'a    b', 'a\tb', 'a\t\tb', 'a \tb', 'a\t b', 'a\nb', 'a\n\nb', 'a \n b',
  'line1\nline2\r\nline3\rline4', '\n', '\n\n\n', ' \n', '\n ', '\t', '\t\t x', 'x\t\t',
  'a\u000bb\u000cc', 'x \u00a0y', 'x\u00a0\u00a0y', 'ideographic\u3000space', 'em\u2003space',
  'nbsp\u202fnarrow', 'line\u2028sep\u2029para', 'bom\ufeffinside', '\ufeffstart', 'nel\u0085x',
  'mixed \t\n \t\n  end', 'spaces before punctuation   !', '   123', 'x   \u00e9t\u00e9',
  // Contractions (case-sensitive in GPT-2).
  "don't", "I'm", "you're", "we've", "she'll", "he'd", "it's", "DON'T", "I'M", "YOU'RE",
  "WE'VE", "SHE'LL", "HE'D", "IT'S", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "''s",
  "rock 'n' roll", "the '90s", "'tis", "o'clock", "isn't it's they're we'll I'd",
  "quote's 'twas'", "a 's b", "x'", "'", "''", "'''ll", "\u2019s curly apostrophe isn\u2019t",
  // Digits and numbers.
  '0', '123', '1234567890', '3.14159', '1,000,000', '$100.00', '2022-07-17', 'v1.2.3',
  'abc123def', '12abc', '\u0661\u0662\u0663 arabic digits', '\u00bd \u00b2 \u2162 \u2460',
  'call 555-0123 now', ' 42 is the answer', 'x^2 + y^2 = z^2',
  // Punctuation, code, URLs.
  '!!!', '...', '?!?!', 'e.g.', '(parenthetical)', '[brackets] {braces}', '"quoted"',
  'def f(x):\n    return x * 2\n', 'if (a && b) { c(); }', 'https://example.com/path?q=1&r=2',
  'user@example.com', '#hashtag @mention', '<|endoftext|>', 'text<|endoftext|>more',
  '----------', '==========', '**bold** _it_', '\\backslash\\', 'a--b', 'C++ and C#',
  // Accented letters, combining marks, other scripts.
  'caf\u00e9', 'cafe\u0301', 'na\u00efve r\u00e9sum\u00e9', '\u00c5ngstr\u00f6m', 'Stra\u00dfe',
  'Z\u00fcrich M\u00fcnchen', '\u0153uvre', 'se\u00f1or', 'a\u0300\u0301\u0302\u0303',
  '\u0928\u092e\u0938\u094d\u0924\u0947', '\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645',
  '\u05e9\u05dc\u05d5\u05dd', '\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!',
  '\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac', '\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35',
  '\u4f60\u597d\uff0c\u4e16\u754c\uff01', '\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8',
  '\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8', '\u4e2d\u6587 English \u6df7\u5408',
  '\u2160\u2161\u2162', '\ud835\udc00\ud835\udc01 math bold', '\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9',
  // Emoji and symbols (4-byte UTF-8, ZWJ sequences, flags, skin tones).
  '\ud83d\ude00', 'I love \ud83c\udfc8 and \u26bd!', '\ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67',
  '\ud83c\uddfa\ud83c\uddf8', '\ud83d\udc4d\ud83c\udffd', '\u2764\ufe0f', 'emoji\ud83d\ude00word',
  '\ud83d\ude00 \ud83d\ude00  \ud83d\ude00', '\u00a9 \u00ae \u2122 \u20ac \u00a3 \u00a5',
  '\u2192 \u21d2 \u2200 \u2203 \u221e', 'zero\u200bwidth', '\ud800\udc00 linear b',
  // Long words and repeats.
  'Supercalifragilisticexpialidocious', 'antidisestablishmentarianism',
  'pneumonoultramicroscopicsilicovolcanoconiosis', 'a'.repeat(100), 'ab'.repeat(60),
  'aaaa', 'aaaaa', '!'.repeat(40), ' '.repeat(30) + 'x', 'the '.repeat(20),
  'Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch',
  'ThisIsCamelCaseIdentifierWithManyParts', 'snake_case_identifier_name',
  'GPT2 tokenizer: byte-level BPE, 50257 tokens.',
];

// The first 50 positive sentences of the football concept dataset.
const footballPath = process.argv[2] ||
    path.join(__dirname, '..', '..', 'shared', 'concepts', 'football.json');
const football = JSON.parse(fs.readFileSync(footballPath, 'utf8'));
const footballSentences = football.sentences.positive.slice(0, 50);

// Random mixtures of the pieces above (deterministic).
const rand = rng(12345);
const pieces = ['the', ' ', '  ', '\t', '\n', "'s", "'ll", '123', '4', '!', ',', '.', '\u00e9',
  'e\u0301', '\u4f60', '\ud83d\ude00', 'ABC', 'x', '\u00a0', '"', "'", '-', '\u3000', '\ufeff'];
const randomTexts = [];
for (let k = 0; k < 40; k++) {
  let s = '';
  const len = 1 + Math.floor(rand() * 12);
  for (let i = 0; i < len; i++) s += pieces[Math.floor(rand() * pieces.length)];
  randomTexts.push(s);
}

// Search short punctuation strings for gpt-3-encoder's comma-aliasing bug.
const aliasTexts = [];
{
  const chars = ['"', ',', "'", ')', '(', ']', '[', '}', '{', '.', '%', '-', '?', '!', ':'];
  const r2 = rng(777);
  for (let tries = 0; tries < 200000 && aliasTexts.length < 6; tries++) {
    let s = '';
    const len = 2 + Math.floor(r2() * 6);
    for (let i = 0; i < len; i++) s += chars[Math.floor(r2() * chars.length)];
    if (!s.includes(',')) continue;
    const a = enc.encode(s);
    const b = encodeExact(s);
    if (JSON.stringify(a) !== JSON.stringify(b)) aliasTexts.push(s);
  }
}

const cases = [];
let differing = 0;
for (const [group, list] of [['handpicked', texts], ['football', footballSentences],
  ['random', randomTexts], ['gpt3_encoder_comma_alias', aliasTexts]]) {
  for (const text of list) {
    const ref = enc.encode(text);
    const exact = encodeExact(text);
    if (decodeBytes(exact) !== Buffer.from(text, 'utf8').toString('hex')) throw new Error('decode mismatch for ' + JSON.stringify(text));
    const c = {group, text, ids: exact};
    if (JSON.stringify(ref) !== JSON.stringify(exact)) {
      c.gpt3_encoder_ids = ref;
      differing++;
    }
    cases.push(c);
  }
}

const out = {
  generator: 'tests/gen_tokenizer_vectors.js with npm gpt-3-encoder@' +
      require(path.join(pkgDir, 'package.json')).version + ', node ' + process.version +
      ', Unicode ' + process.versions.unicode,
  note: '"ids" follow encoder.py (exact merge keys); "gpt3_encoder_ids" is present only where ' +
      'gpt-3-encoder differs because of its comma-joined merge keys',
  cases,
};
const outPath = path.join(__dirname, 'data', 'tokenizer_vectors.json');
fs.mkdirSync(path.dirname(outPath), {recursive: true});
fs.writeFileSync(outPath, JSON.stringify(out, null, 0).replace(/\},\{/g, '},\n{') + '\n');
console.log(`wrote ${cases.length} cases to ${outPath} (${differing} differ from gpt-3-encoder,` +
    ` ${aliasTexts.length} found by the alias search)`);
