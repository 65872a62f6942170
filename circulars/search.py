"""Japanese-friendly search text: one form for full/half width, case and kana."""

from __future__ import annotations

import unicodedata

_KATAKANA_TO_HIRAGANA = {code: code - 0x60 for code in range(0x30A1, 0x30F7)}


def search_normalise(text: str) -> str:
    """NFKC (ｺﾞﾐ → ゴミ, ＡＢＣ → ABC), case-folded, katakana as hiragana (ゴミ → ごみ).

    Japanese has no word boundaries, so search is a substring match on this form: 「ごみ」
    finds 「ゴミ収集日」 and 「ごみ収集日」 alike.
    """
    return unicodedata.normalize("NFKC", text).casefold().translate(_KATAKANA_TO_HIRAGANA)
