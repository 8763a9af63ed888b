#!/usr/bin/env python3
"""Writes the tokenizer golden cases native/tests/data/tokenizers/{clip,t5}-cases.json.

The expected ids are what FLUX's pipelines run (docs/flux-model.md §3.1):
  * CLIP: transformers' slow `CLIPTokenizer` as installed WITHOUT ftfy (diffusers' `tokenizer/`), i.e. the
    BasicTokenizer fallback: clean-up (control/format characters dropped, whitespace -> space), CJK ideographs
    split off, NFC, whitespace split, lower-case, the CLIP regex, byte-level BPE with `</w>`, BOS/EOS.
  * T5: transformers' `T5TokenizerFast` (diffusers' `tokenizer_2/`), which for FLUX's tokenizer_config
    (`add_prefix_space: true`, `legacy: true`) is converted from spiece.model at load time and then behaves
    like tokenizer.json: special tokens split out first, Precompiled charsmap normaliser (applied per grapheme
    cluster), Strip(right), Replace(" {2,}" -> "▁"), Metaspace(prepend "always", split), Unigram, `$A </s>`.

Nothing here is the C# code under test. The ids come from independent implementations:
  CLIP  clip_slow      this file: the slow-CLIPTokenizer algorithm in Python (Debian python3-regex,
                       Python's unicodedata); this is the expected value.
        tjs_emulation  transformers.js (npm @huggingface/transformers) running a tokenizer.json assembled from
                       the FLUX vocab.json/merges.txt with a BertNormalizer-based normaliser that emulates the
                       slow tokenizer (make_tokenizer_goldens.mjs).
        tjs_fast       transformers.js on the tokenizer.json that transformers' CLIPConverter would make
                       (= `CLIPTokenizerFast`): recorded to document where the fast tokenizer differs.
        openai_noftfy  OpenAI's simple_tokenizer minus ftfy (ftfy is not packaged here): html.unescape twice,
                       whitespace clean, lower-case: recorded to document where OpenAI's tokenizer differs.
  T5    hf_fast        this file: the T5TokenizerFast pipeline in Python, with the Unigram segmentation done by
                       Debian's python3-sentencepiece on a copy of spiece.model whose own normaliser is switched
                       off (the HF normaliser is applied here instead); this is the expected value.
        sentencepiece  plain `SentencePieceProcessor(spiece.model).encode(text) + [1]` (what BFL's slow
                       T5Tokenizer does for ordinary text).
        tjs            transformers.js on the FLUX tokenizer_2/tokenizer.json + tokenizer_config.json.
A reference value equal to the expected one is stored as "same". The script fails if a reference disagrees
with the expected value on a case that is not listed in EXPECTED_DIVERGENCES (with the reason).

Rerun (from the repository root; needs Debian's python3-regex and python3-sentencepiece, node >= 18, and
@huggingface/transformers installed under tools/reference/node_modules, which is git-ignored):
  apt-get install -y python3-regex python3-sentencepiece
  (cd tools/reference && npm install --no-save --ignore-scripts --no-audit --no-fund @huggingface/transformers@4.3.1)
  /usr/bin/python3 tools/reference/make_tokenizer_goldens.py [--check]
--check writes nothing and exits 1 if the committed cases differ from what would be written.
(--ignore-scripts skips onnxruntime-node's download of GPU binaries; only the tokenizers are used.)
The tokenizer files are read from native/tests/data/tokenizers/files/ (copies; see the README there).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import unicodedata

import regex
import sentencepiece

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "native", "tests", "data", "tokenizers")
FILES = os.path.join(DATA, "files")
CLIP_DIR = os.path.join(FILES, "clip")
T5_DIR = os.path.join(FILES, "t5")
MJS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_tokenizer_goldens.mjs")

CLIP_BOS, CLIP_EOS = 49406, 49407
T5_PAD, T5_EOS = 0, 1

# --------------------------------------------------------------------------------------------------------------
# CLIP: transformers' slow CLIPTokenizer without ftfy (written from its documented behaviour, not copied).
# --------------------------------------------------------------------------------------------------------------

CLIP_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
CLIP_ADDED = regex.compile(r"(<\|startoftext\|>|<\|endoftext\|>)")


def byte_to_unicode() -> dict[int, str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class ClipSlow:
    def __init__(self, folder: str):
        with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
            self.vocab: dict[str, int] = json.load(f)
        with open(os.path.join(folder, "merges.txt"), encoding="utf-8") as f:
            merges = f.read().strip().split("\n")[1 : 49152 - 256 - 2 + 1]
        self.ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
        self.bytes = byte_to_unicode()
        self.cache = {"<|startoftext|>": ["<|startoftext|>"], "<|endoftext|>": ["<|endoftext|>"]}

    @staticmethod
    def basic(text: str) -> str:
        out = []
        for ch in text:
            cp = ord(ch)
            cat = unicodedata.category(ch)
            if cp == 0 or cp == 0xFFFD or (ch not in "\t\n\r" and cat.startswith("C")):
                continue
            if ch in " \t\n\r" or cat == "Zs":
                out.append(" ")
            elif is_cjk(cp):
                out.append(" " + ch + " ")
            else:
                out.append(ch)
        text = unicodedata.normalize("NFC", "".join(out))
        return " ".join(word.lower() for word in text.split())

    def bpe(self, token: str) -> list[str]:
        if token in self.cache:
            return self.cache[token]
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == best[0] and word[i + 1] == best[1]:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self.cache[token] = word
        return word

    def _pieces(self, text: str) -> list[int]:
        ids = []
        for piece in CLIP_PATTERN.findall(text):
            mapped = "".join(self.bytes[b] for b in piece.encode("utf-8"))
            for tok in self.bpe(mapped):
                ids.append(self.vocab.get(tok, CLIP_EOS))
        return ids

    def encode(self, text: str) -> list[int]:
        ids = [CLIP_BOS]
        for section in CLIP_ADDED.split(text):
            if section == "<|startoftext|>":
                ids.append(CLIP_BOS)
            elif section == "<|endoftext|>":
                ids.append(CLIP_EOS)
            elif section:
                ids.extend(self._pieces(self.basic(section)))
        return ids + [CLIP_EOS]

    def encode_openai_noftfy(self, text: str) -> list[int]:
        text = html.unescape(html.unescape(text)).strip()
        text = regex.sub(r"\s+", " ", text).strip().lower()
        return [CLIP_BOS] + self._pieces(text) + [CLIP_EOS]


# --------------------------------------------------------------------------------------------------------------
# T5: the T5TokenizerFast pipeline; Unigram by sentencepiece on a normaliser-less copy of spiece.model.
# --------------------------------------------------------------------------------------------------------------

def pb_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def pb_fields(data: bytes):
    pos = 0
    while pos < len(data):
        key, pos = pb_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = pb_varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = pb_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield field, wire, value


def pb_encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_field(field: int, wire: int, value) -> bytes:
    key = pb_encode_varint((field << 3) | wire)
    if wire == 0:
        return key + pb_encode_varint(value)
    if wire == 2:
        return key + pb_encode_varint(len(value)) + value
    if wire in (1, 5):
        return key + value
    raise ValueError(wire)


def piece_message(piece: str, score: float, kind: int) -> bytes:
    return pb_field(1, 2, piece.encode("utf-8")) + pb_field(2, 5, struct.pack("<f", score)) + pb_field(3, 0, kind)


def identity_model(spiece: bytes, extra_ids: int) -> tuple[bytes, bytes]:
    """spiece.model with its normaliser off, CONTROL pieces made NORMAL and the <extra_id_N> pieces appended
    (score 0.0), so that sentencepiece's Viterbi sees the same 32100-entry vocabulary as HF's Unigram.
    Returns (model bytes, precompiled charsmap)."""
    out = bytearray()
    charsmap = b""
    for field, wire, value in pb_fields(spiece):
        if field == 1:
            piece = score = kind = None
            kind = 1
            for f, _, v in pb_fields(value):
                if f == 1:
                    piece = v.decode("utf-8")
                elif f == 2:
                    score = struct.unpack("<f", v)[0]
                elif f == 3:
                    kind = v
            if kind == 3:  # CONTROL -> NORMAL: HF's Unigram trie holds <pad> and </s> like any other piece
                kind = 1
            out += pb_field(1, 2, piece_message(piece, score, kind))
        elif field == 3:
            for f, _, v in pb_fields(value):
                if f == 2:
                    charsmap = v
            spec = pb_field(1, 2, b"identity") + pb_field(3, 0, 0) + pb_field(4, 0, 0) + pb_field(5, 0, 1)
            out += pb_field(3, 2, spec)
        else:
            out += pb_field(field, wire, value)
    # Appending after the other top-level fields is fine: protobuf merges repeated fields.
    for i in range(extra_ids - 1, -1, -1):
        out += pb_field(1, 2, piece_message(f"<extra_id_{i}>", 0.0, 1))
    return bytes(out), charsmap


class Charsmap:
    """SentencePiece's precompiled charsmap (darts-clone double array + NUL-terminated replacements)."""

    def __init__(self, blob: bytes):
        size = struct.unpack_from("<I", blob, 0)[0]
        self.units = struct.unpack_from(f"<{size // 4}I", blob, 4)
        self.normalized = blob[4 + size :]

    def first_prefix(self, key: bytes):
        units = self.units
        offset = lambda u: (u >> 10) << ((u & (1 << 9)) >> 6)  # noqa: E731
        pos = offset(units[0])
        for c in key:
            if c == 0:
                return None
            pos ^= c
            if pos >= len(units):
                return None
            unit = units[pos]
            if (unit & ((1 << 31) | 0xFF)) != c:
                return None
            pos ^= offset(unit)
            if (unit >> 8) & 1:
                value = units[pos] & ((1 << 31) - 1)
                end = self.normalized.index(b"\0", value)
                return self.normalized[value:end].decode("utf-8")
        return None

    def hf_normalize(self, text: str) -> str:
        """tokenizers' Precompiled: per extended grapheme cluster; a cluster under 6 UTF-8 bytes is replaced
        whole by the replacement of the SHORTEST charsmap key that is a prefix of it; otherwise (or when no
        key matches) each character is looked up on its own."""
        out = []
        for grapheme in regex.findall(r"\X", text):
            raw = grapheme.encode("utf-8")
            if len(raw) < 6:
                rep = self.first_prefix(raw)
                if rep is not None:
                    out.append(rep)
                    continue
            for ch in grapheme:
                rep = self.first_prefix(ch.encode("utf-8"))
                out.append(ch if rep is None else rep)
        return "".join(out)


