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
    lines.append("| k | mean AP of forced units | mentions | mention rate | ppl | mean ppl | median ppl |")
    lines.append("|---:|---:|---:|---:|---:|---:|---:|")
    for p in pts:
        ap = f"{p['mean_ap']:.3f}" if p["k"] > 0 else "–"
        lines.append(f"| {p['k']} | {ap} | {p['mentions']}/{p['samples']} | {pct(p['mention_rate'])}"
                     f" | {p['ppl']:.2f} | {p['mean_ppl']:.2f} | {p['median_ppl']:.2f} |")
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
        " sampling noise, and takes one forward pass per prompt and condition (all"
        f" {gd['num_prompts']} prompts x {1 + (len(ks) - (1 if 0 in ks else 0)) * len(concepts)}"
        f" conditions took {meta['seconds']:.0f} s here). Values are means over"
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


def machine_line(meta):
    return (f"{meta['cpu']} ({meta['cores']} cores; {meta['threads']} worker threads; kernel "
            f"backend `{meta['backend']}`)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--football", required=True, help="results of `selfcond experiment football`")
    ap.add_argument("--gender", required=True, help="results of `selfcond experiment gender`")
    ap.add_argument("--gender-sampled", default=None,
                    help="optional: `selfcond experiment gender --samples N` results (subset)")
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
               + (f" --gender-sampled {args.gender_sampled}" if args.gender_sampled else ""))
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
        "model. Here the continuation alone is scored by the same model without forcing, i.e. how "
        "plausible the conditioned text is to the unconditioned model.\n"
        "- **Football metric.** The share of continuations that mention any of the 12 words "
        "above (this project's acceptance metric), with a whole-word matcher in the spirit of "
        "ml-selfcond's compute_frequency.py (`\\b` word boundaries, case-insensitive) but over the "
        "whole continuation rather than its first characters.\n"
        "- **Gender metric.** Exact next-token probabilities within the sampler's top-k instead of "
        "the frequency over 100 sampled sentences per prompt (see above); same prompts, same "
        "words, same temperature and top-k. The ks differ from ml-selfcond's generate_batch.py "
        "sweep (0, 1, 3, 10, 30, 60, 100, 300).\n"
        "- **Seeds.** Deterministic: the selfcond sampler (PCG32) with seeds 0..N-1, the same "
        "seeds at every k, so differences between ks are paired.\n")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    print(f"wrote {args.out}, {os.path.join(svg_dir, fsvg)}, {os.path.join(svg_dir, gsvg)}")


if __name__ == "__main__":
    main()
