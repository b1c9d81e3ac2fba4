"""The display view of `scan_text`: an identifier written so that it displays unchanged (escape
sequences, overwrites, invisible characters, compatibility forms, markup, look-alike letters) is
found; honest output that merely holds such characters (tables, colours, progress bars) is not."""

from __future__ import annotations

import html
import random
import re
from collections.abc import Callable

import pandas as pd
import pytest

from bedside.policy import IdentifierIndex, scan_text
from bedside.policy import _display as display
from bedside.policy.scan import findings_block

DISPLAY = "encoded:display+identifier"


@pytest.fixture(scope="module")
def row(patients: pd.DataFrame) -> pd.Series:
    # A patient whose name is ASCII letters and spaces only, so each phrasing below is exact.
    names = patients.name.astype(str)
    return patients[names.str.fullmatch(r"[A-Za-z]+ [A-Za-z]+")].iloc[0]


def _fullwidth(v: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in v)


def _bold_math(v: str) -> str:
    # MATHEMATICAL BOLD letters (NFKC folds them back)
    return "".join(
        chr(0x1D400 + ord(c) - 65) if c.isupper() else chr(0x1D41A + ord(c) - 97) if c.islower()
        else c for c in v
    )  # fmt: skip


_CYRILLIC = str.maketrans("aceopxyAEOPCTHKMB", "асеорхуАЕОРСТНКМВ")

# (phrasing, how it is written): what a reader sees is the value itself.
PHRASINGS: list[tuple[str, Callable[[str], str]]] = [
    ("ansi-reset", lambda v: v[:5] + "\x1b[0m" + v[5:]),
    ("ansi-bold", lambda v: v[:3] + "\x1b[1m" + v[3:] + "\x1b[0m"),
    ("ansi-osc8-link", lambda v: "\x1b]8;;https://x.org\x1b\\" + v[:4] + "\x1b]8;;\x1b\\" + v[4:]),
    ("ansi-c1-csi", lambda v: v[:4] + "\x9b31m" + v[4:]),
    ("backspace", lambda v: v[:5] + "Q\b" + v[5:]),
    ("backspaces", lambda v: v[:5] + "XYZ\b\b\b" + v[5:]),
    ("carriage-return-decoy", lambda v: "x" * 5 + v[5:] + "\r" + v[:5]),
    ("carriage-return-prefix", lambda v: "xxxx\r" + v),
    ("cursor-back", lambda v: v[:5] + "ZZZ\x1b[3D" + v[5:]),
    ("zero-width-space", lambda v: v[:5] + "\u200b" + v[5:]),
    ("soft-hyphen", lambda v: v[:3] + "\u00ad" + v[3:]),
    ("word-joiner-everywhere", lambda v: "\u2060".join(v)),
    ("bom", lambda v: v[:2] + "\ufeff" + v[2:]),
    ("zwnj-zwj", lambda v: v[:2] + "\u200c" + v[2:4] + "\u200d" + v[4:]),
    ("variation-selector", lambda v: "\ufe0f".join(v)),
    ("hangul-filler", lambda v: v[:3] + "\u3164" + v[3:]),
    ("nul-and-bell", lambda v: v[:3] + "\x00\x07" + v[3:]),
    ("fullwidth", _fullwidth),
    ("mathematical-bold", _bold_math),
    ("html-inline-tag", lambda v: v[:3] + "<b></b>" + v[3:]),
    ("html-span-attrs", lambda v: f'<span style="color:red">{v[:3]}</span><span>{v[3:]}</span>'),
    ("html-wbr", lambda v: v[:4] + "<wbr>" + v[4:]),
    ("html-comment", lambda v: v[:3] + "<!-- note -->" + v[3:]),
    ("html-unknown-element", lambda v: v[:3] + "<x-y>" + v[3:] + "</x-y>"),
    ("html-stray-end-tag", lambda v: v[:3] + "</div>" + v[3:]),  # ignored by a browser
    ("html-cell-outside-table", lambda v: v[:3] + "<td>" + v[3:]),  # ignored by a browser
    ("html-bogus-comment", lambda v: v[:3] + "<!x>" + v[3:]),
    ("html-numeric-references", lambda v: "".join(f"&#{ord(c)};" for c in v)),
    ("html-hex-references", lambda v: "".join(f"&#x{ord(c):x};" for c in v)),
    ("html-named-reference", lambda v: v[:3] + "&shy;" + v[3:].replace(" ", "&nbsp;")),
    (
        "html-line-break-in-text",
        lambda v: (
            "<p>" + v.replace(" ", "\n") + "</p>"
            if " " in v
            else "<p>" + v[:3] + "<i>" + v[3:] + "</i></p>"
        ),
    ),
    ("right-to-left-override", lambda v: v[:3] + "\u202e" + v[3:6][::-1] + "\u202c" + v[6:]),
    ("combining-overlay", lambda v: v[0] + "\u0336" + v[1:]),
    ("cyrillic-look-alikes", lambda v: v.translate(_CYRILLIC)),
]