RUST_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B)) + "\u2028\u2029\u202f\u205f\u3000"


class T5Fast:
    def __init__(self, folder: str):
        with open(os.path.join(folder, "spiece.model"), "rb") as f:
            spiece = f.read()
        model, charsmap = identity_model(spiece, 100)
        self.charsmap = Charsmap(charsmap)
        self.sp = sentencepiece.SentencePieceProcessor(model_proto=model)
        self.raw = sentencepiece.SentencePieceProcessor(model_file=os.path.join(folder, "spiece.model"))
        with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
            added = json.load(f)["added_tokens"]
        self.added = {a["content"]: a["id"] for a in added}
        alternatives = sorted(self.added, key=len, reverse=True)  # leftmost-longest
        self.added_pattern = regex.compile("(" + "|".join(regex.escape(a) for a in alternatives) + ")")

    def section(self, text: str) -> list[int]:
        text = self.charsmap.hf_normalize(text).rstrip(RUST_WHITESPACE)
        text = regex.sub(" {2,}", "▁", text).replace(" ", "▁")
        if not text:
            return []
        if not text.startswith("▁"):
            text = "▁" + text
        ids = []
        for word in regex.findall("▁[^▁]*", text):
            ids.extend(self.sp.encode(word))
        return ids

    def encode(self, text: str) -> list[int]:
        ids = []
        for part in self.added_pattern.split(text):
            if part in self.added:
                ids.append(self.added[part])
            elif part:
                ids.extend(self.section(part))
        return ids + [T5_EOS]

    def encode_raw(self, text: str) -> list[int]:
        return self.raw.encode(text) + [T5_EOS]


