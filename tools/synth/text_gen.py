"""The corpus's own text: random English sentences from a small word grammar, and digit strings.

Every function takes a ``numpy.random.Generator`` and draws from nothing else, so
the same generator state gives the same text. All output is lower-case words
separated by single spaces (digits are spelled out), which every TTS engine in
``tts_engines`` reads the same way.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> s = sentence(rng, 8)
>>> s == sentence(np.random.default_rng(0), 8)
True
>>> len(digit_string(np.random.default_rng(1), 6).split())
6
"""

from __future__ import annotations

import numpy as np

DIGITS = ("oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# A small lexicon by part of speech. Nouns are (singular) concrete things the
# verbs can act on; verbs are past tense so no agreement is needed.
WORDS: dict[str, tuple[str, ...]] = {
    "det": ("the", "a", "this", "that", "every", "one", "my", "your", "our", "their"),
    "adj": (
        "old", "new", "small", "large", "quiet", "bright", "yellow", "green", "heavy",
        "cold", "warm", "strange", "simple", "narrow", "wooden", "broken", "early",
        "gentle", "rapid", "silver", "careful", "distant", "little", "famous",
    ),
    "noun": (
        "river", "garden", "teacher", "window", "engine", "letter", "market", "doctor",
        "basket", "mountain", "village", "sailor", "kitchen", "pencil", "station",
        "farmer", "bridge", "island", "camera", "ladder", "blanket", "painter", "road",
        "bottle", "forest", "bicycle", "captain", "table", "morning", "question",
        "museum", "orange", "dinner", "picture", "student", "hammer", "shadow", "lamp",
    ),
    "verb_t": (
        "found", "moved", "painted", "carried", "opened", "watched", "cleaned", "needed",
        "repaired", "visited", "followed", "counted", "borrowed", "described", "reached",
        "measured", "ordered", "remembered", "showed", "wanted",
    ),
    "verb_i": (
        "waited", "laughed", "arrived", "slept", "listened", "travelled", "danced",
        "stopped", "returned", "worked", "smiled", "shouted",
    ),
    "adv": (
        "slowly", "quickly", "again", "today", "yesterday", "quietly", "later", "twice",
        "often", "early", "outside", "together",
    ),
    "prep": ("near", "behind", "under", "beside", "across", "inside", "above", "past"),
    "conj": ("and", "but", "so", "while", "because"),
    "wh": ("where", "when", "why", "how"),
}


def _pick(rng: np.random.Generator, pos: str) -> str:
    words = WORDS[pos]
    return words[int(rng.integers(len(words)))]


def noun_phrase(rng: np.random.Generator) -> list[str]:
    """NP -> det [adj] noun."""
    out = [_pick(rng, "det")]
    if rng.random() < 0.5:
        out.append(_pick(rng, "adj"))
    out.append(_pick(rng, "noun"))
    return out


def clause(rng: np.random.Generator) -> list[str]:
    """S -> NP VP [PP] [adv]; VP -> verb_t NP | verb_i; questions sometimes."""
    if rng.random() < 0.15:  # wh-question: where did NP verb NP
        verb = _pick(rng, "verb_t")
        return [_pick(rng, "wh"), "did", *noun_phrase(rng), verb, *noun_phrase(rng)]
    out = noun_phrase(rng)
    if rng.random() < 0.7:
        out += [_pick(rng, "verb_t"), *noun_phrase(rng)]
    else:
        out.append(_pick(rng, "verb_i"))
    if rng.random() < 0.5:
        out += [_pick(rng, "prep"), *noun_phrase(rng)]
    if rng.random() < 0.3:
        out.append(_pick(rng, "adv"))
    return out


def sentence(rng: np.random.Generator, num_words: int) -> str:
    """About ``num_words`` words (clauses are joined by conjunctions, then cut to length).

    The cut keeps at least 3 words and only ends a sentence at a content word
    (never on a determiner, preposition or conjunction).
    """
    if num_words < 3:
        raise ValueError(f"num_words must be >= 3, got {num_words}")
    words = clause(rng)
    while len(words) < num_words:
        words += [_pick(rng, "conj"), *clause(rng)]
    words = words[:num_words]
    function_words = set(WORDS["det"] + WORDS["prep"] + WORDS["conj"] + WORDS["wh"] + ("did",))
    while len(words) > 3 and words[-1] in function_words:
        words.pop()
    return " ".join(words)


def digit_string(rng: np.random.Generator, num_digits: int) -> str:
    """``num_digits`` spelled digits, e.g. ``"four oh seven nine"``."""
    if num_digits < 1:
        raise ValueError(f"num_digits must be >= 1, got {num_digits}")
    return " ".join(DIGITS[int(d)] for d in rng.integers(0, 10, size=num_digits))


def utterance_text(rng: np.random.Generator, num_words: int, p_digits: float = 0.2) -> str:
    """A sentence, or with probability ``p_digits`` a digit string, of about ``num_words``."""
    if rng.random() < p_digits:
        return digit_string(rng, max(3, num_words))
    return sentence(rng, max(3, num_words))