@pytest.mark.parametrize("column", ["mrn", "name"])
@pytest.mark.parametrize(("phrasing", "write"), PHRASINGS, ids=[p for p, _ in PHRASINGS])
def test_a_value_displayed_unchanged_is_found(
    patient_index: IdentifierIndex,
    row: pd.Series,
    column: str,
    phrasing: str,
    write: Callable[[str], str],
) -> None:
    value = str(row[column])
    text = f"patient:\n{write(value)}\n"
    if phrasing == "cyrillic-look-alikes" and text.translate(_CYRILLIC) == text:
        pytest.skip("no look-alike letter in this value")
    found = scan_text(text, patient_index)
    assert findings_block(found), phrasing
    assert value not in repr(found)
    if any(f.kind == "identifier" for f in scan_text(text, patient_index, display=False)):
        return  # found plainly already (a code's prefix is optional; "xxxx\r" precedes it)
    hits = [f for f in found if f.kind == DISPLAY]
    assert hits and hits[0].column == column
    assert (hits[0].start, hits[0].end) == (0, len(text))  # the whole text


def test_a_value_in_a_table_cell_split_by_tags_is_found(
    patient_index: IdentifierIndex, row: pd.Series
) -> None:
    name = str(row["name"])
    cell = f"<td>{name[:3]}<span></span>{name[3:]}</td>"
    found = scan_text(f"<table><tr><td>7</td>{cell}</tr></table>", patient_index)
    assert [f.column for f in found if f.kind == DISPLAY] == ["name"]


def test_phi_is_read_in_the_view_too(patient_index: IdentifierIndex) -> None:
    email = "x.y@example.org"
    found = scan_text(email[:4] + "\u200b" + email[4:], patient_index)
    assert "encoded:display+phi:email" in {f.kind for f in found}


def test_encodings_are_read_in_the_view(patient_index: IdentifierIndex, row: pd.Series) -> None:
    import base64

    b64 = base64.b64encode(str(row["mrn"]).encode()).decode()
    found = scan_text(b64[:6] + "\u200b" + b64[6:], patient_index)
    assert "encoded:display+encoded:base64+identifier" in {f.kind for f in found}


def test_what_the_text_shows_plainly_is_not_repeated(
    patient_index: IdentifierIndex, row: pd.Series
) -> None:
    # A plain value in a text that also has a view: the notice names the plain finding.
    text = f"\x1b[1m {row['mrn']} \x1b[0m"
    found = scan_text(text, patient_index)
    assert found[0].kind == "identifier"
    assert not any(f.kind == DISPLAY for f in found)


def test_a_listing_of_dates_in_the_view_is_strong(patients: pd.DataFrame) -> None:
    # Dates of birth alone are weak; five of them in a view are a listing, as in plain text.
    index = IdentifierIndex.from_frames([(patients, ["dob"])])
    dobs = [str(d)[:10] for d in patients.dob.head(6)]
    plain = "\n".join(dobs)
    assert findings_block(scan_text(plain, index))
    hidden = "\n".join(d[:4] + "\u200b" + d[4:] for d in dobs)
    assert not findings_block(scan_text(hidden, index, display=False))
    assert findings_block(scan_text(hidden, index))


# -- honest outputs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aggregates(patients: pd.DataFrame) -> pd.DataFrame:
    numeric = patients.select_dtypes("number").columns.tolist()
    by = [c for c in ("sex", "ward") if c in patients.columns] or [numeric[0]]
    return patients.groupby(by)[numeric].mean().round(2)


def test_honest_html_tables_are_not_blocked(
    patient_index: IdentifierIndex, aggregates: pd.DataFrame, patients: pd.DataFrame
) -> None:
    clinical = patients.drop(columns=["mrn", "name", "dob", "postcode", "phone"])
    for text in [
        aggregates.to_html(),
        aggregates._repr_html_(),
        aggregates.style.format(precision=1).to_html(),
        clinical.describe().to_html(),
        clinical.head(200).to_html(),
        "<p>Mean age <b>54.2</b> years &amp; median stay <i>3</i> days.</p>",
    ]:
        found = scan_text(text, patient_index)
        assert not findings_block(found), [f.kind for f in found]


def test_honest_terminal_output_is_not_blocked(
    patient_index: IdentifierIndex, aggregates: pd.DataFrame
) -> None:
    table = aggregates.to_string()
    bar = "".join(f"\r{p:3d}%|{'█' * (p // 10):10s}| {p}/100 [00:01<00:00]" for p in range(101))
    texts = [
        "\x1b[1;32mOK\x1b[0m model fitted: AUC \x1b[33m0.81\x1b[0m (95% CI 0.78-0.84)\n",
        bar,
        bar.replace("█", "#"),
        "\n".join(f"\x1b[3{i % 8}m{line}\x1b[0m" for i, line in enumerate(table.splitlines())),
        "epoch 1/3\b\b\b2/3\b\b\b3/3 loss=0.412\n",
        "Warning: p < 0.05 & n > 30 for all strata\n",
        "Température médiane 37,2 °C — durée de séjour 3,4 jours\n",
        "患者数 1200 人、平均年齢 54 歳\n",
    ]
    for text in texts:
        found = scan_text(text, patient_index)
        assert not findings_block(found), (text[:60], [f.kind for f in found])


