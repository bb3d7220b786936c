"""Generates sidecar/data/lexicon.tsv, the word data the semantic-cache guard compares with.

Sources (Debian packages, read from their installed files; nothing is fitted to eval pairs):
  * WordNet 3.0, Debian package `wordnet-base` (/usr/share/wordnet), under the WordNet 3.0
    licence (permissive: use, copy, modify and distribute with the copyright notice, kept in
    sidecar/data/WORDNET-LICENSE). Taken: every one- or two-word lemma of the four parts of
    speech with its senses (most frequent first), the direct hypernyms of the two most frequent
    noun and verb senses of each, antonym pairs (direct, extended to every word of the two senses, and for
    adjectives also the indirect ones a satellite inherits from its head through `similar to`), and the irregular inflections
    (*.exc).
  * ISO 4217 currency names and codes and ISO 3166-1 country names and codes, Debian package
    `iso-codes` (/usr/share/iso-codes/json), LGPL-2.1+ data.

Output lines, tab separated:
  w  lemma  synsets        synsets as `pos:id,id,..;pos:..` (ids dense, most frequent first;
                           the part of speech the word is mostly used as first)
  h  id     hypernym ids     (noun and verb synsets)
  a  lemma  lemma          antonyms (either order)
  x  form   lemma          irregular inflection
  c  name   code           currency name -> ISO 4217 code (lowercase)
  k  name   code           country name -> ISO 3166-1 alpha-2 code (lowercase)

usage: python3 sidecar/data/gen_lexicon.py > sidecar/data/lexicon.tsv
"""

import json
import re
import sys

WN = "/usr/share/wordnet"
ISO = "/usr/share/iso-codes/json"
POS = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}
# Hypernyms are kept for the most frequent senses only: rarer senses relate everyday words
# through meanings nobody asking a question has in mind.
HYPERNYM_SENSES = 2
LEMMA = re.compile(r"^[a-z][a-z'-]*(_[a-z][a-z'-]*)?$")


def data_lines(pos):
    with open(f"{WN}/data.{pos}", encoding="latin-1") as f:
        for line in f:
            if not line.startswith("  "):
                yield line


def parse_synset(line):
    fields = line.split(" | ")[0].split()
    offset, ss_type = fields[0], fields[2]
    n_words = int(fields[3], 16)
    words = [fields[4 + 2 * i].lower() for i in range(n_words)]
    words = [re.sub(r"\(.*\)$", "", w) for w in words]
    i = 4 + 2 * n_words
    n_ptr = int(fields[i])
    ptrs = []
    for k in range(n_ptr):
        sym, off, pos, st = fields[i + 1 + 4 * k: i + 5 + 4 * k]
        ptrs.append((sym, off, pos, int(st[:2], 16), int(st[2:], 16)))
    return offset, ss_type, words, ptrs


def main():
    synsets = {}  # (pos, offset) -> (words, ptrs)
    for pos, p in POS.items():
        for line in data_lines(pos):
            off, ss_type, words, ptrs = parse_synset(line)
            synsets[(p, off)] = (words, ptrs)

    dense = {}

    def did(key):
        return dense.setdefault(key, len(dense))

    senses = {}  # lemma -> {pos: [ids]}
    for pos, p in POS.items():
        with open(f"{WN}/index.{pos}", encoding="latin-1") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                fields = line.split()
                lemma = fields[0].lower()
                if not LEMMA.match(lemma):
                    continue
                n_synsets = int(fields[2])
                tagged = int(fields[-n_synsets - 1])
                offsets = fields[-n_synsets:]
                senses.setdefault(lemma, {})[p] = (tagged, n_synsets, [did((p, o)) for o in offsets])

    frequent = set()
    for lemma, by_pos in senses.items():
        for p in "nv":
            if p in by_pos:
                frequent.update(by_pos[p][2][:HYPERNYM_SENSES])
    hypernyms = {}
    for (p, off), ident in list(dense.items()):
        if p not in "nv" or ident not in frequent:
            continue
        _, ptrs = synsets[(p, off)]
        hs = [did((pp, o)) for sym, o, pp, _, _ in ptrs if sym in ("@", "@i")]
        if hs:
            hypernyms[ident] = hs

    antonyms = set()

    def add(a, b):
        if a != b and LEMMA.match(a) and LEMMA.match(b):
            antonyms.add((min(a, b), max(a, b)))

    for (p, off), (words, ptrs) in synsets.items():
        for sym, o, pp, src, dst in ptrs:
            if sym != "!":
                continue
            other_words, _ = synsets[(pp, o)]
            a = words[src - 1] if src else None
            b = other_words[dst - 1] if dst else None
            if a and b:
                add(a, b)
                # Antonymy between two senses holds for every word of them ("turn off" and
                # "turn on" share the senses of "switch off" and "switch on").
                for x in words:
                    for y in other_words:
                        add(x, y)
                if p == "a":
                    # Indirect antonyms: the satellites of each head oppose the other head.
                    for side, head in ((a, (pp, o)), (b, (p, off))):
                        for sym2, o2, pp2, _, _ in synsets[head][1]:
                            if sym2 == "&":
                                for sat in synsets[(pp2, o2)][0]:
                                    add(side, sat)

    exceptions = []
    for pos in POS:
        with open(f"{WN}/{pos}.exc", encoding="latin-1") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and LEMMA.match(parts[0]) and LEMMA.match(parts[1]):
                    exceptions.append((parts[0], parts[1]))

    out = sys.stdout
    for lemma in sorted(senses):
        # The part of speech a word is mostly used as comes first (by WordNet's tagged sense
        # counts from the Brown corpus, then by number of senses).
        by_pos = sorted(senses[lemma].items(), key=lambda kv: (-kv[1][0], -kv[1][1]))
        field = ";".join(f"{p}:{','.join(map(str, ids))}" for p, (_, _, ids) in by_pos)
        out.write(f"w\t{lemma}\t{field}\n")
    for ident in sorted(hypernyms):
        out.write(f"h\t{ident}\t{','.join(map(str, hypernyms[ident]))}\n")
    for a, b in sorted(antonyms):
        out.write(f"a\t{a}\t{b}\n")
    for form, lemma in sorted(set(exceptions)):
        out.write(f"x\t{form}\t{lemma}\n")
    for c in json.load(open(f"{ISO}/iso_4217.json"))["4217"]:
        out.write(f"c\t{c['name'].lower()}\t{c['alpha_3'].lower()}\n")
    for c in json.load(open(f"{ISO}/iso_3166-1.json"))["3166-1"]:
        for key in ("name", "common_name", "official_name"):
            if key in c:
                out.write(f"k\t{c[key].lower()}\t{c['alpha_2'].lower()}\n")


if __name__ == "__main__":
    main()
