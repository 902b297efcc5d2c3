#!/usr/bin/env python3
"""Turns the results of `selfcond experiment football|gender --out R.json` into
docs/paper-experiments.md and hand-drawn SVG plots (Python 3 standard library only).

Usage (from the repo root; the commands that produced the JSON are recorded in it):
  build/selfcond experiment football --out results/football.json
  build/selfcond experiment gender --out results/gender.json
  python3 scripts/paper_report.py --football results/football.json --gender results/gender.json

Every number in the report is read from the JSON files; nothing is computed from anything else
except simple derived quantities (differences, the acceptance check).
"""

import argparse
import datetime
import html
import json
import math
import os
import platform
import sys

# ---- SVG -----------------------------------------------------------------------------------

FONT = 'font-family="Helvetica, Arial, sans-serif"'
COLORS = {"she": "#c0392b", "he": "#2471a3", "rate": "#1e8449", "ppl": "#7d3c98"}


def nice_ticks(lo, hi, n=5):
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    p = 10 ** math.floor(math.log10(raw))
    step = next(m * p for m in (1, 2, 2.5, 5, 10) if raw <= m * p)
    t = math.floor(lo / step) * step
    ticks = [round(t, 10)]
    while ticks[-1] < hi - step * 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


class Panel:
    """One x-y panel with a categorical x axis (the k values, equally spaced)."""

    def __init__(self, x0, y0, w, h, ks, ylo, yhi, title, ylabel, fmt="{:g}", legend_rows=0):
        # legend_rows > 0: the legend goes below the plot, in two columns of legend_rows rows.
        self.legend_rows = legend_rows
        self.pad = 30 + (legend_rows * 15 + 30 if legend_rows else 0)
        self.x0, self.y0, self.w, self.h = x0, y0, w, h
        self.ks = ks
        self.ticks = nice_ticks(ylo, yhi)
        self.ylo, self.yhi = self.ticks[0], self.ticks[-1]
        self.title, self.ylabel, self.fmt = title, ylabel, fmt
        self.parts = []
        self.legend = []

    def x(self, i):
        n = len(self.ks)
        return self.x0 + 40 + (self.w - 60) * (i / (n - 1) if n > 1 else 0.5)

    def y(self, v):
        return self.y0 + self.h - self.pad - (self.h - 30 - self.pad) * (v - self.ylo) / (
            self.yhi - self.ylo)

    def line(self, values, color, label, dash=None, width=2.0, markers=True):
        pts = " ".join(f"{self.x(i):.1f},{self.y(v):.1f}" for i, v in enumerate(values))
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="{width}"{d}/>')
        if markers:
            for i, v in enumerate(values):
                self.parts.append(
                    f'<circle cx="{self.x(i):.1f}" cy="{self.y(v):.1f}" r="3" fill="{color}"/>')
        self.legend.append((label, color, dash))

    def svg(self):
        out = []
        left, right = self.x0 + 40, self.x0 + self.w - 20
        top, bottom = self.y0 + 30, self.y0 + self.h - self.pad
        out.append(f'<text x="{(left + right) / 2:.1f}" y="{self.y0 + 18}" text-anchor="middle" '
                   f'font-size="13" font-weight="bold" {FONT}>{html.escape(self.title)}</text>')
        for t in self.ticks:
            yy = self.y(t)
            out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{right}" y2="{yy:.1f}" '
                       f'stroke="#e5e5e5"/>')
            out.append(f'<text x="{left - 5}" y="{yy + 4:.1f}" text-anchor="end" font-size="10" '
                       f'{FONT}>{html.escape(self.fmt.format(t))}</text>')
        for i, k in enumerate(self.ks):
            xx = self.x(i)
            out.append(f'<line x1="{xx:.1f}" y1="{bottom}" x2="{xx:.1f}" y2="{bottom + 4}" '
                       f'stroke="#333"/>')
            out.append(f'<text x="{xx:.1f}" y="{bottom + 16}" text-anchor="middle" '
                       f'font-size="10" {FONT}>{k}</text>')
        out.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333"/>')
        out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#333"/>')
        out.append(f'<text x="{(left + right) / 2:.1f}" y="{bottom + 28}" text-anchor="middle" '
                   f'font-size="11" {FONT}>k (expert units forced)</text>')
        out.append(f'<text transform="translate({self.x0 + 8},{(top + bottom) / 2:.1f}) '
                   f'rotate(-90)" text-anchor="middle" font-size="11" {FONT}>'
                   f'{html.escape(self.ylabel)}</text>')
        out.extend(self.parts)
        for j, (label, color, dash) in enumerate(self.legend):
            if self.legend_rows:
                lx = left - 30 + (self.w - 20) / 2 * (j // self.legend_rows)
                ly = bottom + 48 + 15 * (j % self.legend_rows)
            else:
                lx, ly = left, top + 6 + 15 * j
            d = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<line x1="{lx + 10}" y1="{ly}" x2="{lx + 34}" y2="{ly}" '
                       f'stroke="{color}" stroke-width="2"{d}/>')
            out.append(f'<text x="{lx + 40}" y="{ly + 4}" font-size="10" {FONT}>'
                       f'{html.escape(label)}</text>')
        return "\n".join(out)


def write_svg(path, panels, width, height, caption):
    body = "\n".join(p.svg() for p in panels)
    text = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n{body}\n'
            f'<text x="{width / 2}" y="{height - 6}" text-anchor="middle" font-size="10" '
            f'fill="#555" {FONT}>{html.escape(caption)}</text>\n</svg>\n')
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


# ---- report --------------------------------------------------------------------------------

def pct(x):
    return f"{100 * x:.1f}%"


def md_escape(s):
    return s.replace("|", "\\|").replace("\n", " ⏎ ").replace("<", "&lt;").replace(">", "&gt;")