def test_ordinary_outputs_gain_no_finding_from_their_views(
    patient_index: IdentifierIndex, ordinary_outputs: list[str]
) -> None:
    for text in ordinary_outputs:
        added = [f for f in scan_text(text, patient_index) if f.kind.startswith("encoded:display")]
        assert not added, text[:80]


# -- the view itself -----------------------------------------------------------------------


def test_plain_ascii_needs_no_view() -> None:
    assert not display.needs_view("cohort analysis\n\tmedian 3.4 (IQR 2-5)")
    assert display.display_views("cohort analysis\n\tmedian 3.4 (IQR 2-5)") == []
    for ch in ["\x1b", "\b", "\r", "\x00", "\x7f", "<", "&", "é"]:
        assert display.needs_view("abc" * 5 + ch + "abc"), repr(ch)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("abc\bd", ["abd"]),
        ("abcdef\b\b\bX", ["abcX", "abcXef"]),  # JupyterLab deletes; a terminal overwrites
        ("12345678\rab", ["ab345678"]),
        ("line\r\nnext", ["line\nnext"]),
        ("\x1b[31mred\x1b[0m \x1b]0;title\x07ok", ["red ok"]),
    ],
)
def test_terminal_rendering(text: str, shown: list[str]) -> None:
    assert display.display_views(text) == shown


def test_markup_rendering_keeps_cells_apart() -> None:
    view = display.display_views("<table><tr><td>Smith</td><td>John</td></tr></table>")
    # Cells are on lines of their own (no false "Smith John"), if a view is made at all.
    assert all("Smith John" not in v for v in view)
    (inline,) = display.display_views("<p>Sm<b>it</b>h &amp; <!-- x -->Jo<i>hn</i></p>")
    assert inline.split() == ["Smith", "&", "John"]


def test_style_and_script_are_not_shown() -> None:
    (view,) = display.display_views("<style>.a{b:c}</style><p>x<b>y</b></p><script>z()</script>")
    assert view.split() == ["xy"]


def test_the_compiled_checks_lose_nothing(
    patient_index: IdentifierIndex, row: pd.Series, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the compiled core every text with "<" or "&" gets the full markup view: what the
    # compiled checks skip must not have held a finding.
    rng = random.Random(5)
    name = str(row["name"])
    pieces = [name[:3], name[3:], "x", " ", "\n", "\r", "\b", "\x1b[0m", "<b>", "</td>", "<td>",
              "&amp;", "&#65;", "\u200b", "а", "é", "\t", "<!--", "-->", "<p>", "  "]  # fmt: skip
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(600)]
    texts += [name[:3] + p + name[3:] for p in pieces]
    native = [findings_block(scan_text(t, patient_index)) for t in texts]
    assert any(native)
    monkeypatch.setattr(display, "_scanner", None)
    assert [findings_block(scan_text(t, patient_index)) for t in texts] == native


def test_markup_joins_matches_what_the_view_changes() -> None:
    # Where the compiled check says nothing joins, the full view keeps every word of the text
    # apart as the text does (so skipping it loses nothing).
    for text in [
        "<table>\n  <tr>\n    <td>Smith</td>\n    <td>John</td>\n  </tr>\n</table>",
        "<div><p>a</p>\n<p>b</p></div>",
        "a < b and c > d",
        "fitted\n<Figure size 640x480 with 1 Axes>\n<function f at 0x7f>\nSmith\nJohn",
    ]:
        assert not display._markup_joins(text)
        shown = html.unescape(display._markup(text))
        # No word of the view is new, and no two words are brought onto one line.
        assert set(re.findall(r"\w+", shown)) <= set(re.findall(r"\w+", text))
        assert all(len(line.split()) <= 1 or line in text for line in shown.splitlines())
    for text in ["x<b>y</b>", "x<!---->y", "<p>x\ny</p>", "x&#65;", "<custom>x</custom>",
                 "x</div>y", "x<td>y", "<div>x</td></div>", "<P>x\ny</P>",
                 "x<q-1>y</q-1>"]:  # fmt: skip
        assert display._markup_joins(text), text


def test_look_alikes_read_as_the_letters_they_are_taken_for() -> None:
    # Cyrillic р, у, с, х, Н, В look like p, y, c, x, H, B (a transliteration reads r, u, s,
    # kh, N, V); Greek Ι like I.
    frame = pd.DataFrame({"name": ["Pyxie Chubb", "Ivy Hobbs"]})
    index = IdentifierIndex.from_frames([(frame, ["name"])])
    for text in ["Руxiе Сhubb", "Ρyxie СНUВВ", "Ιvy Ноbbs"]:
        found = scan_text(text, index)
        assert [f.kind for f in found] == [DISPLAY], text