# --------------------------------------------------------------------------------------------------------------
# The cases.
# --------------------------------------------------------------------------------------------------------------

EDGE_CASES: list[tuple[str, str, str]] = [
    # (category, name, text)
    ("ascii", "photo-of-a-cat", "a photo of a cat"),
    ("ascii", "sentence", "The quick brown fox jumps over the lazy dog."),
    ("ascii", "single-letter", "a"),
    ("ascii", "single-word", "astronaut"),
    ("ascii", "long-word", "supercalifragilisticexpialidocious"),
    ("ascii", "no-spaces", "thisisalongrunofletterswithoutanyspaces"),
    ("case", "mixed-case", "A Photo Of A Cat"),
    ("case", "upper-case", "A PHOTO OF A CAT"),
    ("case", "camel-case", "CamelCaseWordsAndMIXEDcase iPhone McDonald"),
    ("case", "brand-names", "iPhone 15 Pro Max, MacBook, PlayStation 5, YouTube"),
    ("punctuation", "sentence-punctuation", "hello, world! How are you? Fine; thanks: bye."),
    ("punctuation", "runs", "wow!!! really??? ...and then---nothing"),
    ("punctuation", "brackets", "(parentheses) [brackets] {braces} <angle>"),
    ("punctuation", "symbols", "#hashtag @mention $100 50% a&b a*b a+b=c a|b ~tilde `tick` ^caret _under_"),
    ("punctuation", "url", "https://example.com/images/cat.png?size=large&format=webp#top"),
    ("punctuation", "email-path", "contact me at someone@example.com or C:\\Users\\me\\Pictures\\cat.jpg"),
    ("punctuation", "prompt-weights", "(masterpiece:1.2), ((best quality)), [blurry], {cat|dog}, <lora:style:0.8>"),
    ("punctuation", "double-quotes", 'a sign that says "Hello World" in neon'),
    ("digits", "digits", "1234567890"),
    ("digits", "numbers", "3.14159 1,000,000 -42 +7 1e-5 0x1F"),
    ("digits", "resolutions", "4k 8k 16:9 1920x1080 35mm f/1.8 ISO 100 1/250s"),
    ("digits", "years-versions", "in the year 2024, v1.2.3, room 101, 9am-5pm"),
    ("apostrophes", "contractions", "it's don't we're they've I'm you'll he'd"),
    ("apostrophes", "upper-contractions", "IT'S DON'T WE'RE THEY'VE I'M YOU'LL HE'D"),
    ("apostrophes", "possessives", "the cat's toy, James' book, the children's room"),
    ("apostrophes", "quotes-and-apostrophes", "rock 'n' roll, 'sup, ''quoted'', l'amour, o'clock"),
    ("apostrophes", "leading-suffixes", "'s 't 're 've 'm 'll 'd 'sss 'tea 'reef"),
    ("apostrophes", "after-punctuation", "!'s ?'t .'re"),
    ("apostrophes", "curly-apostrophe", "it\u2019s the cat\u2019s \u2018toy\u2019"),
    ("apostrophes", "long-s", "it'\u017f and \u017ftreet"),
    ("accents", "french", "café crème brûlée, naïve façade, à la carte"),
    ("accents", "german-nordic", "Zürich Straße, Ångström, Ærøskøbing, smörgåsbord"),
    ("accents", "iberian", "São Paulo, niño, señor, ¿qué pasa? ¡olé!"),
    ("accents", "decomposed", "cafe\u0301 cre\u0300me nai\u0308ve"),
    ("accents", "upper-accents", "ÉCOLE ÀÉÎÕÜ ÇA"),
    ("accents", "turkish-dotted-i", "İstanbul ISTANBUL ıi"),
    ("accents", "greek-final-sigma", "ΟΔΟΣ ΣΟΦΙΑ Ελληνικά ΣΣ"),
    ("accents", "cyrillic", "Москва, Красная площадь, зимний вечер"),
    ("accents", "vietnamese", "Tiếng Việt, phở bò, Hạ Long"),
    ("accents", "stacked-combining", "A\u0301\u0302 e\u0323\u0302 o\u0308\u0304"),
    ("scripts", "arabic", "مرحبا بالعالم"),
    ("scripts", "hebrew", "שלום עולם"),
    ("scripts", "devanagari", "नमस्ते दुनिया"),
    ("scripts", "thai", "สวัสดีชาวโลก"),
    ("scripts", "korean", "안녕하세요 세계"),
    ("scripts", "hangul-jamo", "\u1100\u1161\u11a8 \u1112\u1161\u11ab"),
    ("cjk", "chinese", "一只可爱的猫坐在窗台上"),
    ("cjk", "japanese-mixed", "東京タワーの夜景、ひらがなとカタカナ"),
    ("cjk", "cjk-and-latin", "中文English混合text日本語"),
    ("cjk", "cjk-punctuation", "「こんにちは」。『世界』、（全角括弧）"),
    ("cjk", "cjk-extension-b", "\U00020000\U00020001 \U0002A6D6"),
    ("cjk", "compatibility-ideographs", "\uf900\uf901\ufa0e"),
    ("cjk", "fullwidth", "ＡＢＣ１２３ ｆｕｌｌｗｉｄｔｈ！"),
    ("cjk", "halfwidth-katakana", "ｶﾀｶﾅ ﾃﾞｼﾞﾀﾙ"),
    ("emoji", "single", "a cat 🐱 on a sofa"),
    ("emoji", "repeated", "🔥🔥🔥 fire"),
    ("emoji", "zwj-family", "👨\u200d👩\u200d👧\u200d👦 family"),
    ("emoji", "skin-tone", "👍🏽 thumbs up"),
    ("emoji", "flag", "🇯🇵 🇺🇸"),
    ("emoji", "variation-selector", "❤\ufe0f love ✨ sparkles ✨"),
    ("emoji", "keycap", "1\ufe0f\u20e3 2\ufe0f\u20e3"),
    ("emoji", "misc-symbols", "★ ☆ ♥ ♪ ♫ ☀ ☂ ⚡ → ← ∞ ∑ √ █▓▒░"),
    ("whitespace", "tab", "a\tb"),
    ("whitespace", "newlines", "a\nb\n\nc"),
    ("whitespace", "crlf", "first line\r\nsecond line"),
    ("whitespace", "leading-trailing", "   leading and trailing   "),
    ("whitespace", "space-run", "multiple     spaces    here"),
    ("whitespace", "nbsp", "a\u00a0b\u00a0\u00a0c"),
    ("whitespace", "ideographic-space", "\u3000a\u3000b"),
    ("whitespace", "em-space-thin-space", "a\u2003b\u2009c\u202fd"),
    ("whitespace", "line-separator", "a\u2028b\u2029c"),
    ("whitespace", "zero-width-space", "a\u200bb"),
    ("whitespace", "vt-ff", "a\u000bb\u000cc"),
    ("whitespace", "nel", "a\u0085b"),
    ("whitespace", "only-whitespace", " \t\n\u00a0 "),
    ("whitespace", "mixed-runs", "a \t \n b\u3000\u00a0 c"),
    ("control", "nul", "a\u0000b"),
    ("control", "c0", "a\u0001b\u0007c\u001bd"),
    ("control", "del", "a\u007fb"),
    ("control", "c1", "a\u0080b\u009fc"),
    ("control", "bom", "\ufeffbom here"),
    ("control", "soft-hyphen", "soft\u00adhyphen"),
    ("control", "zero-width-joiner", "zw\u200djoiner zw\u200cnon"),
    ("control", "bidi-marks", "rtl\u200fmark ltr\u200emark \u202aembed\u202c"),
    ("control", "replacement-char", "bad\ufffdbyte"),
    ("control", "private-use", "icon\ue000here"),
    ("html", "amp", "&amp;"),
    ("html", "tom-and-jerry", "Tom &amp; Jerry"),
    ("html", "lt-gt", "&lt;tag&gt;"),
    ("html", "quot-apos", "&quot;quoted&quot; &#39;apos&#39; &#x27;hex&#x27;"),
    ("html", "nbsp-entity", "a&nbsp;b"),
    ("html", "double-escaped", "&amp;amp; &amp;lt;"),
    ("html", "bare-ampersand", "AT&T, fish & chips, R&D"),
    ("special", "startoftext", "<|startoftext|>"),
    ("special", "endoftext-inside", "a cat <|endoftext|> a dog"),
    ("special", "endoftext-glued", "cat<|endoftext|>dog<|startoftext|>"),
    ("special", "endoftext-upper", "<|ENDOFTEXT|> and <|StartOfText|>"),
    ("special", "endoftext-twice", "<|endoftext|><|endoftext|>"),
    ("special", "t5-eos", "a cat </s> a dog"),
    ("special", "t5-pad-unk", "<pad> and <unk>"),
    ("special", "t5-sentinels", "<extra_id_0> fills <extra_id_1> and <extra_id_99>"),
    ("special", "t5-glued", "cat</s>dog"),
    ("special", "t5-fullwidth-eos", "\uff1c\uff0f\uff53\uff1e"),
    ("special", "metaspace-char", "▁metaspace▁char and a ▁ b"),
    ("empty", "empty", ""),
    ("empty", "single-space", " "),
    ("empty", "single-newline", "\n"),
    ("misc", "ligatures", "ﬁne ﬂow ﬀ ﬃ"),
    ("misc", "circled-roman", "①②③ Ⅻ ⅷ"),
    ("misc", "fractions-super", "½ ¼ x² y³ H₂O"),
    ("misc", "signs", "™ © ® °C µm … — – •"),
    ("misc", "smart-quotes", "\u201csmart quotes\u201d \u00abguillemets\u00bb \u201elow\u201c"),
    ("misc", "sharp-s", "ß ẞ straße STRASSE"),
    ("misc", "kelvin-angstrom", "\u212a \u212b \u2126"),
    ("misc", "titlecase-digraph", "\u01c4 \u01c5 \u01c6"),
    ("misc", "deseret", "\U00010400\U00010401 \U00010428"),
    ("misc", "math-alphanumeric", "\U0001d400\U0001d401! \U0001d7d9"),
    ("misc", "markdown", "# Title\n\n- item **bold** _italic_ `code`"),
    ("misc", "code-like", "def f(x): return x**2 # comment"),
    ("misc", "repeated-char", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
    ("misc", "dots", ". .. ... .... ....."),
]

HANDWRITTEN_PROMPTS = [
    "A cat holding a sign that says hello world",
    "a majestic lion resting on a rock at sunset, golden hour, National Geographic photo",
    "portrait of an old fisherman with a weathered face, dramatic lighting, black and white, 85mm lens",
    "a futuristic city skyline at night with flying cars and neon signs, cyberpunk style",
    "an astronaut riding a horse on the moon, photorealistic",
    "a cozy cabin in a snowy forest, warm light in the windows, smoke from the chimney",
    "a bowl of ramen with a soft-boiled egg, steam rising, food photography",
    "watercolor painting of a lighthouse on a cliff during a storm",
    "a tiny dragon sleeping in a teacup, fantasy illustration, highly detailed",
    "isometric 3D render of a small island with palm trees and a wooden hut",
    "a vintage red bicycle leaning against a yellow wall in Havana",
    "close-up macro shot of a dewdrop on a spider web at dawn",
    "a Victorian library with towering bookshelves and a spiral staircase",
    "oil painting of sunflowers in a blue vase, in the style of Van Gogh",
    "a robot barista making latte art in a busy coffee shop",
    "aerial view of a winding river through autumn forests, drone photography",
    "a children's book illustration of a bear having a picnic with a rabbit",
    "minimalist logo of a mountain and a rising sun, flat vector, two colors",
    "a samurai standing in a bamboo forest, mist, cinematic composition",
    "an underwater scene with a coral reef, sea turtles and rays of sunlight",
    "a steampunk airship floating above Victorian London, brass and copper details",
    "product photo of a white sneaker on a pastel pink background, studio lighting",
    "a medieval castle on a hill surrounded by fog, matte painting",
    "a golden retriever puppy playing in fallen leaves",
    "the Eiffel Tower made of chocolate, food art",
    "a neon sign reading \"OPEN 24/7\" in a rainy alley",
    "a chalkboard menu that says 'Today's special: pumpkin soup'",
    "a T-shirt design with the text \"I <3 NY\" in bold retro letters",
    "an anime girl with blue hair and headphones, studio ghibli style, soft colors",
    "pixel art of a knight fighting a slime, 16-bit, SNES style",
    "a low-poly fox in a geometric forest, pastel palette",
    "an infographic about the water cycle, clean flat design, labels",
    "a photorealistic portrait of a woman with freckles, natural light, shallow depth of field",
    "a wooden desk with a laptop, a cup of coffee and a notebook, top-down view",
    "a surreal landscape where the clouds are made of cotton candy",
    "the northern lights over a frozen lake in Lapland, long exposure",
    "a street food market in Bangkok at night, bustling crowd, lanterns",
    "a 1950s diner with chrome stools and a jukebox, Kodachrome film",
    "a pencil sketch of a hummingbird feeding on a flower",
    "a vase of tulips on a windowsill, Dutch still life painting",
    "a dog wearing sunglasses driving a convertible, comic style",
    "a cyberpunk samurai with glowing katana, rain, reflections, 8k, octane render",
    "an ancient Greek temple ruins at sunrise with olive trees",
    "a map of a fantasy kingdom with mountains, rivers and castles, parchment texture",
    "a glass terrarium with a tiny ecosystem inside, moss and mushrooms",
    "a snowy owl in flight against a dark forest background",
    "a poster for a jazz festival, art deco style, saxophone, bold typography",
    "a hyperrealistic 3D render of a glossy red apple with a water droplet",
    "a mother and child walking on a beach at sunset, silhouettes",
    "an abandoned amusement park overgrown with vines, eerie atmosphere",
    "a bento box with sushi, tamagoyaki and pickled vegetables",
    "a knitted wool sweater texture, close-up, soft focus",
    "a scientist in a lab coat looking at a glowing test tube",
    "a Formula 1 car speeding on a racetrack, motion blur",
    "a traditional Japanese garden with a koi pond and a red bridge",
    "a mountain climber on a snowy ridge under a starry sky",
    "a stained glass window depicting a phoenix rising from flames",
    "a cartoon avocado doing yoga, cute sticker design, white border",
    "a desert caravan of camels at dusk, long shadows on the dunes",
    "an elegant wedding cake with cascading sugar flowers",
    "a portrait of a cat dressed as a Renaissance nobleman, oil on canvas",
    "a retro sci-fi book cover with a rocket and a ringed planet",
    "a rainy Paris street with umbrellas, impressionist painting",
    "a futuristic kitchen with holographic displays, interior design render",
    "a hand holding a glowing crystal, dark background, fantasy",
    "blueprint of a flying machine, Leonardo da Vinci style notes",
    "an isometric pixel-art office with tiny workers at their desks",
    "a group of friends laughing around a campfire, candid photo",
    "a bustling Moroccan souk with colorful spices and lanterns",
    "an orchestra performing in a grand concert hall, wide angle",
    "a child flying a kite on a windy hill, spring, wildflowers",
    "a tattoo design of a rose and a dagger, traditional style, black ink",
    "a close-up of a mechanical watch movement, gears and jewels",
    "a polar bear on an ice floe, melting glacier in the background",
    "a magical forest with bioluminescent mushrooms at night",
    "a bowl of fresh fruit salad, bright colors, overhead shot",
    "a skateboarder mid-air over a ramp, fisheye lens, 90s style",
    "a double exposure portrait of a man and a pine forest",
    "a cute robot watering plants in a greenhouse",
    "a wizard's desk cluttered with potions, scrolls and a crystal ball",
    "a minimalist Scandinavian living room with large windows",
    "a thunderstorm over the Great Plains, lightning strike, supercell",
    "a hot air balloon festival over Cappadocia at sunrise",
    "a plate of spaghetti carbonara with black pepper, rustic table",
    "an ice cream cone melting on a hot summer day, pop art",
    "a Viking longship sailing through a fjord",
    "a lotus flower floating on a calm pond, zen",
    "a detailed ink drawing of a city street in Kyoto",
    "a man reading a newspaper on a park bench, 1920s, sepia",
    "a sports car in a showroom, reflections on the floor, 4k",
    "the interior of a spaceship cockpit with glowing controls",
    "a chameleon on a branch, vivid colors, macro",
    "a bakery window display full of croissants and pastries",
    "a fantasy elf archer in a forest clearing, concept art",
    "a cup of matcha tea with a wagashi sweet, soft morning light",
    "a rainy window with droplets and blurred city lights behind",
    "a herd of wild horses running across a plain, dust, sunset",
    "an origami crane made of newspaper on a wooden table",
    "a handwritten letter with a wax seal and a quill pen",
    "a giant tortoise carrying a small village on its shell",
]

LONG_PROMPTS = [
    ("long", "clip-overflow-paragraph",
     "A breathtaking panoramic view of an ancient city carved into the side of a towering red sandstone cliff, "
     "with intricate temples, hanging gardens, rope bridges and waterfalls cascading from the terraces into a "
     "turquoise river far below, flocks of white birds circling the spires, merchants with colorful carts on "
     "narrow winding streets, warm late-afternoon sunlight casting long dramatic shadows, volumetric haze, "
     "ultra-detailed matte painting, cinematic wide shot, 8k resolution, trending on ArtStation"),
    ("long", "detailed-portrait",
     "Close-up portrait of an elderly woman with silver hair braided with small blue flowers, deep wrinkles "
     "around her kind eyes, wearing a hand-knitted shawl in shades of ochre and rust; soft window light from "
     "the left, a dark wooden background, subtle film grain, shot on a medium-format camera with an 80mm lens "
     "at f/2.8; the mood is calm, dignified and warm, with gentle contrast and natural skin tones."),
    ("long", "typography-poster",
     'A vintage travel poster that reads "VISIT THE MOUNTAINS" at the top in bold art-deco letters and '
     '"Fresh air - Clear lakes - Endless trails" at the bottom in a smaller serif font; between them, a stylised '
     "illustration of snow-capped peaks, a train crossing a stone viaduct and pine trees, limited palette of navy, "
     "cream and burnt orange, lithograph texture, slight paper wear at the edges."),
    ("long", "scene-with-list",
     "A cluttered artist's studio: easels with half-finished canvases, jars of brushes, tubes of paint squeezed "
     "flat, a paint-stained wooden floor, a large arched window overlooking rooftops, a sleeping tabby cat on a "
     "velvet armchair, a record player spinning a jazz album, dried flowers in a bottle, sketches pinned to the "
     "walls, a ladder, a half-eaten croissant on a plate, morning light streaming in, dust motes in the air."),
]


def composed_prompts(count: int) -> list[str]:
    rng = random.Random(20260522)
    subjects = [
        "a red fox", "an old lighthouse keeper", "a steam locomotive", "a glass of red wine", "a koi fish",
        "a futuristic motorcycle", "a ballet dancer", "a medieval knight", "a bonsai tree", "a street musician",
        "a vintage typewriter", "a snow leopard", "a sailing ship", "a bowl of pho", "a paper lantern",
        "a cyborg detective", "a sleeping baby elephant", "a violin on a chair", "a treehouse", "a monarch butterfly",
        "twin moons", "a crowded subway car", "a marble statue", "a pair of hiking boots", "a blue whale",
        "a desert cactus in bloom", "a rusty robot", "a princess in armor", "a jazz trumpet player", "a hedgehog",
        "an espresso machine", "a field of lavender", "a haunted Victorian house", "a race horse", "an octopus chef",
        "a wooden rowboat", "a graffiti wall", "a space station", "a grandmother baking bread", "a chess board",
    ]
    settings = [
        "in a misty forest", "on a busy street in Tokyo", "at the edge of a cliff", "in a sunlit meadow",
        "inside an abandoned factory", "under a starry sky", "on a rainy evening in London", "in a minimalist white room",
        "on the surface of Mars", "beside a frozen waterfall", "in a candle-lit cathedral", "at a night market",
        "floating in zero gravity", "in a field of tall grass at dusk", "on a sandy beach with turquoise water",
        "in a cozy kitchen", "among cherry blossoms", "in a dense jungle", "on a snowy mountain pass", "in an art gallery",
    ]
    styles = [
        "photorealistic", "oil painting", "watercolor", "digital art", "35mm film photo", "Pixar-style 3D render",
        "charcoal sketch", "ukiyo-e woodblock print", "art nouveau illustration", "low-poly render", "pop art",
        "isometric illustration", "cinematic still", "claymation", "vaporwave aesthetic", "impressionist painting",
        "technical drawing", "comic book panel", "studio portrait", "tilt-shift photo",
    ]
    extras = [
        "golden hour", "dramatic lighting", "soft focus", "high contrast", "volumetric light", "muted colors",
        "vibrant colors", "shallow depth of field", "wide angle", "symmetrical composition", "8k", "ultra detailed",
        "bokeh", "long exposure", "moody atmosphere", "pastel palette", "HDR", "award-winning photograph",
        "trending on ArtStation", "by a famous illustrator", "f/1.4", "ISO 200", "backlit", "rule of thirds",
    ]
    prompts = []
    for i in range(count):
        subject, setting, style = rng.choice(subjects), rng.choice(settings), rng.choice(styles)
        tail = ", ".join(rng.sample(extras, rng.randint(0, 5)))
        form = rng.randint(0, 5)
        if form == 0:
            text = f"{subject} {setting}, {style}"
        elif form == 1:
            text = f"{style} of {subject} {setting}"
        elif form == 2:
            text = f"{subject[0].upper() + subject[1:]} {setting}. {style.capitalize()}."
        elif form == 3:
            text = f"{subject}, {setting}, {style}"
        elif form == 4:
            text = f"A {style} showing {subject} {setting}"
        else:
            text = f"{subject.upper()} {setting}; {style}"
        if tail:
            text = f"{text}, {tail}"
        prompts.append(text)
    return prompts


def all_cases() -> list[dict]:
    cases = [{"category": c, "name": n, "text": t} for c, n, t in EDGE_CASES]
    for i, text in enumerate(HANDWRITTEN_PROMPTS):
        cases.append({"category": "prompt", "name": f"prompt-{i:03d}", "text": text})
    for i, text in enumerate(composed_prompts(200)):
        cases.append({"category": "prompt", "name": f"composed-{i:03d}", "text": text})
    for c, n, t in LONG_PROMPTS:
        cases.append({"category": c, "name": n, "text": t})
    # Very long inputs: beyond 77 CLIP tokens and beyond 512 T5 tokens.
    cases.append({"category": "long", "name": "repeated-sentence-x40", "text": "a photo of a cat on a red sofa. " * 40})
    cases.append({"category": "long", "name": "all-prompts-joined", "text": " ".join(HANDWRITTEN_PROMPTS[:40])})
    cases.append({"category": "long", "name": "digits-x30", "text": "1234567890" * 30})
    cases.append({"category": "long", "name": "emoji-run", "text": "🐱" * 100})
    cases.append({"category": "long", "name": "no-space-run", "text": "abcdefghij" * 60})
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


# Cases where a reference is known to differ from the expected (HF) value, with the reason. The generator
# fails on any other disagreement, so a new one must be investigated and explained here.
EXPECTED_DIVERGENCES: dict[tuple[str, str, str], str] = {}


def load_divergences() -> None:
    def add(tokenizer, reference, names, reason):
        for name in names:
            EXPECTED_DIVERGENCES[(tokenizer, reference, name)] = reason

    # Each one was investigated; see native/tests/data/tokenizers/README.md.
    add("clip", "tjs_emulation", ["long-s"],
        "transformers' slow CLIPTokenizer compiles its split regex with IGNORECASE, so \"'s\" also matches \"'ſ\" "
        "(U+017F folds to 's'); a tokenizer.json Split regex has no flags, so transformers.js splits \"'\" off alone")
    add("clip", "tjs_emulation", ["cjk-extension-b"],
        "transformers.js' BertNormalizer walks UTF-16 code units, so CJK ideographs outside the BMP (Extension B, "
        "U+20000..) are not split off; transformers' BasicTokenizer walks code points and splits them")
    add("t5", "tjs", ["t5-fullwidth-eos"],
        "transformers.js treats a section whose NORMALISED text equals an added token's content ('＜／ｓ＞' -> '</s>') "
        "as that token; tokenizers only splits normalised text on added tokens marked normalized=true (none here), "
        "so the Metaspace '▁' is prepended and the Unigram trie (which holds every vocabulary entry) matches '</s>'")
    add("t5", "sentencepiece",
        ["t5-eos", "t5-pad-unk", "t5-sentinels", "t5-glued"],
        "special-token text: T5TokenizerFast splits <pad>, </s>, <unk> and <extra_id_N> out of the raw text as "
        "special tokens; sentencepiece.encode() segments them as ordinary text")
    add("t5", "sentencepiece", ["t5-fullwidth-eos"],
        "HF's Unigram trie holds every vocabulary entry, including </s> (score 0.0): text that only becomes "
        "'</s>' after NFKC is matched as id 1; sentencepiece never matches CONTROL pieces")
    add("t5", "sentencepiece", ["stacked-combining"],
        "tokenizers' Precompiled normaliser replaces a whole grapheme cluster under 6 UTF-8 bytes by the replacement "
        "of the SHORTEST charsmap key that is a prefix of it ('A\\u0301\\u0302' -> 'Á', dropping U+0302); "
        "sentencepiece does a longest match and keeps U+0302")
    add("t5", "tjs", ["stacked-combining"],
        "transformers.js' Precompiled normaliser ignores the charsmap and applies NFKC, which keeps U+0302")


def diff_reference(tokenizer: str, case: dict, reference: str, ids: list[int], expected: list[int], problems: list[str]):
    if ids == expected:
        return "same"
    key = (tokenizer, reference, case["name"])
    if key not in EXPECTED_DIVERGENCES:
        problems.append(f"{tokenizer}/{reference}/{case['name']}: {case['text']!r}\n    expected {expected}\n    got      {ids}")
    return ids


def run_node(cases: list[dict]) -> dict:
    with tempfile.TemporaryDirectory(prefix="tokgold-") as tmp:
        request = os.path.join(tmp, "request.json")
        response = os.path.join(tmp, "response.json")
        with open(request, "w", encoding="utf-8") as f:
            json.dump({"clip_dir": CLIP_DIR, "t5_dir": T5_DIR, "work_dir": tmp, "texts": [c["text"] for c in cases]}, f)
        subprocess.run(["node", MJS, request, response], check=True)
        with open(response, encoding="utf-8") as f:
            return json.load(f)


def dump(content: dict) -> str:
    """JSON with one case per line (readable diffs, small files)."""
    head = {k: v for k, v in content.items() if k != "cases"}
    lines = json.dumps(head, ensure_ascii=False, indent=1)[:-2]
    cases = ",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in content["cases"])
    return f"{lines},\n \"cases\": [\n{cases}\n ]\n}}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = parser.parse_args()
    load_divergences()

    cases = all_cases()
    clip = ClipSlow(CLIP_DIR)
    t5 = T5Fast(T5_DIR)
    js = run_node(cases)
    problems: list[str] = []

    clip_cases, t5_cases = [], []
    for i, case in enumerate(cases):
        expected = clip.encode(case["text"])
        refs = {
            "clip_slow": "same",
            "tjs_emulation": diff_reference("clip", case, "tjs_emulation", js["clip_emulation"][i], expected, problems),
            # Recorded, never required to agree: they document other tokenizers.
            "tjs_fast": js["clip_fast"][i] if js["clip_fast"][i] != expected else "same",
            "openai_noftfy": (lambda o: o if o != expected else "same")(clip.encode_openai_noftfy(case["text"])),
        }
        note = EXPECTED_DIVERGENCES.get(("clip", "tjs_emulation", case["name"]))
        clip_cases.append({**case, "ids": expected, "references": refs, **({"note": note} if note else {})})

        expected = t5.encode(case["text"])
        refs = {
            "hf_fast": "same",
            "sentencepiece": diff_reference("t5", case, "sentencepiece", t5.encode_raw(case["text"]), expected, problems),
            "tjs": diff_reference("t5", case, "tjs", js["t5"][i], expected, problems),
        }
        notes = [EXPECTED_DIVERGENCES[k] for k in (("t5", "sentencepiece", case["name"]), ("t5", "tjs", case["name"])) if k in EXPECTED_DIVERGENCES]
        t5_cases.append({**case, "ids": expected, "references": refs, **({"note": " / ".join(notes)} if notes else {})})

    for (tokenizer, reference, name) in EXPECTED_DIVERGENCES:
        target = clip_cases if tokenizer == "clip" else t5_cases
        case = next((c for c in target if c["name"] == name), None)
        if case is None or case["references"].get(reference) == "same":
            problems.append(f"listed divergence {tokenizer}/{reference}/{name} does not occur")

    header = {
        "generator": "tools/reference/make_tokenizer_goldens.py (+ make_tokenizer_goldens.mjs); see its docstring to rerun",
        "python": sys.version.split()[0],
        "unicodedata": unicodedata.unidata_version,
        "regex": regex.__version__,
        "sentencepiece": sentencepiece.__version__,
        "transformers_js": js["version"],
        "node": js["node"],
    }
    outputs = {
        "clip-cases.json": {
            **header,
            "tokenizer": "clip",
            "files": "native/tests/data/tokenizers/files/clip (FLUX.1 tokenizer/)",
            "expected": "transformers CLIPTokenizer (slow) without ftfy: [49406] + BPE ids + [49407], untruncated",
            "max_length": 77,
            "pad_id": CLIP_EOS,
            "references": {
                "clip_slow": "Python re-implementation of the slow tokenizer (this generator): the expected ids",
                "tjs_emulation": "transformers.js, BertNormalizer-based tokenizer.json emulating the slow tokenizer",
                "tjs_fast": "transformers.js, CLIPConverter-style tokenizer.json (CLIPTokenizerFast); informative",
                "openai_noftfy": "OpenAI simple_tokenizer without ftfy (html.unescape, whitespace clean, lower); informative",
            },
            "truncation_demo": js["clip_truncation_demo"],
            "cases": clip_cases,
        },
        "t5-cases.json": {
            **header,
            "tokenizer": "t5",
            "files": "native/tests/data/tokenizers/files/t5 (FLUX.1 tokenizer_2/)",
            "expected": "transformers T5TokenizerFast: ids + [1] (</s>), untruncated",
            "max_length": 512,
            "pad_id": T5_PAD,
            "references": {
                "hf_fast": "T5TokenizerFast pipeline in Python with sentencepiece's Unigram (this generator): the expected ids",
                "sentencepiece": "SentencePieceProcessor(spiece.model).encode(text) + [1]",
                "tjs": "transformers.js on tokenizer.json + tokenizer_config.json",
            },
            "truncation_demo": js["t5_truncation_demo"],
            "cases": t5_cases,
        },
    }

    if problems:
        print(f"{len(problems)} unexplained disagreement(s):", file=sys.stderr)
        for p in problems:
            print("  " + p, file=sys.stderr)
        return 1

    status = 0
    for name, content in outputs.items():
        text = dump(content)
        path = os.path.join(DATA, name)
        if args.check:
            # Compare the data, not the recorded tool versions (another node or Python may be installed).
            with open(path, encoding="utf-8") as f:
                committed = json.load(f)
            for key in ("cases", "truncation_demo", "max_length", "pad_id"):
                if committed.get(key) != content[key]:
                    print(f"{path}: {key} differs", file=sys.stderr)
                    status = 1
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"wrote {path}: {len(content['cases'])} cases")
    return status


if __name__ == "__main__":
    sys.exit(main())
