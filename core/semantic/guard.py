"""The precision guard: may the answer stored for one query serve another, similar one?

A cosine threshold alone cannot tell "release notes for 4.2" from "release notes for 4.3":
near-misses are *closer* in embedding space than most paraphrases. So every semantic
candidate must also pass this deterministic check, which reads both texts and rejects the
classic near-misses, each with a fixed reason (a metric label) and a human-readable detail:

``number``           different numbers, amounts, versions, counts ("50" = "fifty" still agree)
``date``             different dates, years, quarters, weekdays, relative periods, times
``negation``         one side negated ("not", "n't", "without", "un-"), or reports a failure
``opposite_action``  opposite actions or directions (enable/disable, import/export, ...)
``direction``        the same things in swapped roles (from Berlin to Lisbon / the reverse)
``entity``           a name, acronym, product, ID, email or code that the other lacks
``scope``            different scope (all/only, monthly/annual, staging/production, whose)
                     or a qualifier that narrows a shared word ("team account")
``term``             a content word replaced by a non-synonym, or extra words / actions

Words are compared through a light stemmer and small synonym lists (``core/lexicon.py``);
words that only frame a request ("how do I", "please", "steps to") never decide.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from core.semantic import lexicon as lx

#: Every reason a rejection can carry (values of the ``reason`` metric label).
REASONS = (
    "number",
    "date",
    "negation",
    "opposite_action",
    "direction",
    "entity",
    "scope",
    "term",
)

#: At most this many unexplained extra words may appear on one side (e.g. "calendar" in
#: "UK office holiday calendar"); more means the other query says something else.
MAX_EXTRA_WORDS = 1


@dataclass(frozen=True, slots=True)
class Verdict:
    """The guard's answer: ``ok``, or the ``reason`` (one of ``REASONS``) and a detail."""

    ok: bool
    reason: str = ""
    detail: str = ""


ACCEPT = Verdict(True)


def verify(stored_text: str, new_text: str) -> Verdict:
    """Whether the answer stored for ``stored_text`` is right for ``new_text``."""
    if stored_text.strip().lower() == new_text.strip().lower():
        return ACCEPT
    a, b = analyse(stored_text), analyse(new_text)
    pairing = _Pairing(a, b)
    for check in (
        _check_numbers,
        _check_dates,
        _check_negation,
        _check_opposites,
        _check_direction,
        _check_entities,
        _check_scope,
        _check_terms,
    ):
        verdict = check(a, b, pairing)
        if verdict is not None:
            return verdict
    return ACCEPT