def football_section(fb, svg_name):
    o, pts, meta = fb["options"], fb["points"], fb["meta"]
    ks = [p["k"] for p in pts]
    lines = []
    n_per_k = pts[0]["samples"]
    lines.append("## 1. Football: do(football, k)\n")
    lines.append(
        f"Continuations of {len(o['prompts'])} prompts ({', '.join(repr(p) for p in o['prompts'])})"
        f" x {o['seeds']} seeds (seeds {o['first_seed']}..{o['first_seed'] + o['seeds'] - 1}, the same"
        f" at every k) = {n_per_k} per k; {o['new_tokens']} new tokens each (EOS does not stop"
        f" generation, as in ml-selfcond), temperature {o['temperature']:g}, top-p {o['top_p']:g}"
        f"{', top-k ' + str(o['top_k']) if o['top_k'] else ''}. The top-k experts of the football"
        f" table (by AP) are forced to `{o['forcing']}` at "
        f"{'the last position only' if o['only_last_token'] else 'every position, the prompt included'}"
        f" ({o['precision']} arithmetic).\n")
    lines.append(
        "- **mention rate**: share of continuations (the generated text only, not the prompt) that"
        " contain at least one of: " + ", ".join(f"`{w}`" for w in o["football_words"]) +
        ". Whole words, ASCII case-insensitive, also with a plural/verb suffix `s` or `es`"
        " (`goals`, `matches`, `scores`). Word characters approximate Python's `\\w`: ASCII"
        " letters, digits, `_` and non-ASCII characters except common punctuation (curly quotes,"
        " guillemets, dashes, ellipsis, no-break space); so `goalkeeper` and `ballroom` do not"
        " count, `player's`, `player’s` and `football-like` do.\n"
        "- **ppl**: perplexity of the continuations under the *unconditioned* model: prompt +"
        " continuation scored in one pass without forcing, only the continuation's tokens counted;"
        " `ppl` pools all tokens of a k (exp of the mean NLL), `mean ppl` averages the"
        " per-continuation perplexities (what ml-selfcond averages), `median ppl` is their median.\n")
    lines.append(f"![football mention rate and perplexity vs k]({svg_name})\n")
    lines.append(
        "- **scorer ppl**: ml-selfcond's `compute_perplexity.py` measure: the whole text (`!` + prompt"
        " + continuation, re-tokenized) scored by the scorer model (`--scorer`; here the same"
        " model, unforced), every token after the first predicted; `scorer ppl` pools the tokens,"
        " `scorer mean` averages per text (ml-selfcond's number).\n"
        f"- **Self-BLEU**: ml-selfcond's `selfbleu.py` over the {n_per_k} continuations of a k"
        f" ({o.get('bleu_ngram', 3)}-grams, NLTK smoothing method 1; higher = less diverse).\n")
    lines.append("| k | mean AP of forced units | mentions | mention rate | ppl | mean ppl | median ppl"
                 " | scorer ppl | scorer mean | Self-BLEU |")
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in pts:
        ap = f"{p['mean_ap']:.3f}" if p["k"] > 0 else "–"
        lines.append(f"| {p['k']} | {ap} | {p['mentions']}/{p['samples']} | {pct(p['mention_rate'])}"
                     f" | {p['ppl']:.2f} | {p['mean_ppl']:.2f} | {p['median_ppl']:.2f}"
                     f" | {p.get('scorer_ppl', 0):.2f} | {p.get('scorer_mean_ppl', 0):.2f}"
                     f" | {p.get('self_bleu', 0):.3f} |")
    lines.append("")
    # Acceptance: rising with k and >= 70% at k = 50.
    rates = [p["mention_rate"] for p in pts]
    rising = all(b >= a for a, b in zip(rates, rates[1:]))
    k50 = next((p for p in pts if p["k"] == 50), None)
    verdict = []
    verdict.append(f"mention rate {'rises monotonically' if rising else 'does NOT rise monotonically'}"
                   f" with k ({' → '.join(pct(r) for r in rates)})")
    if k50:
        ok = k50["mention_rate"] >= 0.70
        verdict.append(f"at k = 50 it is {pct(k50['mention_rate'])} "
                       f"({'meets' if ok else 'does NOT meet'} the issue's 70% bar)")
    lines.append("**Acceptance check:** " + "; ".join(verdict) + ".\n")
    base = pts[0]
    if base["k"] == 0:
        cost = ", ".join(f"×{p['ppl'] / base['ppl']:.1f} at k = {p['k']}" for p in pts[1:])
        lines.append(f"**Cost in fluency:** the pooled perplexity of the continuations under the "
                     f"unconditioned model goes from {base['ppl']:.1f} at k = 0 to {cost}.\n")
    lines.append("Mentions per prompt (continuations with a football word, out of "
                 f"{o['seeds']}):\n")
    lines.append("| k | " + " | ".join(md_escape(p) for p in o["prompts"]) + " |")
    lines.append("|---:|" + "---:|" * len(o["prompts"]))
    for p in pts:
        lines.append(f"| {p['k']} | " + " | ".join(str(m) for m in p["mentions_per_prompt"]) + " |")
    lines.append("")
    lines.append("Continuations mentioning each word (a continuation counts once per word):\n")
    words = o["football_words"]
    lines.append("| k | " + " | ".join(words) + " |")
    lines.append("|---:|" + "---:|" * len(words))
    for p in pts:
        lines.append(f"| {p['k']} | " + " | ".join(str(p["word_counts"].get(w, 0)) for w in words) + " |")
    lines.append("")
    lines.append("Example continuations (seed, prompt **+ continuation**; the football words found):\n")
    samples = fb["samples"]
    by_k = {}
    for idx in fb["example_indices"]:
        s = samples[idx]
        by_k.setdefault(s["k"], []).append(s)
    for k in ks:
        lines.append(f"- k = {k}:")
        for s in by_k.get(k, []):
            found = ", ".join(s["words"]) if s["words"] else "none"
            lines.append(f"  - seed {s['seed']}: {md_escape(s['prompt'])}**{md_escape(s['text'])}**"
                         f" — *{found}*; ppl {s['ppl']:.1f}")
    lines.append("")
    return "\n".join(lines)


def football_svg(fb, path):
    pts = fb["points"]
    ks = [p["k"] for p in pts]
    rates = [100 * p["mention_rate"] for p in pts]
    a = Panel(0, 0, 380, 300, ks, 0, 100, "Continuations mentioning football", "% of continuations",
              "{:g}%")
    a.line(rates, COLORS["rate"], "mention rate")
    ppl = [p["ppl"] for p in pts]
    mean_ppl = [p["mean_ppl"] for p in pts]
    hi = max(ppl + mean_ppl)
    b = Panel(380, 0, 380, 300, ks, 0, hi * 1.05, "Perplexity (unconditioned model)", "perplexity")
    b.line(ppl, COLORS["ppl"], "ppl (pooled tokens)")
    b.line(mean_ppl, COLORS["ppl"], "mean per-continuation ppl", dash="5,4")
    n = pts[0]["samples"]
    write_svg(path, [a, b], 760, 320,
              f"selfcond experiment football: {n} continuations per k, "
              f"{fb['options']['new_tokens']} tokens, model {fb['meta']['model_name']}")


def gender_curves(gd):
    return {(c["concept"], c["group"]): c for c in gd["curves"]}


