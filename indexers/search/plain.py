"""Plain-language searches: "two people, one in sunglasses, on a beach" → the schema's filters.

Deterministic and local (no model, no network). The vocabulary is the field
catalogue itself (`indexers.fields`): every value of a person or scene
enumeration is a word that means `field=value`, a person bool field's name is a
word that means `field=true`. On top of it, three small tables in this module:
synonyms (a word → a word of the vocabulary: "shades" → "sunglasses"), person
nouns ("kid" → age_group=child, "woman" → a person) and count words ("crowd").

    counts     "two people", "3 or more people", "at least 2 people", "a crowd", "nobody", "two faces"
    persons    "a child in a red jacket" → ONE person: age_group=child, upper_clothing=jacket,
               upper_clothing_color=red; "one in sunglasses", "another", "a man" start the next person
    colours    a colour before a clothing word colours that garment, before "hair" the hair;
               alone ("in red") the upper clothing
    negation   "no", "not", "without" negate the next meaning: "without glasses" → eyewear!=glasses,
               "not smiling" → smiling=false; "no face visible" → faces_visible=0 with people_count>=1
    scene      setting and environment words ("on a beach", "outdoors")
    the rest   words it cannot map become one `caption~words` filter

The result is a list of ordinary filters (`Filter.where` prints each as `--where` text), so what the
search understood can always be shown, corrected and run again by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Optional

from humantag.indexers.fields import all_fields
from humantag.indexers.search.model import MAX_PERSON_GROUPS, MAX_TEXT_LENGTH, Filter, QueryError, Scalar

PEOPLE = "people_count"
FACES = "faces_visible"
CAPTION = "caption"
# Generic values: never meant by a word of a query.
NOT_WORDS = frozenset({"none", "other"})

# A word → a word the vocabulary knows (a value of the schema, or a noun/count word below).
SYNONYMS: dict[str, str] = {
    # eyewear, headwear, face covering
    "shades": "sunglasses", "sunnies": "sunglasses", "spectacles": "glasses", "specs": "glasses",
    "eyeglasses": "glasses", "sunglass": "sunglasses", "beanie": "hat", "hats": "hat", "caps": "cap",
    "hijab": "headscarf", "headscarves": "headscarf", "hooded": "hood", "niqab": "veil", "facemask": "mask",
    "masked": "mask", "helmets": "helmet",
    # clothing
    "tshirt": "t-shirt", "tee": "t-shirt", "jumper": "sweater", "pullover": "sweater", "cardigan": "sweater",
    "hoody": "hoodie", "sweatshirt": "hoodie", "blazer": "jacket", "overcoat": "coat", "raincoat": "coat",
    "parka": "coat", "gown": "dress", "tuxedo": "suit", "swimsuit": "swimwear", "bikini": "swimwear",
    "pants": "trousers", "slacks": "trousers", "denim": "jeans",
    # colours
    "crimson": "red", "scarlet": "red", "maroon": "red", "burgundy": "red", "navy": "blue", "teal": "blue",
    "turquoise": "blue", "azure": "blue", "grey": "gray", "silver": "gray", "violet": "purple", "lilac": "purple",
    "lavender": "purple", "magenta": "pink", "tan": "beige", "khaki": "beige", "cream": "beige",
    "gold": "yellow", "golden": "yellow", "olive": "green", "lime": "green", "colorful": "multicolor",
    "colourful": "multicolor", "multicolored": "multicolor", "blonde": "blond",
    # faces
    "smile": "smiling", "smiles": "smiling", "grin": "smiling", "grinning": "smiling", "happy": "smiling",
    "laugh": "laughing", "laughs": "laughing", "frowning": "angry", "mad": "angry", "crying": "sad",
    "unhappy": "sad", "shocked": "surprised", "astonished": "surprised", "stern": "serious", "calm": "neutral",
    "bearded": "beard", "moustache": "mustache", "beards": "beard",
    # pose, accessories
    "seated": "sitting", "sit": "sitting", "sits": "sitting", "stand": "standing", "stands": "standing",
    "walk": "walking", "walks": "walking", "run": "running", "runs": "running", "jogging": "running",
    "squatting": "crouching", "kneeling": "crouching", "lying": "lying", "laying": "lying",
    "handbag": "bag", "purse": "bag", "rucksack": "backpack", "necklace": "jewelry", "earrings": "jewelry",
    "jewellery": "jewelry", "glove": "gloves", "cellphone": "phone", "smartphone": "phone", "mic": "microphone",
    # scene
    "outdoors": "outdoor", "outside": "outdoor", "indoors": "indoor", "inside": "indoor",
    "seaside": "beach", "shore": "beach", "seashore": "beach", "sand": "beach", "city": "street",
    "road": "street", "sidewalk": "street", "downtown": "street", "woods": "forest", "mountains": "mountain",
    "hiking": "mountain", "lake": "water", "sea": "water", "ocean": "water", "river": "water", "pool": "water",
    "snowy": "snow", "wedding": "event", "party": "event", "concert": "stage", "cafe": "restaurant",
    "store": "shop", "mall": "shop", "car": "vehicle", "bus": "vehicle", "train": "vehicle",
    "kitchen": "home", "bedroom": "home", "stadium": "sports-venue", "gym": "sports-venue", "meadow": "field",
    "farm": "field", "elderly": "senior", "old": "senior", "aged": "senior", "grown-up": "adult",
    "teenager": "teen", "teenagers": "teen", "teens": "teen", "adolescent": "teen",
}

# Nouns for people: the attributes they carry (age group by schema value), or none ("man": a person).
PERSON_NOUNS: dict[str, dict[str, str]] = {
    **{w: {} for w in ("person", "persons", "people", "man", "men", "woman", "women", "guy", "guys", "lady",
                       "ladies", "someone", "somebody", "individual", "individuals", "friend", "friends",
                       "human", "humans", "figure", "figures")},
    **{w: {"person.age_group": "child"} for w in ("child", "children", "kid", "kids", "boy", "boys", "girl",
                                                    "girls", "baby", "babies", "toddler", "toddlers")},
    **{w: {"person.age_group": "teen"} for w in ("teen",)},
    **{w: {"person.age_group": "adult"} for w in ("adult", "adults")},
    **{w: {"person.age_group": "senior"} for w in ("senior", "seniors", "grandpa", "grandma", "grandmother",
                                                     "grandfather", "grandparents")},
}
FACE_NOUNS = frozenset({"face", "faces"})
# Count words: (operator, number) of people_count.
COUNT_WORDS: dict[str, tuple[str, int]] = {
    "nobody": ("=", 0), "empty": ("=", 0), "deserted": ("=", 0), "alone": ("=", 1), "solo": ("=", 1),
    "couple": ("=", 2), "pair": ("=", 2), "duo": ("=", 2), "group": (">=", 3), "several": (">=", 3),
    "few": (">=", 3), "many": (">=", 5), "crowd": (">=", 5), "crowded": (">=", 5), "lots": (">=", 5),
}
NUMBERS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())}
NEGATIONS = frozenset({"no", "not", "without", "non", "never", "isn't", "aren't", "nor", "n't"})
# "one in sunglasses", "another smiling": the next person.
NEXT_PERSON = frozenset({"one", "another", "other", "others", "second", "third"})
# Words that only mean a value when the next word is this noun: "long hair", "short hair".
NEEDS_NOUN = {"long": "hair", "short": "hair", "medium": "hair"}
# Glue: never caption words.
FILLER = frozenset(
    "a an the in on at with wearing wears wear dressed of and or who is are was were be photo photos picture "
    "pictures image images shot shots showing show shows find me some there having has have by near to for from "
    "their his her them its looking look looks while into onto both each in-front front visible hair any all "
    "that this these those where which whose being dressed clothes clothing outfit top color colour colored "
    "coloured more least most at than exactly only just".split()
)
_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*|[,;.+]")


@dataclass(frozen=True)
class Meaning:
    field: str
    value: Scalar


@dataclass
class Interpretation:
    """What a plain-language query was understood as: filters (`where` text each) and unused words."""

    query: str
    filters: list[Filter]
    ignored: list[str] = field(default_factory=list)  # negated words that mean nothing to the schema

    @property
    def where(self) -> list[str]:
        return [f.where for f in self.filters]


@lru_cache(maxsize=1)
def vocabulary() -> dict[str, tuple[Meaning, ...]]:
    """word → what it can mean, in schema order: every person/scene enumeration value, person bool names."""
    words: dict[str, list[Meaning]] = {}
    for spec in all_fields().values():
        if not (spec.nested or spec.name.startswith("scene.")):
            continue
        if spec.kind == "bool" and "_" not in spec.column:
            words.setdefault(spec.column, []).append(Meaning(spec.name, True))
        for value in spec.values:
            if value not in NOT_WORDS:
                words.setdefault(value, []).append(Meaning(spec.name, value))
    # A bool field named like a value ("smiling") means the bool: more labelers fill it.
    return {w: tuple(sorted(m, key=lambda x: not isinstance(x.value, bool))) for w, m in words.items()}


def _color_fields() -> dict[str, str]:
    """Colour field → the field it colours ("" when it colours a noun that is no field, e.g. hair)."""
    fields = all_fields()
    out = {}
    for spec in fields.values():
        if spec.nested and spec.column.endswith("_color"):
            base = "person." + spec.column[: -len("_color")]
            out[spec.name] = base if base in fields else ""
    return out


def _is_thing(name: str) -> bool:
    """Something a person has or has not (eyewear, headwear, accessories...): a list of values, or
    values that include "none" (unlike expression, pose or age group)."""
    spec = all_fields()[name]
    return spec.nested and (spec.is_list or "none" in spec.values)


def _tokens(query: str) -> list[str]:
    raw = _TOKEN.findall(query.lower().replace("’", "'"))
    tokens: list[str] = []
    for token in raw:
        if token.endswith("n't"):
            tokens += [token[:-3], "n't"]
        else:
            tokens.append(token)
    return tokens


def _canonical(word: str) -> str:
    """The vocabulary's word for `word`: itself, a synonym, a singular ("jackets" → "jacket"), a joined
    hyphen ("t shirt" is handled by the caller)."""
    known = vocabulary()
    for candidate in (word, word.replace("-", "")):
        if candidate in known or candidate in PERSON_NOUNS or candidate in COUNT_WORDS:
            return candidate
        if candidate in SYNONYMS:
            return SYNONYMS[candidate]
    for suffix, replacement in (("ies", "y"), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            singular = word[: -len(suffix)] + replacement
            if singular in known or singular in SYNONYMS:
                return SYNONYMS.get(singular, singular)
    return word


def _join_hyphenated(tokens: list[str]) -> list[str]:
    """"t shirt" → "t-shirt", "tank top" → "tank-top", "sports venue" → "sports-venue" (schema values)."""
    hyphenated = {tuple(w.split("-")): w for w in vocabulary() if "-" in w}
    out: list[str] = []
    i = 0
    while i < len(tokens):
        pair = tuple(tokens[i : i + 2])
        if pair in hyphenated:
            out.append(hyphenated[pair])
            i += 2
        else:
            out.append(tokens[i])
            i += 1
    return out


def _number(token: str) -> Optional[int]:
    if token.isdigit() and len(token) <= 4:
        return int(token)
    return NUMBERS.get(token)


class _Reader:
    """One pass over the tokens, filling counts, person groups, scene and leftover words."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.counts: dict[str, tuple[str, int]] = {}
        self.groups: list[dict[str, tuple[str, list[Scalar]]]] = []  # field → (op, values)
        self.group_named = False  # the current group already has a person noun
        self.scene: dict[str, tuple[str, list[Scalar]]] = {}
        self.words: list[str] = []
        self.ignored: list[str] = []
        self.negate = False
        self.any_of = False  # the previous glue word was "or"

    # --- helpers ---------------------------------------------------------------------------------

    def new_group(self, force: bool = False) -> None:
        """Start the next person, unless the current one has neither a noun nor attributes yet (or,
        without `force`, has attributes but no noun: "smiling woman" is one person)."""
        if not self.groups or self.group_named or (force and self.groups[-1]):
            self.groups.append({})
        self.group_named = False

    def current(self) -> dict[str, tuple[str, list[Scalar]]]:
        if not self.groups:
            self.groups.append({})
        return self.groups[-1]

    def add(self, meaning: Meaning) -> None:
        spec = all_fields()[meaning.field]
        negate, self.negate = self.negate, False
        value: Scalar = meaning.value
        op = "="
        if negate:
            if spec.kind == "bool":
                value = not value
            else:
                op = "!="
        target = self.scene if not spec.nested else self.current()
        existing = target.get(meaning.field)
        if existing is not None and existing[0] == op and value not in existing[1] and (
            self.any_of or not spec.nested or op == "!="
        ):
            existing[1].append(value)  # "beach or park", "without glasses or sunglasses": any/none of them
        elif existing is not None and spec.nested and value not in existing[1]:
            self.new_group(force=True)  # "a man in glasses with a child in sunglasses": someone else
            self.current()[meaning.field] = (op, [value])
        elif existing is None:
            target[meaning.field] = (op, [value])
        self.any_of = False

    def count(self, name: str, op: str, number: int) -> None:
        self.counts[name] = (op, number)
        self.negate = False

    # --- reading ---------------------------------------------------------------------------------

    def read(self) -> None:
        i = 0
        while i < len(self.tokens):
            i = self.step(i)

    def peek(self, i: int) -> str:
        return self.tokens[i] if i < len(self.tokens) else ""

    def step(self, i: int) -> int:
        token = self.tokens[i]
        word = _canonical(token)
        nxt = _canonical(self.peek(i + 1))
        if token in (",", ";", "."):
            self.negate = False
            return i + 1
        if token == "or":
            self.any_of = True
            return i + 1
        if token in NEGATIONS:
            return self.negation(i)
        numbered = self.numbers(i)
        if numbered is not None:
            return numbered
        if word in COUNT_WORDS:
            op, n = COUNT_WORDS[word]
            self.count(PEOPLE, op, n)
            return i + (2 if nxt == "of" else 1)
        if word in PERSON_NOUNS:
            self.person_noun(word, follows_noun=i > 0 and _canonical(self.tokens[i - 1]) in PERSON_NOUNS)
            return i + 1
        if token in FACE_NOUNS and self.peek(i + 1) == "visible" or token == "visible" and self.peek(i + 1) in FACE_NOUNS:
            self.count(FACES, ">=", 1)
            return i + 2
        if token in NEXT_PERSON and not (nxt in PERSON_NOUNS):
            self.new_group()
            self.group_named = True
            return i + 1
        if word in NEEDS_NOUN:
            if nxt == NEEDS_NOUN[word] and word in vocabulary():
                self.add(self.pick(word, prefer_prefix=nxt))
                return i + 2
            return self.leftover(token, i)
        if word in vocabulary():
            return self.attribute(word, i)
        if token in FILLER or token in FACE_NOUNS:
            return i + 1
        return self.leftover(token, i)

    def leftover(self, token: str, i: int) -> int:
        if self.negate:
            self.ignored.append(token)  # "no X" with X unknown: never "X" as a caption word
            self.negate = False
        else:
            self.words.append(token)
        return i + 1

    def negation(self, i: int) -> int:
        """"no face visible" / "no faces", "no people" / "no one", else negate the next meaning."""
        j = i + 1
        while self.peek(j) in ("a", "an", "the", "any", "visible"):
            j += 1
        target = _canonical(self.peek(j))
        if self.peek(j) in FACE_NOUNS:
            self.count(FACES, "=", 0)
            self.counts.setdefault(PEOPLE, (">=", 1))
            return j + (2 if self.peek(j + 1) == "visible" else 1)
        if target in PERSON_NOUNS and not PERSON_NOUNS[target] or self.peek(j) == "one" and self.tokens[i] == "no":
            self.count(PEOPLE, "=", 0)
            return j + 1
        self.negate = True
        return i + 1

    def numbers(self, i: int) -> Optional[int]:
        """"two people", "3 or more people", "at least 2 people", "more than 2 people", "two faces"."""
        token = self.tokens[i]
        op = "="
        j = i
        if token == "at" and self.peek(i + 1) in ("least", "most"):
            op, j = (">=" if self.peek(i + 1) == "least" else "<="), i + 2
        elif token in ("more", "fewer", "less", "over", "under") and (self.peek(i + 1) == "than" or token in ("over", "under")):
            op = ">" if token in ("more", "over") else "<"
            j = i + (1 if token in ("over", "under") else 2)
        elif token == "up" and self.peek(i + 1) == "to":
            op, j = "<=", i + 2
        number = _number(self.peek(j))
        if number is None:
            return None
        k = j + 1
        if self.peek(k) == "+" or (self.peek(k) == "or" and self.peek(k + 1) == "more"):
            op, k = ">=", k + (1 if self.peek(k) == "+" else 2)
        # A count needs its noun within two words ("two young children", "two people"); "one in sunglasses" is no count.
        for noun_at in (k, k + 1):
            noun = _canonical(self.peek(noun_at))
            if self.peek(noun_at) in FACE_NOUNS:
                self.count(FACES, op, number)
                return noun_at + 1
            if noun in PERSON_NOUNS:
                self.count(PEOPLE, op, number)
                attrs = PERSON_NOUNS[noun]
                if attrs:
                    self.new_group()
                    self.group_named = True
                    for name, value in attrs.items():
                        self.add(Meaning(name, value))
                # Any words between the number and the noun ("young") are read again as ordinary words.
                for extra in range(k, noun_at):
                    self.step_single(extra)
                return noun_at + 1
        return None

    def step_single(self, i: int) -> None:
        word = _canonical(self.tokens[i])
        if word in vocabulary():
            self.add(self.pick(word))
        elif self.tokens[i] not in FILLER:
            self.words.append(self.tokens[i])

    def person_noun(self, word: str, follows_noun: bool) -> None:
        """A person: the next one, except right after another noun ("old man", "teen girl": one person)."""
        attrs = PERSON_NOUNS[word]
        if self.negate:
            self.negate = False
            self.ignored.append(word)
            return
        if not follows_noun:
            self.new_group()
        self.group_named = True
        for name, value in attrs.items():
            if name not in self.current():
                self.add(Meaning(name, value))

    def pick(self, word: str, prefer_prefix: str = "") -> Meaning:
        meanings = vocabulary()[word]
        if prefer_prefix:
            for meaning in meanings:
                if meaning.field.split(".", 1)[1].startswith(prefer_prefix + "_"):
                    return meaning
        return meanings[0]

    def attribute(self, word: str, i: int) -> int:
        meanings = vocabulary()[word]
        colors = _color_fields()
        if any(m.field in colors for m in meanings):
            return self.colour(word, i)
        self.add(self.pick(word))
        return i + 1

    @staticmethod
    def is_colour(token: str) -> bool:
        colors = _color_fields()
        return any(m.field in colors for m in vocabulary().get(_canonical(token), ()))

    def colour(self, word: str, i: int) -> int:
        """"red jacket" → the jacket and its colour; "red hair" → hair colour; "in red" → upper clothing."""
        colors = _color_fields()
        meanings = [m for m in vocabulary()[word] if m.field in colors]
        j = i + 1
        while j - i <= 3 and (self.peek(j) == "and" or self.is_colour(self.peek(j))):
            j += 1  # "red and white shirt": the garment is further on (the first colour is kept)
        noun = self.peek(j)
        garment = _canonical(noun)
        negate = self.negate
        for meaning in meanings:
            base = colors[meaning.field]
            if not base and meaning.field.split(".", 1)[1].startswith(noun + "_"):
                self.add(meaning)  # "red hair"
                return j + 1
        if garment in vocabulary() and not self.is_colour(noun):
            for garment_meaning in vocabulary()[garment]:
                colour_field = garment_meaning.field + "_color"
                match = next((m for m in meanings if m.field == colour_field), None)
                if match is not None:
                    self.add(garment_meaning)
                    self.negate = negate
                    self.add(match)
                    return j + 1
            thing = self.pick(garment)
            if _is_thing(thing.field):  # a thing the schema gives no colour ("a red tie"): the thing only
                self.ignored.append(self.tokens[i])
                self.add(thing)
                return j + 1
        default = next((m for m in meanings if colors[m.field]), None)
        if default is None:  # a hair-only colour alone ("blond"): the hair
            self.add(meanings[0])
        else:
            self.add(default)
        return i + 1

    # --- result ----------------------------------------------------------------------------------

    def filters(self) -> list[Filter]:
        out: list[Filter] = []
        for name, (op, number) in self.counts.items():
            out.append(Filter(field=name, op=op, values=(number,)))  # type: ignore[arg-type]
        groups = [g for g in self.groups if g][:MAX_PERSON_GROUPS]
        for n, group in enumerate(groups, start=1):
            for name, (op, values) in group.items():
                out.append(Filter(field=name, op=op, values=tuple(values), person=n))  # type: ignore[arg-type]
        for name, (op, values) in self.scene.items():
            out.append(Filter(field=name, op=op, values=tuple(values)))  # type: ignore[arg-type]
        text = " ".join(dict.fromkeys(w for w in self.words if w not in FILLER))
        if text:
            out.append(Filter(field=CAPTION, op="~", values=(text[:MAX_TEXT_LENGTH],)))
        return out


def interpret(query: str) -> Interpretation:
    """The filters a plain-language query means. QueryError when it is empty or too long."""
    text = (query or "").strip()
    if not text:
        raise QueryError("empty query: describe the photos, e.g. \"two people, one in sunglasses, on a beach\"")
    if len(text) > MAX_TEXT_LENGTH:
        raise QueryError(f"query longer than {MAX_TEXT_LENGTH} characters")
    reader = _Reader(_join_hyphenated(_tokens(text)))
    reader.read()
    return Interpretation(query=text, filters=reader.filters(), ignored=reader.ignored)