# --- reading a query ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
      (?P<email>[\w.+-]+@[\w-]+(?:\.[\w-]+)+)
    | (?P<arrow>->|=>|\u2192|\u21d2)
    | (?P<clock>\b\d{1,2}:\d{2}\s?(?:[ap]\.?m\.?)?(?![\w:]))
    | (?P<ratio>\b\d+:\d+\b)
    | (?P<num>[#$€£]?\d+(?:,\d{3})*(?:\.\d+)*%?[a-z]*)
    | (?P<code>[a-z]+[-_]?\d[\w.-]*)
    | (?P<word>[a-z]+(?:'[a-z]+)?)
    | (?P<stop>[.!?;:](?=\s|$)|\s[-\u2013\u2014]+\s|[\u2013\u2014()\[\]{}"|/,])
    """,
    re.VERBOSE | re.IGNORECASE,
)
_VERSION = re.compile(r"^v(\d+(?:\.\d+)*)$")
_QUARTER = re.compile(r"^q([1-4])$")
_FISCAL = re.compile(r"^fy(\d{2}|\d{4})$")
_NUMBER = re.compile(r"^[#$€£]?(\d+(?:,\d{3})*(?:\.\d+)*)(%?)([a-z]*)$")
_ORDINAL_SUFFIXES = frozenset({"st", "nd", "rd", "th"})
_KEEP_S = ("it's", "what's", "let's", "that's", "there's", "he's", "she's", "who's", "where's")
#: Sentence-ending stops: the next word is capitalised by grammar, not because it is a name.
_SENTENCE_STOPS = frozenset({".", "!", "?", ":", "-"})
#: Words that end a noun phrase when reading the role it fills ("from X to Y on Z").
_PHRASE_BREAKERS = lx.words(
    "of for in on at by with to from into onto about per via and or but than if so because "
    "when while after before instead between within across through during among"
)
_FRAMING_KINDS = frozenset({"stop", "arrow"})


@dataclass(slots=True)
class Token:
    """One unit of a query: a word, number, date, code or a stop between phrases."""

    kind: str  # word | number | date | code | stop | arrow
    text: str  # canonical lower-case form, e.g. "enable", "50", "month:5"
    entity: bool = False  # written like a name, acronym, product or code
    key: str = ""  # what is compared: the stem of a word, the text otherwise

    @property
    def is_content(self) -> bool:
        """A word or code that says what the query is about."""
        if self.kind == "code":
            return True
        if self.kind != "word":
            return False
        if self.entity:
            return True
        return not (
            self.text in lx.FRAMING
            or _is_negator(self.text)
            or self.text in lx.FAILURE
            or self.text in lx.FIRST_PERSON
            or self.text in lx.THIRD_PERSON
            or self.text in lx.ALTERNATIVE_MARKERS
        )


@dataclass(slots=True)
class Query:
    """What the guard needs to know about one text."""

    tokens: list[Token]
    numbers: Counter[str] = field(default_factory=Counter)
    dates: Counter[str] = field(default_factory=Counter)
    polarity: list[str] = field(default_factory=list)  # negators and failure words present
    persons: frozenset[str] = frozenset()
    roles: dict[str, set[str]] = field(default_factory=dict)
    keys: frozenset[str] = frozenset()  # every word, number, date and code it names

    @property
    def content(self) -> list[tuple[int, Token]]:
        return [(i, t) for i, t in enumerate(self.tokens) if t.is_content]


@lru_cache(maxsize=8192)
def analyse(text: str) -> Query:
    """Tokenise and annotate ``text`` (cached: stored texts are verified again and again)."""
    tokens = _number_words(_rewrite_phrases(_tokenize(text)))
    tokens = _mark_dates(tokens)
    for token in tokens:
        token.key = stem(token.text) if token.kind == "word" else token.text
    query = Query(tokens)
    for token in tokens:
        if token.kind == "number":
            query.numbers[token.text] += 1
        elif token.kind == "date":
            query.dates[token.text] += 1
        elif token.kind == "word" and (_is_negator(token.text) or token.text in lx.FAILURE):
            query.polarity.append(token.text)
    query.persons = frozenset(
        "third" if t.text in lx.THIRD_PERSON else "first"
        for t in tokens
        if t.kind == "word" and (t.text in lx.THIRD_PERSON or t.text in lx.FIRST_PERSON)
    )
    query.roles = _roles(tokens)
    query.keys = frozenset(t.key for t in tokens if t.kind not in _FRAMING_KINDS)
    return query


def _tokenize(text: str) -> list[Token]:
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    tokens: list[Token] = []
    sentence_start = True
    for match in _TOKEN.finditer(text):
        kind, surface = match.lastgroup or "", match.group()
        if kind == "stop":
            mark = surface.strip()[:1] or ","
            tokens.append(Token("stop", mark))
            sentence_start = mark in _SENTENCE_STOPS
            continue
        if kind == "arrow":
            tokens.append(Token("arrow", "->"))
        elif kind == "email":
            tokens.append(Token("code", surface.lower(), entity=True))
        elif kind == "clock":
            tokens.append(Token("date", "time:" + re.sub(r"[\s.]", "", surface.lower())))
        elif kind == "ratio":
            tokens.append(Token("code", surface, entity=True))
        elif kind == "num":
            tokens.extend(_number_token(surface))
        elif kind == "code":
            tokens.append(_code_token(surface.rstrip(".-_")))
        else:
            tokens.extend(_word_tokens(surface, sentence_start))
        sentence_start = False
    return tokens


def _word_tokens(surface: str, sentence_start: bool) -> list[Token]:
    low = surface.lower()
    if low.endswith("'s") and low not in _KEEP_S:
        surface, low = surface[:-2], low[:-2]
    canonical = lx.CANONICAL.get(low, low)
    if canonical != low and any(ch.isdigit() for ch in low):
        return [Token("word", canonical)]  # "2fa" is a word, not a number
    written_as_name = (
        canonical not in lx.FRAMING
        and not low.startswith("i'")
        and any(ch.isupper() for ch in surface)
        and (
            not sentence_start
            or (len(surface) > 1 and surface.isupper())
            or any(ch.isupper() for ch in surface[1:])
        )
    )
    return [Token("word", canonical, entity=written_as_name)]


def _number_token(surface: str) -> list[Token]:
    low = surface.lower()
    if low in lx.CANONICAL:
        return [Token("word", lx.CANONICAL[low])]
    match = _NUMBER.match(low)
    if match is None:
        return [Token("code", low, entity=True)]
    digits, percent, suffix = match.groups()
    value = digits.replace(",", "")
    if suffix in ("am", "pm"):
        return [Token("date", f"time:{_plain_number(value)}{suffix}")]
    if suffix in lx.MULTIPLIERS and "." not in value:
        value = str(int(value) * lx.MULTIPLIERS[suffix])
        suffix = ""
    if suffix and suffix not in _ORDINAL_SUFFIXES and suffix not in lx.UNIT_SUFFIXES:
        return [Token("code", low, entity=True)]  # "4o", "3d-secure"... an identifier
    tokens = [Token("number", _plain_number(value))]
    if percent:
        tokens.append(Token("word", "percent"))
    if suffix in lx.UNIT_SUFFIXES:
        tokens.append(Token("word", lx.CANONICAL.get(suffix, suffix)))
    return tokens


def _plain_number(value: str) -> str:
    """``"007"`` and ``"7"`` are the same count; versions like ``"4.10"`` stay as written."""
    if value.isdigit():
        return str(int(value))
    return value


def _code_token(surface: str) -> Token:
    low = surface.lower()
    if low in lx.CANONICAL:
        return Token("word", lx.CANONICAL[low])
    if version := _VERSION.match(low):
        return Token("number", _plain_number(version.group(1)))
    if quarter := _QUARTER.match(low):
        return Token("date", "quarter:" + quarter.group(1))
    if fiscal := _FISCAL.match(low):
        return Token("date", "year:" + fiscal.group(1)[-2:])
    return Token("code", low, entity=True)


def _rewrite_phrases(tokens: list[Token]) -> list[Token]:
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        for length in (3, 2):
            window = tokens[i : i + length]
            if len(window) == length and all(t.kind == "word" for t in window):
                # Stems, so "setting up" and "turned off" are found like "set up", "turn off".
                replacement = _STEMMED_PHRASES.get(tuple(stem(t.text) for t in window))
                if replacement is not None:
                    out.append(Token("word", replacement))
                    i += length
                    break
        else:
            out.append(tokens[i])
            i += 1
    for token in out:
        if token.text == "1:1":
            token.kind, token.entity = "code", True
    return out


def _number_words(tokens: list[Token]) -> list[Token]:
    """Turn runs of number words ("forty five", "two hundred") into one number token."""
    out: list[Token] = []
    total = current = 0
    run = False

    def flush() -> None:
        nonlocal total, current, run
        if run:
            out.append(Token("number", str(total + current)))
        total = current = 0
        run = False

    for token in tokens:
        word = token.text if token.kind == "word" else ""
        if word in lx.UNITS:
            current += lx.UNITS[word]
            run = True
        elif word in lx.SCALES and run:
            if lx.SCALES[word] == 100:
                current *= 100
            else:
                total += current * lx.SCALES[word]
                current = 0
        else:
            flush()
            out.append(token)
    flush()
    return out


def _mark_dates(tokens: list[Token]) -> list[Token]:
    """Months, weekdays, years, relative periods and day numbers become ``date`` tokens."""
    out = list(tokens)
    for i, token in enumerate(out):
        if token.kind == "number" and _looks_like_year(token.text):
            out[i] = Token("date", "year:" + token.text[-2:])
        elif token.kind == "word" and token.text in lx.WEEKDAYS:
            out[i] = Token("date", "weekday:" + lx.WEEKDAYS[token.text])
        elif token.kind == "word" and token.text in lx.MONTHS and _is_month(out, i):
            out[i] = Token("date", f"month:{lx.MONTHS[token.text]}")
            for j in range(max(0, i - 2), min(len(out), i + 3)):
                if out[j].kind == "number" and out[j].text.isdigit() and int(out[j].text) <= 31:
                    out[j] = Token("date", "day:" + out[j].text)
    merged: list[Token] = []
    for token in out:
        previous = merged[-1] if merged else None
        if token.text in ("am", "pm") and previous is not None and previous.kind == "number":
            merged[-1] = Token("date", f"time:{previous.text}{token.text}")  # "3 pm" is "3pm"
            continue
        if (
            token.kind == "word"
            and token.text in lx.PERIODS
            and previous is not None
            and previous.kind == "word"
            and previous.text in lx.RELATIVE
        ):
            merged[-1] = Token("date", f"{lx.RELATIVE[previous.text]}:{token.text}")
        elif token.kind == "word" and token.text in lx.DAY_WORDS:
            merged.append(Token("date", "day:" + token.text))
        else:
            merged.append(token)
    return merged


def _looks_like_year(text: str) -> bool:
    return text.isdigit() and len(text) == 4 and 1900 <= int(text) <= 2099


def _is_month(tokens: list[Token], i: int) -> bool:
    """Full month names always; "may" and abbreviations only next to a number or when
    written capitalised mid-sentence ("May 3", "3rd of May"), never the verb "may"."""
    word = tokens[i].text
    if len(word) > 4 and word != "may":
        return True
    near = tokens[max(0, i - 2) : i] + tokens[i + 1 : i + 3]
    return tokens[i].entity or any(t.kind == "number" for t in near)


def _is_negator(word: str) -> bool:
    return word in lx.NEGATORS or word.endswith("n't")


def _roles(tokens: list[Token]) -> dict[str, set[str]]:
    """Which things fill a directional role: source ("from X", "X ->"), target ("to X",
    "into X", "-> X"), chosen and alternative ("X instead of Y")."""
    roles: dict[str, set[str]] = {}

    def assign(items: list[Token], role: str) -> None:
        for item in items:
            roles.setdefault(item.key, set()).add(role)

    for i, token in enumerate(tokens):
        if token.kind == "arrow":
            assign(_phrase(tokens, i, -1), "source")
            assign(_phrase(tokens, i, +1), "target")
        elif token.kind == "word" and token.text in lx.SOURCE_MARKERS:
            assign(_phrase(tokens, i, +1), "source")
        elif token.kind == "word" and token.text in lx.TARGET_MARKERS:
            assign(_phrase(tokens, i, +1), "target")
        elif token.kind == "word" and token.text in lx.ALTERNATIVE_MARKERS:
            assign(_phrase(tokens, i, -1), "chosen")
            assign(_phrase(tokens, i, +1), "alternative")
    return roles


def _phrase(tokens: list[Token], at: int, step: int) -> list[Token]:
    """The meaningful tokens of the phrase next to position ``at``, up to a stop or a
    preposition."""
    items: list[Token] = []
    i = at + step
    while 0 <= i < len(tokens):
        token = tokens[i]
        if token.kind in _FRAMING_KINDS or (
            token.kind == "word" and not token.entity and token.text in _PHRASE_BREAKERS
        ):
            break
        if token.kind in ("number", "date", "code") or token.is_content:
            items.append(token)
        i += step
    return items


# --- comparing words ---------------------------------------------------------------------------

_SUFFIXES = (
    ("izations", ""),
    ("ization", ""),
    ("ications", "y"),
    ("ication", "y"),
    ("ations", "at"),
    ("ation", "at"),
    ("itions", "it"),
    ("ition", "it"),
    ("tions", "t"),
    ("tion", "t"),
    ("sions", "s"),
    ("sion", "s"),
    ("ments", ""),
    ("ment", ""),
    ("ings", ""),
    ("ing", ""),
    ("ies", "y"),
    ("ied", "y"),
    ("es", "e"),
    ("ed", ""),
    ("s", ""),
)
_NO_PLURAL = ("ss", "us", "is")
_UNDOUBLE = frozenset("bdgmnprt")


@lru_cache(maxsize=16384)
def stem(word: str) -> str:
    """A light, deterministic stemmer: "rotation" and "rotate" → "rotat", "logging" → "log",
    "policies" → "polici". Good enough to see two forms of one word; never used to decide
    that two different words mean the same."""
    if len(word) <= 3 or not word.isalpha():
        return word
    word = re.sub(r"is(e|es|ed|ing|ation|ations)$", r"iz\1", word)  # summarise → summarize
    for suffix, replacement in _SUFFIXES:
        if word.endswith(suffix) and not (suffix == "s" and word.endswith(_NO_PLURAL)):
            base = word[: -len(suffix)] + replacement
            if len(base) >= 3:
                word = base
                break
    if len(word) >= 4 and word[-1] == word[-2] and word[-1] in _UNDOUBLE:
        word = word[:-1]  # logging → logg → log
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    if len(word) > 3 and word.endswith("y"):
        word = word[:-1] + "i"
    return word


def _index(groups: tuple[frozenset[str], ...]) -> dict[str, frozenset[int]]:
    index: dict[str, set[int]] = {}
    for number, group in enumerate(groups):
        for word in group:
            index.setdefault(stem(word), set()).add(number)
    return {key: frozenset(value) for key, value in index.items()}


def _pole_index() -> dict[str, list[tuple[int, int]]]:
    index: dict[str, list[tuple[int, int]]] = {}
    for group_number, group in enumerate(lx.OPPOSITES):
        for pole_number, pole in enumerate(group):
            for word in pole:
                index.setdefault(stem(word), []).append((group_number, pole_number))
    return index


_STEMMED_PHRASES = {tuple(stem(w) for w in words): to for words, to in lx.PHRASES.items()}
_SYNONYM_INDEX = _index(lx.SYNONYMS)
_SCOPE_INDEX = _index(lx.SCOPES)
_POLE_INDEX = _pole_index()
_ACTION_KEYS = frozenset(stem(w) for w in lx.ACTIONS)


def related(x: Token, y: Token) -> bool:
    """Two tokens name the same thing: same stem, a longer form of one stem, or synonyms."""
    if x.key == y.key:
        return True
    if x.kind == "code" or y.kind == "code":
        return False
    short, long = sorted((x.key, y.key), key=len)
    if len(short) >= 4 and long.startswith(short) and len(long) - len(short) <= 2:
        return True
    return bool(_SYNONYM_INDEX.get(x.key, frozenset()) & _SYNONYM_INDEX.get(y.key, frozenset()))


class _Pairing:
    """Which content words of each query have a counterpart in the other."""

    def __init__(self, a: Query, b: Query) -> None:
        self.a_content = a.content
        self.b_content = b.content
        self.a_extra = self._unmatched(self.a_content, self.b_content)
        self.b_extra = self._unmatched(self.b_content, self.a_content)
        self.a_matched = {i for i, _ in self.a_content} - {i for i, _ in self.a_extra}
        self.b_matched = {i for i, _ in self.b_content} - {i for i, _ in self.b_extra}

    @staticmethod
    def _unmatched(
        mine: list[tuple[int, Token]], theirs: list[tuple[int, Token]]
    ) -> list[tuple[int, Token]]:
        return [(i, t) for i, t in mine if not any(related(t, other) for _, other in theirs)]


# --- the checks, in the order their reasons are reported ---------------------------------------


def _check_numbers(a: Query, b: Query, _: _Pairing) -> Verdict | None:
    if a.numbers == b.numbers:
        return None
    return Verdict(False, "number", _difference(a.numbers, b.numbers))


def _check_dates(a: Query, b: Query, _: _Pairing) -> Verdict | None:
    if a.dates == b.dates:
        return None
    return Verdict(False, "date", _difference(a.dates, b.dates))


def _check_negation(a: Query, b: Query, pairing: _Pairing) -> Verdict | None:
    if bool(a.polarity) != bool(b.polarity):
        side, words = ("stored", a.polarity) if a.polarity else ("new", b.polarity)
        return Verdict(False, "negation", f"{'/'.join(words)} only in {side} text")
    for _, x in pairing.a_extra:
        for _, y in pairing.b_extra:
            if _negates(x.key, y.key) or _negates(y.key, x.key):
                return Verdict(False, "negation", f"{x.text} vs {y.text}")
    return None


def _negates(word: str, other: str) -> bool:
    return any(other == prefix + word and len(word) >= 4 for prefix in lx.NEGATING_PREFIXES)


def _check_opposites(a: Query, b: Query, pairing: _Pairing) -> Verdict | None:
    poles_a = _poles(pairing.a_content)
    poles_b = _poles(pairing.b_content)
    for group in sorted(set(poles_a) & set(poles_b)):
        if set(poles_a[group]) != set(poles_b[group]):
            words_a = sorted(w for words in poles_a[group].values() for w in words)
            words_b = sorted(w for words in poles_b[group].values() for w in words)
            return Verdict(False, "opposite_action", f"{'/'.join(words_a)} vs {'/'.join(words_b)}")
    for _, x in pairing.a_extra:
        for _, y in pairing.b_extra:
            if _swapped_prefix(x.key, y.key):
                return Verdict(False, "opposite_action", f"{x.text} vs {y.text}")
    return None


def _poles(content: list[tuple[int, Token]]) -> dict[int, dict[int, set[str]]]:
    """For each opposite group the query touches: the poles it holds, with their words."""
    found: dict[int, dict[int, set[str]]] = {}
    for _, token in content:
        for group, pole in _POLE_INDEX.get(token.key, ()):
            found.setdefault(group, {}).setdefault(pole, set()).add(token.text)
    return found


def _swapped_prefix(x: str, y: str) -> bool:
    for first, second in lx.SWAP_PREFIXES:
        for p, q in ((first, second), (second, first)):
            if x.startswith(p) and y.startswith(q):
                rest = x[len(p) :]
                if len(rest) >= 3 and rest == y[len(q) :]:
                    return True
    return False


def _check_direction(a: Query, b: Query, _: _Pairing) -> Verdict | None:
    # The same thing in opposite roles: "from X" in one, "to X" in the other.
    for key in sorted(set(a.roles) & set(b.roles)):
        roles = a.roles[key] | b.roles[key]
        if a.roles[key] != b.roles[key] and (
            {"source", "target"} <= roles or {"chosen", "alternative"} <= roles
        ):
            return Verdict(
                False,
                "direction",
                f"{key}: {'/'.join(sorted(a.roles[key]))} vs {'/'.join(sorted(b.roles[key]))}",
            )
    # Two things both queries name, trading one role: "USD to EUR" / "EUR to USD".
    both = a.keys & b.keys
    for role in ("source", "target", "alternative"):
        only_a = {k for k, r in a.roles.items() if role in r and role not in b.roles.get(k, ())}
        only_b = {k for k, r in b.roles.items() if role in r and role not in a.roles.get(k, ())}
        if only_a & both and only_b & both:
            swapped = f"{'/'.join(sorted(only_a & both))} vs {'/'.join(sorted(only_b & both))}"
            return Verdict(False, "direction", f"{role}: {swapped}")
    return None


def _check_entities(a: Query, b: Query, pairing: _Pairing) -> Verdict | None:
    names_a = [t.text for _, t in pairing.a_extra if t.entity]
    names_b = [t.text for _, t in pairing.b_extra if t.entity]
    if names_a or names_b:
        return Verdict(False, "entity", f"{'/'.join(names_a) or '-'} vs {'/'.join(names_b) or '-'}")
    return None


def _check_scope(a: Query, b: Query, pairing: _Pairing) -> Verdict | None:
    if "third" in a.persons ^ b.persons:
        return Verdict(False, "scope", "someone else's vs the asker's")
    groups_a = _scope_words(pairing.a_content)
    groups_b = _scope_words(pairing.b_content)
    for group in sorted(set(groups_a) & set(groups_b)):
        if not _same_words(groups_a[group], groups_b[group]):
            words_a = "/".join(sorted(t.text for t in groups_a[group]))
            words_b = "/".join(sorted(t.text for t in groups_b[group]))
            return Verdict(False, "scope", f"{words_a} vs {words_b}")
    return None


def _scope_words(content: list[tuple[int, Token]]) -> dict[int, list[Token]]:
    found: dict[int, list[Token]] = {}
    for _, token in content:
        for group in _SCOPE_INDEX.get(token.key, ()):
            found.setdefault(group, []).append(token)
    return found


def _same_words(xs: list[Token], ys: list[Token]) -> bool:
    """Each word has a counterpart on the other side ("employees" / "staff" agree)."""
    return all(any(related(x, y) for y in ys) for x in xs) and all(
        any(related(y, x) for x in xs) for y in ys
    )


def _check_terms(a: Query, b: Query, pairing: _Pairing) -> Verdict | None:
    extra_a = [t.text for _, t in pairing.a_extra]
    extra_b = [t.text for _, t in pairing.b_extra]
    if extra_a and extra_b:
        return Verdict(False, "term", f"{'/'.join(extra_a)} vs {'/'.join(extra_b)}")
    query, other, matched, extra, side = (
        (a, b, pairing.a_matched, pairing.a_extra, "stored")
        if extra_a
        else (b, a, pairing.b_matched, pairing.b_extra, "new")
    )
    if len(extra) > MAX_EXTRA_WORDS:
        words = "/".join(t.text for _, t in extra)
        return Verdict(False, "term", f"extra words {words} in {side} text")
    for i, token in extra:
        if token.key in _ACTION_KEYS:
            return Verdict(False, "term", f"extra action {token.text} in {side} text")
        if token.key in _SCOPE_INDEX:
            return Verdict(False, "scope", f"extra scope word {token.text} in {side} text")
        # An extra word may only complete a shared phrase as its head ("bastion" → "bastion
        # host", "error" → "error code"). Put before a shared word it narrows it ("team
        # account"); opening a phrase of its own ("for contractors") it adds a qualifier.
        following = query.tokens[i + 1] if i + 1 < len(query.tokens) else None
        if following is not None and (i + 1) in matched and following.kind == "word":
            return Verdict(False, "scope", f"{token.text} narrows {following.text}")
        if i == 0 or not _shared(query.tokens[i - 1], other):
            return Verdict(False, "scope", f"extra qualifier {token.text} in {side} text")
    return None


def _shared(token: Token, other: Query) -> bool:
    """A meaningful token (not framing, not a stop) that the other query has too."""
    if token.kind in _FRAMING_KINDS or (
        token.kind == "word"
        and not token.entity
        and (token.text in lx.FRAMING or _is_negator(token.text))
    ):
        return False
    return any(t.kind == token.kind and related(token, t) for t in other.tokens)


def _difference(a: Counter[str], b: Counter[str]) -> str:
    only_a = sorted((a - b).elements())
    only_b = sorted((b - a).elements())
    return f"{'/'.join(only_a) or '-'} vs {'/'.join(only_b) or '-'}"