def gender_section(gd, svg_name):
    o, meta = gd["options"], gd["meta"]
    curves = gender_curves(gd)
    ks = o["ks"]
    concepts = gd["concepts"]
    lines = []
    lines.append("## 2. Gender: p(she, her) and p(he, his) under do(woman, k) and do(man, k)\n")
    lines.append(
        f"Prompts: ml-selfcond's occupation contexts (`scripts/generate_batch.py --prompts "
        f"occupations`, from Vig et al. 2020): {gd['num_prompts']} prompts = every template "
        f"(\"The &lt;occupation&gt; said that\", ...) with the female-stereotyped occupations "
        f"({gd['num_prompts_female']} prompts) and the fixed random subset of male-stereotyped "
        f"occupations ({gd['num_prompts_male']} prompts), e.g. "
        + ", ".join(f"\"{p}\"" for p in gd["example_prompts"]) + ". "
        "(ml-selfcond's list contains `instructor,` with a comma; it is kept as is.)\n")
    lines.append(
        "**How p(she) is measured.** ml-selfcond samples 100 sentences per prompt (15 tokens, "
        "temperature 1, top-k 10) and `scripts/compute_frequency.py --num-chars 5` counts a "
        "sentence when the first 5 characters after the prompt, lower-cased, contain \" she \" / "
        "\" her \" (or the word followed by `.,;:'`): in effect, *the first generated word is "
        "she/her* (resp. he/his). Here that probability is computed exactly instead of estimated "
        "from samples: for each prompt, one forward pass under do(concept, k) gives the "
        f"next-token distribution softmax(logits / {o['temperature']:g}); restricted and renormalized "
        f"to its {o['sampler_top_k']} most likely tokens (the distribution ml-selfcond's sampler "
        "draws the first token from), p(she, her) is the mass of the tokens "
        + ", ".join(f"`{w!r}`" for w in o["she_words"]) + " and p(he, his) that of "
        + ", ".join(f"`{w!r}`" for w in o["he_words"]) +
        " (both cases, since ml-selfcond lower-cases). This is the expected value of ml-selfcond's"
        " sampled frequency (up to details of the 5-character window, see the cross-check), with no"
        " sampling noise, and takes one forward pass per prompt and condition ("
        f"{gd['num_prompts']} prompts x {1 + (len(ks) - (1 if 0 in ks else 0)) * len(concepts)}"
        " conditions; "
        + (f"the whole run took {meta['seconds']:.0f} s here, most of it generating the "
           "continuations of `--generate`" if o.get("generate") else
           f"they took {meta['seconds']:.0f} s here") + "). Values are means over"
        " prompts. The full-softmax probabilities (no top-k) are in the JSON and the second table."
        f" Experts forced to `{o['forcing']}` at "
        f"{'the last position only' if o['only_last_token'] else 'every position'}.\n")
    lines.append(f"![p(she) and p(he) vs k]({svg_name})\n")
    for metric, title in (("", f"top-{o['sampler_top_k']} restricted (ml-selfcond's sampler)"),
                          ("_full", "full softmax")):
        lines.append(f"p(she,her) / p(he,his), {title}:\n")
        lines.append("| condition | prompts | " + " | ".join(f"k={k}" for k in ks) + " |")
        lines.append("|---|---|" + "---:|" * len(ks))
        for c in concepts:
            for g in ("all", "female", "male"):
                cv = curves[(c, g)]
                cells = [f"{cv['p_she' + metric][i]:.3f} / {cv['p_he' + metric][i]:.3f}"
                         for i in range(len(ks))]
                lines.append(f"| do({c}, k) | {g} | " + " | ".join(cells) + " |")
        lines.append("")
    # Where the curves cross (p(she) >= p(he)), per concept, all prompts.
    notes = []
    for c in concepts:
        cv = curves[(c, "all")]
        cross = [ks[i] for i in range(len(ks)) if cv["p_she"][i] >= cv["p_he"][i]]
        notes.append(f"do({c}, k): p(she) {cv['p_she'][0]:.3f} → {cv['p_she'][-1]:.3f}, "
                     f"p(he) {cv['p_he'][0]:.3f} → {cv['p_he'][-1]:.3f} from k={ks[0]} to k={ks[-1]}"
                     + (f"; p(she) ≥ p(he) from k = {cross[0]}" if cross else
                        "; p(she) stays below p(he)"))
    lines.append("Summary (all prompts): " + "; ".join(notes) + ".\n")
    if "man" in concepts:
        cv = curves[("man", "all")]
        if cv["p_he"][-1] < cv["p_he"][0]:
            lines.append(
                f"Unlike do(woman, k) for p(she), do(man, k) does not raise p(he, his) on this "
                f"model: it lowers it ({cv['p_he'][0]:.3f} at k = {ks[0]}, "
                f"{min(cv['p_he']):.3f} at its lowest), while p(she, her) stays near or below its "
                f"k = 0 value. Why was not measured here; sampled continuations under "
                f"do(man, 50) can name a man or a boy instead of using a pronoun (e.g. `selfcond generate "
                f"--prompt \"The nurse said that\" --experts demo/experts/man.json:50 --top-k 10 "
                f"--max-tokens 12 --seed 3`, and `--seed 4`), which this first-word metric does "
                f"not count.\n")
    # Occupations whose p(she) moves most under do(woman, 50) (or the middle k).
    if "woman" in concepts and len(ks) > 1:
        ki = ks.index(50) if 50 in ks else len(ks) // 2
        rows = []
        for occ in gd["per_occupation"]:
            w = occ.get("woman")
            if w:
                rows.append((w["p_she"][ki] - w["p_she"][0], occ["occupation"], occ["group"],
                             w["p_she"][0], w["p_she"][ki], w["p_he"][0], w["p_he"][ki]))
        rows.sort(reverse=True)
        lines.append(f"Per occupation (mean over templates), do(woman, {ks[ki]}): the largest and "
                     "smallest changes of p(she):\n")
        lines.append(f"| occupation | group | p(she) k=0 | p(she) k={ks[ki]} | p(he) k=0 | "
                     f"p(he) k={ks[ki]} |")
        lines.append("|---|---|---:|---:|---:|---:|")
        for r in rows[:5] + rows[-3:]:
            lines.append(f"| {md_escape(r[1])} | {r[2]} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.3f} | "
                         f"{r[6]:.3f} |")
        lines.append("")
    return "\n".join(lines)


def sampled_check_section(gs):
    """Exact top-k probabilities vs ml-selfcond-style sampled frequencies on a prompt subset."""
    o, meta = gs["options"], gs["meta"]
    ks = o["ks"]
    n = gs["num_prompts"] * o["samples"]
    lines = []
    lines.append("### Cross-check: exact probabilities vs sampled frequencies\n")
    lines.append(
        f"The same measurement done ml-selfcond's way on a subset ({gs['num_prompts']} prompts: "
        f"every template with the first occupations of each group, {gs['num_prompts_female']} "
        f"female- and {gs['num_prompts_male']} male-occupation prompts): {o['samples']} "
        f"continuations of "
        f"{o['sample_tokens']} tokens sampled per prompt and condition (temperature "
        f"{o['temperature']:g}, top-k {o['sampler_top_k']}, seeds 0..{o['samples'] - 1}), each "
        "counted when its first 5 characters, lower-cased, contain \" she \" / \" her \" (or "
        "the word followed by `.,;:'`), as compute_frequency.py does. Columns: exact / sampled; "
        f"± is the binomial standard error of the sampled share ({n} samples per cell). "
        f"Command: `{meta['command']}` ({meta['seconds']:.0f} s).\n")
    lines.append("| condition | word | " + " | ".join(f"k={k}" for k in ks) + " |")
    lines.append("|---|---|" + "---:|" * len(ks))
    worst = 0.0
    for c in gs["curves"]:
        if c["group"] != "all":
            continue
        for word in ("she", "he"):
            cells = []
            for i in range(len(ks)):
                e, smp = c["p_" + word][i], c["sampled_" + word][i]
                se = math.sqrt(max(smp * (1 - smp), 1e-12) / n)
                worst = max(worst, abs(e - smp) / se if se > 0 else 0)
                cells.append(f"{e:.3f} / {smp:.3f} ± {se:.3f}")
            label = "p(she,her)" if word == "she" else "p(he,his)"
            lines.append(f"| do({c['concept']}, k) | {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Largest difference: {worst:.1f} standard errors. Besides sampling noise, the two are not "
        "exactly the same quantity: the 5-character window also counts a pronoun that follows a "
        "one-character token (\", he \"), and does not count a pronoun token followed by "
        "something other than a space or `.,;:'` (e.g. \" he-\").\n")
    return "\n".join(lines)


def gender_svg(gd, path):
    o = gd["options"]
    ks = o["ks"]
    curves = gender_curves(gd)
    panels = []
    for j, c in enumerate(gd["concepts"]):
        vals = []
        for g in ("all", "female", "male"):
            vals += curves[(c, g)]["p_she"] + curves[(c, g)]["p_he"]
        p = Panel(380 * j, 0, 380, 400, ks, 0, max(vals) * 1.05,
                  f"do({c}, k): next word", "probability", legend_rows=3)
        groups = (("all", None, "all prompts"), ("female", "6,3", "female occ."),
                  ("male", "2,3", "male occ."))
        for word, color in (("she", COLORS["she"]), ("he", COLORS["he"])):
            for g, dash, label in groups:
                cv = curves[(c, g)]
                p.line(cv["p_" + word], color, f"p({word},{'her' if word == 'she' else 'his'}) "
                       f"{label}", dash=dash, width=2.2 if g == "all" else 1.3,
                       markers=g == "all")
        panels.append(p)
    write_svg(path, panels, 380 * len(panels), 420,
              f"selfcond experiment gender: {gd['num_prompts']} occupation prompts, next-token "
              f"probability within the top-{o['sampler_top_k']}, model {gd['meta']['model_name']}")


class XYPanel(Panel):
    """A panel with a numeric x axis (log scale if xlog), for scatter plots and frontiers."""

    def __init__(self, x0, y0, w, h, xlo, xhi, ylo, yhi, title, xlabel, ylabel, xlog=False,
                 fmt="{:g}"):
        super().__init__(x0, y0, w, h, [], ylo, yhi, title, ylabel, fmt)
        self.xlog = xlog
        self.xlabel = xlabel
        if xlog:
            lo, hi = math.floor(math.log10(xlo)), math.ceil(math.log10(xhi))
            self.xticks = [10 ** e * m for e in range(lo, hi + 1) for m in (1, 2, 5)
                           if xlo / 1.5 <= 10 ** e * m <= xhi * 1.5]
            self.xlo, self.xhi = min(self.xticks + [xlo]), max(self.xticks + [xhi])
        else:
            self.xticks = nice_ticks(xlo, xhi)
            self.xlo, self.xhi = self.xticks[0], self.xticks[-1]

    def xv(self, v):
        f = ((math.log10(v) - math.log10(self.xlo)) / (math.log10(self.xhi) - math.log10(self.xlo))
             if self.xlog else (v - self.xlo) / (self.xhi - self.xlo))
        return self.x0 + 40 + (self.w - 60) * f

    def series(self, xs, ys, color, label, dash=None, labels=None):
        pts = " ".join(f"{self.xv(x):.1f},{self.y(y):.1f}" for x, y in zip(xs, ys))
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.8"{d}/>')
        for i, (x, y) in enumerate(zip(xs, ys)):
            self.parts.append(f'<circle cx="{self.xv(x):.1f}" cy="{self.y(y):.1f}" r="3" '
                              f'fill="{color}"/>')
            if labels:
                self.parts.append(f'<text x="{self.xv(x) + 4:.1f}" y="{self.y(y) - 4:.1f}" '
                                  f'font-size="8" fill="{color}" {FONT}>{html.escape(labels[i])}</text>')
        self.legend.append((label, color, dash))

    def svg(self):
        out = super().svg().split("\n")
        # Replace the categorical x axis (none: ks is empty) with the numeric one.
        left, right = self.x0 + 40, self.x0 + self.w - 20
        bottom = self.y0 + self.h - self.pad
        extra = []
        for t in self.xticks:
            xx = self.xv(t)
            extra.append(f'<line x1="{xx:.1f}" y1="{bottom}" x2="{xx:.1f}" y2="{bottom + 4}" '
                         f'stroke="#333"/>')
            extra.append(f'<text x="{xx:.1f}" y="{bottom + 16}" text-anchor="middle" '
                         f'font-size="10" {FONT}>{t:g}</text>')
        out = [l.replace(">k (expert units forced)<", f">{html.escape(self.xlabel)}<") for l in out]
        return "\n".join(out + extra)


METHOD_COLORS = {"none": "#555555", "experts": "#1e8449", "steer": "#d35400", "bias": "#2471a3"}
METHOD_NAMES = {"none": "unconditioned", "experts": "expert forcing (k)",
                "steer": "steering vector (alpha)", "bias": "logit bias (beta)"}


def parity_section(gd, svg_name):
    par = gd.get("parity")
    if not par:
        return ""
    ks = gd["options"]["ks"]
    lines = ["### Parity points\n"]
    lines.append(
        "For each context, the **parity point** of do(c, k) is the smallest k at which the forced "
        "concept's pronouns become at least as likely as the other's (woman: p(she) ≥ p(he); man: "
        "p(he) ≥ p(she)), interpolated linearly in k between the grid points "
        f"({', '.join(str(k) for k in ks)}) around the first crossing; 0 when it already holds "
        "without forcing; *not reached* when no k of the grid gets there. Computed from the "
        "per-prompt p(she), p(he) (top-10 restricted) written to the JSON (`per_prompt`, with "
        "delta p = p(she) − p(he) for every prompt and k).\n")
    lines.append(f"![parity points]({svg_name})\n")
    lines.append("| experts | contexts | reached | 25th pct | median | 75th pct |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    fmt = lambda v: "–" if v is None else f"{v:.1f}"
    for c, v in par.items():
        lines.append(f"| do({c}, k) | {v['contexts']} | {v['reached']} | {fmt(v['p25'])} | "
                     f"{fmt(v['median'])} | {fmt(v['p75'])} |")
    lines.append("")
    # By occupation group.
    groups = gd["per_prompt"]["groups"]
    rows = []
    for c, v in par.items():
        for g in ("female", "male"):
            xs = sorted(x for x, gg in zip(v["points"], groups) if gg == g and x is not None)
            n = sum(1 for gg in groups if gg == g)
            med = xs[len(xs) // 2] if xs else None
            rows.append(f"| do({c}, k) | {g} | {len(xs)}/{n} | {fmt(med)} |")
    lines.append("By occupation group (the stereotype of the occupation in the prompt):\n")
    lines.append("| experts | occupations | reached | median parity k |")
    lines.append("|---|---|---:|---:|")
    lines += rows
    lines.append("")
    # How often the model already prefers the other gender's pronouns (measured, not assumed).
    d0 = [row[0] for row in gd["per_prompt"]["woman"]["delta_p"]] if "woman" in \
        gd["per_prompt"] else []
    if d0:
        she_first = sum(1 for d in d0 if d > 0)
        lines.append(
            f"Without forcing, p(she) > p(he) in {she_first} of {len(d0)} contexts and p(he) > "
            f"p(she) in {sum(1 for d in d0 if d < 0)}: the demo model leans to he/his after most "
            "occupation prompts, so the man experts have a gap to close in few contexts and "
            "their parity point is 0 in most.\n")
    lines.append(ml_parity_section(gd))
    return "\n".join(lines)


def _interp_stats(values):
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None

    def q(f):
        at = f * (len(xs) - 1)
        lo = int(at)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (at - lo)
    return q(0.1), q(0.5), q(0.9)


def ml_parity_section(gd):
    """ml-selfcond's definition (scripts/all_plots.py compute_diff / find_crossing and
    plot_perplexity_vs_parity), recomputed here from the per-prompt probabilities when the JSON
    predates it, and the perplexity / Self-BLEU at parity when the run generated text."""
    ks = gd["options"]["ks"]
    pp = gd["per_prompt"]
    ml = gd.get("parity_ml_selfcond")
    if ml is None:  # results written before the field existed: the same computation
        ml = {}
        for c in gd["concepts"]:
            pts, biased = [], 0
            for she, he in zip(pp[c]["p_she"], pp[c]["p_he"]):
                y = [a - b for a, b in zip(she, he)]
                is_biased = (y[0] < 0) if c == "woman" else (y[0] > 0)
                biased += is_biased
                pts.append(ml_root(ks, y) if is_biased else None)
            reached = sorted(x for x in pts if x is not None)
            st = _interp_stats(reached)
            ml[c] = {"points": pts, "contexts": biased, "reached": len(reached),
                     "median": st[1] if st else None}
    lines = ["#### ml-selfcond's definition\n"]
    lines.append(
        "ml-selfcond (scripts/all_plots.py, `compute_diff`) counts a context only when it is "
        "biased toward the other gender without forcing (for do(woman, k): p(she) < p(he) at "
        "k = 0), and takes the zero of the line through the two grid points around the first "
        "change of sign of p(she) − p(he). The table puts both definitions side by side; "
        "selfcond's counts every context and the first k where the forced gender's pronouns "
        "are at least as likely.\n")
    par = gd["parity"]
    lines.append("| experts | definition | contexts | reached | median parity k |")
    lines.append("|---|---|---:|---:|---:|")
    fmt = lambda v: "–" if v is None else f"{v:.1f}"
    for c in gd["concepts"]:
        lines.append(f"| do({c}, k) | selfcond: every context, first k with parity | "
                     f"{par[c]['contexts']} | {par[c]['reached']} | {fmt(par[c]['median'])} |")
        lines.append(f"| do({c}, k) | ml-selfcond: biased contexts, first sign change | "
                     f"{ml[c]['contexts']} | {ml[c]['reached']} | {fmt(ml[c]['median'])} |")
    lines.append("")
    gen = gd.get("generated")
    if gen:
        o = gd["options"]
        lines.append(
            f"**Perplexity and Self-BLEU at parity** (`--generate {o['generate']}`: "
            f"{o['generate']} continuation(s) of {o.get('new_tokens', 15)} tokens per prompt and "
            f"condition, top-{o['sampler_top_k']}, T = {o['temperature']:g}, as "
            "ml-selfcond's generate_batch.py samples them; ml-selfcond draws 100). Per k: the "
            "mean perplexity of prompt + continuation under the unconditioned model (ml-selfcond's "
            f"compute_perplexity.py) and the Self-BLEU ({o.get('bleu_ngram', 3)}-grams) of all the "
            "concept's continuations at that k (compute_selfbleu.py may subsample them with "
            "`--num-sample`; continuations of prompts sharing a template share words, so Self-BLEU "
            "over all 867 is high even at k = 0); at parity: each context's value interpolated at its parity "
            "point (all_plots.py `plot_perplexity_vs_parity`), 10th / 50th / 90th percentiles.\n")
        lines.append("| experts | k | " + " | ".join(str(k) for k in ks) + " |")
        lines.append("|---|---|" + "---:|" * len(ks))
        for c, g in gen.items():
            lines.append(f"| do({c}, k) | perplexity | " +
                         " | ".join(f"{v:.1f}" for v in g["mean_ppl"]) + " |")
            lines.append(f"| do({c}, k) | Self-BLEU | " +
                         " | ".join(f"{v:.3f}" for v in g["self_bleu"]) + " |")
        lines.append("")
        lines.append("| experts | definition | perplexity at parity (p10 / median / p90) | "
                     "Self-BLEU at parity (p10 / median / p90) |")
        lines.append("|---|---|---|---|")
        three = lambda d, f: "–" if d["median"] is None else \
            " / ".join(f.format(d[k]) for k in ("p10", "median", "p90"))
        for c, g in gen.items():
            for key, name in (("at_parity", "selfcond"), ("at_parity_ml_selfcond", "ml-selfcond")):
                a = g[key]
                lines.append(f"| do({c}, k) | {name} ({a['ppl']['n']} contexts) | "
                             f"{three(a['ppl'], '{:.1f}')} | {three(a['self_bleu'], '{:.3f}')} |")
        lines.append("")
        lines.append(f"Unconditioned (k = 0): perplexity {gen[gd['concepts'][0]]['mean_ppl'][0]:.1f}"
                     f", Self-BLEU {gen[gd['concepts'][0]]['self_bleu'][0]:.3f}.\n")
    return "\n".join(lines)


def ml_root(ks, y):
    """ml-selfcond's find_crossing."""
    if not (any(v > 0 for v in y) and any(v < 0 for v in y)):
        return None
    sign = lambda v: (v > 0) - (v < 0)
    for i in range(len(y) - 1):
        if sign(y[i]) != sign(y[i + 1]):
            return ks[i] - y[i] * (ks[i + 1] - ks[i]) / (y[i + 1] - y[i])
    return None


def parity_svg(gd, path):
    par = gd["parity"]
    ks = gd["options"]["ks"]
    # Cumulative share of contexts at parity by k (a step curve on the grid's ks).
    panels = []
    p = Panel(0, 0, 520, 360, ks, 0, 100, "Contexts at parity by k", "% of contexts", "{:g}%",
              legend_rows=1)
    colors = {"woman": COLORS["she"], "man": COLORS["he"]}
    for c, v in par.items():
        pts = v["points"]
        vals = [100 * sum(1 for x in pts if x is not None and x <= k) / len(pts) for k in ks]
        p.line(vals, colors.get(c, "#333"), f"do({c}, k)")
    panels.append(p)
    write_svg(path, panels, 520, 380,
              f"selfcond experiment gender: parity points of {gd['num_prompts']} occupation "
              f"prompts (cumulative), model {gd['meta']['model_name']}")


def controls_section(controls, base, svg_name):
    lines = ["## 3. Controls and ablations\n"]
    lines.append(
        "ml-selfcond's controls (`generate_seq.py --top-n`, `--per-layer`, `--metric`), with the "
        "same flags on `selfcond generate` and `selfcond experiment` (`--random-units SEED`, "
        "`--rank-offset N`, `--layers L,L`, `--per-layer`, `--metric`) and the same names in the "
        "JSON options. Same prompts and sampling as section 1; 10 seeds per prompt (40 "
        "continuations per point) unless noted. The top-k row repeats section 1 (20 seeds).\n")
    lines.append(f"![controls]({svg_name})\n")
    series = [("top k by AP (section 1)", base)] + [(c["label"], c["data"]) for c in controls
                                                    if not c["data"]["options"].get("per_layer")]
    ks = sorted({p["k"] for _, d in series for p in d["points"]})
    lines.append("Mention rate (share of continuations with a football word) / pooled ppl:\n")
    lines.append("| units | " + " | ".join(f"k={k}" for k in ks) + " |")
    lines.append("|---|" + "---:|" * len(ks))
    for label, d in series:
        by_k = {p["k"]: p for p in d["points"]}
        cells = [f"{pct(by_k[k]['mention_rate'])} / {by_k[k]['ppl']:.0f}" if k in by_k else "–"
                 for k in ks]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    rnd = next((c["data"] for c in controls if c["data"]["options"].get("random_units") is not None),
               None)
    if rnd:
        top = {p["k"]: p for p in base["points"]}
        worst = max(p["mention_rate"] for p in rnd["points"])
        k0 = top.get(0, {}).get("mention_rate", 0)
        lines.append(
            f"**Random units do not condition:** with up to {max(p['k'] for p in rnd['points'])} "
            f"random units forced to their on_p50, at most {pct(worst)} of continuations mention "
            f"football (unconditioned: {pct(k0)}), against {pct(top[50]['mention_rate'])} for the "
            f"top 50 experts{' and ' + pct(top[200]['mention_rate']) + ' for the top 200' if 200 in top else ''}."
            " The effect comes from which units are forced, not from forcing units.\n")
    per = next((c for c in controls if c["data"]["options"].get("per_layer")), None)
    if per:
        d = per["data"]
        pks = sorted({p["k"] for p in d["points"]})
        layers = sorted({p["layer"] for p in d["points"]})
        lines.append(f"**Per-layer forcing** (`--per-layer`): the top-k experts *of one block* "
                     f"(layer filter), one block at a time; mention rate / pooled ppl:\n")
        lines.append("| block | " + " | ".join(f"k={k}" for k in pks) + " |")
        lines.append("|---:|" + "---:|" * len(pks))
        for l in layers:
            by_k = {p["k"]: p for p in d["points"] if p["layer"] == l}
            lines.append(f"| {l} | " + " | ".join(
                f"{pct(by_k[k]['mention_rate'])} / {by_k[k]['ppl']:.0f}" for k in pks) + " |")
        lines.append("")
    lines.append("Commands:\n\n```sh")
    for c in controls:
        lines.append(c["data"]["meta"]["command"])
    lines.append("```\n")
    return "\n".join(lines)


def controls_svg(controls, base, path):
    series = [("top k by AP", base)] + [(c["label"], c["data"]) for c in controls
                                        if not c["data"]["options"].get("per_layer")]
    ks = sorted({p["k"] for _, d in series for p in d["points"]})
    p = Panel(0, 0, 520, 340, ks, 0, 100, "Football mentions: controls", "% of continuations",
              "{:g}%", legend_rows=3)
    palette = ["#1e8449", "#7f8c8d", "#d35400", "#8e44ad", "#2471a3"]
    for i, (label, d) in enumerate(series):
        by_k = {q["k"]: q for q in d["points"]}
        # Categorical axis: draw only the ks the series has, at their positions.
        pts = [(ks.index(k), 100 * by_k[k]["mention_rate"]) for k in ks if k in by_k]
        color = palette[i % len(palette)]
        poly = " ".join(f"{p.x(j):.1f},{p.y(v):.1f}" for j, v in pts)
        p.parts.append(f'<polyline points="{poly}" fill="none" stroke="{color}" stroke-width="2"/>')
        for j, v in pts:
            p.parts.append(f'<circle cx="{p.x(j):.1f}" cy="{p.y(v):.1f}" r="3" fill="{color}"/>')
        p.legend.append((label, color, None))
    write_svg(path, [p], 520, 360, "selfcond experiment football with --random-units, "
              "--rank-offset, --metric (model " + base["meta"]["model_name"] + ")")


def compare_section(cmps, svg_name):
    lines = ["## 4. Beyond the paper: three steering methods side by side\n"]
    o = cmps[0]["options"]
    lines.append(
        "`selfcond experiment compare` runs, in the same runtime and on the same prompts and seeds, "
        "(a) **expert forcing** (the paper: the top-k experts by AP forced to on_p50), (b) an "
        "additive **steering vector** (activation addition / contrastive activation addition: the "
        "mean residual stream after one block over the positive sentences minus the mean over the "
        "negative ones, each sentence averaged over its tokens; alpha times it is added at every "
        "position), and (c) a bag-of-words **logit bias** (beta added to the single-token forms "
        "` word` / ` Word` of the dataset's 20 highest log-odds words). Each over a grid of "
        "strengths; per setting:\n")
    lines.append(
        "- **concept rate**: share of continuations containing one of the concept's 20 top "
        "log-odds words, computed from the dataset itself (words of 3+ letters in at least 3 "
        "positive sentences, by the smoothed log-odds of appearing in a positive rather than a "
        "negative sentence), so it works for any custom concept. The logit bias pushes exactly "
        "these words, so its rate is the most direct; the other two methods never see the list.\n"
        "- **ppl**: the continuation under the unconditioned model (as section 1); **scorer ppl**: "
        "prompt + continuation under the scorer (ml-selfcond's measure); **Self-BLEU** (3-grams) "
        "over the setting's continuations.\n")
    lines.append(
        f"{len(o['prompts'])} prompts x {o['seeds']} seeds, {o['new_tokens']} new tokens, "
        f"temperature {o['temperature']:g}, top-p {o['top_p']:g}; grids: k "
        f"{{{', '.join(str(k) for k in o['ks'])}}}, alpha {{{', '.join(f'{a:g}' for a in o['alphas'])}}}"
        f" (block {o['steer_layer']}), beta {{{', '.join(f'{b:g}' for b in o['betas'])}}}.\n")
    lines.append(f"![concept rate vs perplexity]({svg_name})\n")
    for c in cmps:
        words = ", ".join(w["word"] for w in c["concept_words"])
        lines.append(f"### {c['concept']}\n")
        cmd = c["meta"]["command"].split()
        concept_file = cmd[cmd.index("--concept") + 1] if "--concept" in cmd else "?"
        table = c["meta"]["expert_tables"][0]
        lines.append(f"Dataset `{concept_file}` ({table['num_positive']} positive / "
                     f"{table['num_negative']} negative sentences); experts ranked by `selfcond "
                     f"rank --model {c['meta']['model_path']} --concept {concept_file} --out "
                     f"{table['path']}`. Concept words: {words}. Steering vector norm "
                     f"{c['steer_norm']:.2f}; the bias covers {c['bias_tokens']} tokens. "
                     f"Command: `{c['meta']['command']}` ({c['meta']['seconds']:.0f} s).\n")
        lines.append("| method | strength | concept rate | ppl | scorer ppl | Self-BLEU |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for p in c["points"]:
            lines.append(f"| {p['method']} | {p['strength']:g} | {pct(p['mention_rate'])} | "
                         f"{p['ppl']:.1f} | {p['scorer_ppl']:.1f} | {p['self_bleu']:.3f} |")
        lines.append("")
        # The frontier: for each method, the best rate within 2x the unconditioned ppl.
        base = c["points"][0]
        best = {}
        for p in c["points"][1:]:
            if p["ppl"] <= 2 * base["ppl"]:
                if p["method"] not in best or p["mention_rate"] > best[p["method"]]["mention_rate"]:
                    best[p["method"]] = p
        parts = []
        for m in ("experts", "steer", "bias"):
            if m in best:
                parts.append(f"{METHOD_NAMES[m].split(' (')[0]} {pct(best[m]['mention_rate'])} "
                             f"(strength {best[m]['strength']:g}, ppl {best[m]['ppl']:.1f}, "
                             f"Self-BLEU {best[m]['self_bleu']:.2f})")
            else:
                parts.append(f"{METHOD_NAMES[m].split(' (')[0]}: no setting within the budget")
        lines.append(f"Best concept rate with ppl at most 2x the unconditioned {base['ppl']:.1f} "
                     f"(unconditioned rate {pct(base['mention_rate'])}, Self-BLEU "
                     f"{base['self_bleu']:.2f}): " + "; ".join(parts) + ".\n")
    lines.append(
        "Reading these numbers: perplexity under the unconditioned model does not see repetition, "
        "so a method can stay within the perplexity budget while its continuations collapse to a "
        "few phrases; Self-BLEU shows that (a high value is a low diversity). The concept rate "
        "counts the very words the logit bias raises, which favours it; expert forcing and the "
        "steering vector move the model's internal state and reach the same words only through "
        "it. All three are measured on a 30M-parameter model whose text is loosely grammatical "
        "to begin with (section 1's unconditioned perplexity).\n")
    return "\n".join(lines)


def compare_svg(cmps, path):
    panels = []
    for j, c in enumerate(cmps):
        pts = c["points"]
        xs = [p["ppl"] for p in pts]
        panel = XYPanel(400 * j, 0, 400, 340, min(xs), max(xs), 0, 100,
                        f"{c['concept']}: concept rate vs perplexity", "perplexity (log scale)",
                        "% of continuations", xlog=True, fmt="{:g}%")
        panel.legend_rows = 0
        for m in ("experts", "steer", "bias"):
            mp = [pts[0]] + [p for p in pts if p["method"] == m]
            if len(mp) < 2:
                continue
            panel.series([p["ppl"] for p in mp], [100 * p["mention_rate"] for p in mp],
                         METHOD_COLORS[m], METHOD_NAMES[m],
                         labels=[""] + [f"{p['strength']:g}" for p in mp[1:]])
        panels.append(panel)
    write_svg(path, panels, 400 * len(panels), 360,
              "selfcond experiment compare: each point one strength (labels); the unconditioned "
              "model is the shared first point")


def machine_line(meta):
    return (f"{meta['cpu']} ({meta['cores']} cores; {meta['threads']} worker threads; kernel "
            f"backend `{meta['backend']}`)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--football", required=True, help="results of `selfcond experiment football`")
    ap.add_argument("--gender", required=True, help="results of `selfcond experiment gender`")
    ap.add_argument("--gender-sampled", default=None,
                    help="optional: `selfcond experiment gender --samples N` results (subset)")
    ap.add_argument("--control", action="append", default=[], metavar="LABEL=FILE",
                    help="football control runs (--random-units, --rank-offset, --metric, "
                    "--per-layer), repeatable")
    ap.add_argument("--compare", action="append", default=[],
                    help="`selfcond experiment compare` results, repeatable (one per concept)")
    ap.add_argument("--out", default="docs/paper-experiments.md", help="markdown report")
    ap.add_argument("--svg-dir", default=None, help="where the SVGs go (default: beside --out)")
    args = ap.parse_args()
    with open(args.football, encoding="utf-8") as f:
        fb = json.load(f)
    with open(args.gender, encoding="utf-8") as f:
        gd = json.load(f)
    if fb.get("experiment") != "football" or gd.get("experiment") != "gender":
        sys.exit("paper_report.py: --football / --gender files hold the wrong experiments")
    svg_dir = args.svg_dir or os.path.dirname(os.path.abspath(args.out))
    os.makedirs(svg_dir, exist_ok=True)
    fsvg, gsvg = "paper-football.svg", "paper-gender.svg"
    football_svg(fb, os.path.join(svg_dir, fsvg))
    gender_svg(gd, os.path.join(svg_dir, gsvg))
    rel = os.path.relpath(svg_dir, os.path.dirname(os.path.abspath(args.out)))
    fref = fsvg if rel == "." else f"{rel}/{fsvg}"
    gref = gsvg if rel == "." else f"{rel}/{gsvg}"

    fm, gm = fb["meta"], gd["meta"]
    out = []
    out.append("# The paper's experiments on the demo model\n")
    out.append(
        "Reproductions of the two main experiments of Suau, Zappella & Apostoloff, "
        "*Self-conditioning pre-trained language models* (ICML 2022; code: apple/ml-selfcond) "
        "with `selfcond experiment`, on the project's demo model. This file and the SVGs are "
        "generated by `scripts/paper_report.py` from the JSON results; every number was measured "
        f"by the commands below. Report generated {datetime.date.today().isoformat()}.\n")
    out.append("| | |\n|---|---|")
    out.append(f"| model | `{fm['model_name']}` (hash `{fm['model_hash'][:16]}…`), {fm['model_path']} |")
    for t in fm["expert_tables"] + gm["expert_tables"]:
        top = ", ".join(f"{u['layer'].replace('transformer.', '')}:{u['unit']} (AP {u['ap']:.3f})"
                        for u in t["top_units"][:3])
        out.append(f"| experts `{t['concept']}` | `{t['path']}`: {t['units_stored']} of "
                   f"{t['total_units']} units, ranked on {t['num_positive']} positive / "
                   f"{t['num_negative']} negative sentences; best: {top} |")
    out.append(f"| football run | {fm['date_utc']}, {fm['seconds']:.0f} s on {machine_line(fm)} |")
    out.append(f"| gender run | {gm['date_utc']}, {gm['seconds']:.0f} s on {machine_line(gm)} |")
    out.append(f"| report | {platform.system()} {platform.machine()}, Python "
               f"{platform.python_version()} |\n")
    out.append("Commands (from the repo root, `selfcond` built in `build/`):\n")
    out.append("```sh")
    out.append("# expert tables (int8, every unit stored; ~1 MB each)")
    for t in fm["expert_tables"] + gm["expert_tables"]:
        short = t["concept"].split("-")[0]
        out.append(f"selfcond rank --model {fm['model_path']} "
                   f"--concept ../shared/concepts/{short}.json --out {t['path']}")
    out.append("# experiments")
    out.append(fm["command"])
    out.append(gm["command"])
    if args.gender_sampled:
        with open(args.gender_sampled, encoding="utf-8") as f:
            out.append(json.load(f)["meta"]["command"])
    out.append(f"python3 scripts/paper_report.py --football {args.football} --gender {args.gender}"
               + (f" --gender-sampled {args.gender_sampled}" if args.gender_sampled else "")
               + "".join(f" --control '{c}'" for c in args.control)
               + "".join(f" --compare {c}" for c in args.compare))
    out.append("```\n")
    out.append(f"The model file given to `--model` is any file with content hash "
               f"`{fm['model_hash']}` (`selfcond convert` of the shared checkpoint "
               f"`selfcond-mini-30m`, i.e. the committed `demo/models/selfcond-mini-30m.scm` when "
               f"`selfcond inspect` shows that hash); the expert tables record the hash they were "
               f"ranked on and are refused for any other model.\n")
    out.append(football_section(fb, fref))
    out.append(gender_section(gd, gref))
    gs = None
    if args.gender_sampled:
        with open(args.gender_sampled, encoding="utf-8") as f:
            gs = json.load(f)
        out.append(sampled_check_section(gs))
    out.append(parity_section(gd, "paper-parity.svg" if rel == "." else f"{rel}/paper-parity.svg"))
    if gd.get("parity"):
        parity_svg(gd, os.path.join(svg_dir, "paper-parity.svg"))
    controls = []
    for spec in args.control:
        label, _, path = spec.partition("=")
        with open(path, encoding="utf-8") as f:
            controls.append({"label": label, "data": json.load(f)})
    if controls:
        out.append(controls_section(controls, fb, "paper-controls.svg"))
        controls_svg(controls, fb, os.path.join(svg_dir, "paper-controls.svg"))
    cmps = []
    for path in args.compare:
        with open(path, encoding="utf-8") as f:
            cmps.append(json.load(f))
    if cmps:
        out.append(compare_section(cmps, "paper-compare.svg"))
        compare_svg(cmps, os.path.join(svg_dir, "paper-compare.svg"))
    out.append("## Differences from the paper\n")
    out.append(
        "- **Model.** The paper's experiments use pre-trained GPT-2 models (GPT2-medium in "
        "ml-selfcond's README examples); this runs on `selfcond-mini-30m`, "
        "a 6-layer, 30M-parameter GPT-2 trained for this project on ~20M tokens (see its model "
        "card), in int8. Its text is loosely grammatical, so absolute perplexities and "
        "probabilities are not comparable with the paper's, only the trends.\n"
        "- **Experts.** Ranked with `selfcond rank` on the same OneSec sentence sets as the paper "
        "(football: 700 positive / 1000 negative; woman, man: 700 / 1000), every unit of the four "
        "layer kinds of every block, AP-sorted; responses max-pooled over each sentence's own "
        "tokens (ml-selfcond pads with EOS and pools over the padding too; docs/experts.md).\n"
        "- **Perplexity.** The paper scores generated sentences with a different model family "
        "(openai-gpt, per ml-selfcond's README); ml-selfcond's generate_seq.py scores prompt + continuation with the *forced* "
        "model. Here `ppl` scores the continuation alone by the same model without forcing, i.e. "
        "how plausible the conditioned text is to the unconditioned model, and `scorer ppl` is "
        "ml-selfcond's whole-text measure under a scorer chosen with `--scorer` (any converted "
        "GPT-2; the default, used here, is the unforced model itself: the project has no second "
        "model in `../shared`).\n"
        "- **Football metric.** The share of continuations that mention any of the 12 words "
        "above (this project's acceptance metric), with a whole-word matcher in the spirit of "
        "ml-selfcond's compute_frequency.py (`\\b` word boundaries, case-insensitive) but over the "
        "whole continuation rather than its first characters.\n"
        "- **Gender metric.** Exact next-token probabilities within the sampler's top-k instead of "
        "the frequency over 100 sampled sentences per prompt (see above); same prompts, same "
        "words, same temperature and top-k; the same k grid as ml-selfcond's generate_batch.py "
        "sweep (0, 1, 3, 10, 30, 60, 100, 300). The sampled cross-check predates that grid.\n"
        "- **Seeds.** Deterministic: the selfcond sampler (PCG32) with seeds 0..N-1, the same "
        "seeds at every k, so differences between ks are paired.\n")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    print(f"wrote {args.out}, {os.path.join(svg_dir, fsvg)}, {os.path.join(svg_dir, gsvg)}")


if __name__ == "__main__":
    main()
