"""Ninth round's red team: cells nobody had tried, on a table nobody had named, from the client's
side of the real sentry.

A German hospital's case table (`faelle`: `pat_id`, `surname`, `vorname`, `geb_datum` as a
datetime column, `zip`, `telefon`, `geschlecht`, `station`, `alter`, `liegedauer`, `kosten`,
`verstorben`; Faker de_DE, fixed seed; surnames with umlauts and ß) sits behind a real sentry
whose kernel is the guarded one, as in production (sandbox off: the sandbox is tested in
tests/gateway). Every cell is judged by what the client receives on every channel, by a judge
written here and independent of `bedside.policy`: identifier values in many forms (upper case,
ß folded to ss, dates written the German or the English way, phone digits, a record number's
digits without its prefix, percent and byte escapes decoded, HTML references resolved), hex
digests of record numbers and surnames (a dictionary attack away), and column values in record
order.

`LEAKS`: what an honest-but-careless or a curious data scientist would write (logging, warnings,
tqdm postfixes, IPython display objects, Styler, textwrap, pprint, json, format specs,
`str.cat`, sorting by birth date, `query`, assert messages, exceptions, `%time`, matplotlib text,
sklearn reports, torch tensors and data loaders, `Counter`, digests, age in days). `HONEST`: the
same kinds of cells written safely, which must come through with nothing blocked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import re
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import ahocorasick
import numpy as np
import pandas as pd
import pytest
from faker import Faker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))

from _sentry_support import Client  # noqa: E402

from bedside.policy import IdentifierIndex, scan_text  # noqa: E402
from bedside.policy._encodings import DigestIndex  # noqa: E402
from tests.kernel._redteam import contains_run, decisions, record_runs, run_cell, sentry_client  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

N = 3000
SEED = 909
REF = dt.date(2026, 1, 1)
STATIONS = ["Kardiologie", "Onkologie", "Pneumologie", "Unfallchirurgie", "Neurologie", "Geriatrie"]

POLICY = """\
version: bedside/v1
id: st-elsewhere
datasets:
  faelle:
    path: data/patients.parquet
    record_id: pat_id
    identifiers: [pat_id, surname, vorname, geb_datum, zip, telefon]
disclosure:
  min_cell_count: 10
  round_counts_to: 5
  dominance: {n: 2, k: 0.9}
  p_ratio: 0.1
  zeros_disclosive: true
  extremes: suppress
outputs:
  mime_allow: [text/plain, text/html, text/markdown, text/latex, image/png, application/json]
  max_output_bytes: 1000000
  session_egress_bytes: 50000000
errors: scrub
shell: deny
session:
  max_cells: 2000
  max_cpu_seconds: 3600
  max_egress_bytes: 50000000
"""


def faelle(n: int = N, seed: int = SEED) -> pd.DataFrame:
    fake = Faker("de_DE")
    Faker.seed(seed)
    rng = np.random.default_rng(seed)
    dobs = [fake.date_of_birth(minimum_age=18, maximum_age=95) for _ in range(n)]
    alter = np.array([(REF - d).days // 365 for d in dobs])
    surnames = [fake.last_name() for _ in range(n)]
    # German spellings a careless upper() or casefold() rewrites (ß -> SS)
    for i, name in enumerate(("Weiß", "Strauß", "Groß", "Meißner", "Voß")):
        surnames[20 + i] = name
    return pd.DataFrame(
        {
            "pat_id": [f"P{4100000 + i * 29:07d}" for i in range(n)],
            "surname": surnames,
            "vorname": [fake.first_name() for _ in range(n)],
            "geb_datum": pd.to_datetime(dobs),
            "zip": [fake.postcode() for _ in range(n)],
            "telefon": [fake.phone_number() for _ in range(n)],
            "geschlecht": rng.choice(["w", "m"], n),
            "station": rng.choice(STATIONS, n),
            "alter": alter,
            "liegedauer": rng.integers(1, 40, n),
            "kosten": np.round(rng.lognormal(8.2, 0.7, n), 2),
            "verstorben": (rng.random(n) < 0.04 + 0.002 * alter).astype(int),
        }
    )


# -- the judge (independent of bedside.policy) ---------------------------------------------------

_ESC = re.compile(r"(?:\\x[0-9a-fA-F]{2})+")
_HEX = re.compile(r"[0-9a-f]{10,}")
_HEXDIGIT = re.compile(r"[0-9a-fA-F]")
_INVISIBLE = re.compile(r"[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")


class Judge:
    """Which identifier columns, digests or record-order runs a client received."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.auto = ahocorasick.Automaton()
        self.digests: set[str] = set()
        for row in frame.itertuples():
            dob = row.geb_datum.date()
            # the national number's digits (`+49(0)9049 806115` -> `09049806115`)
            national = re.sub(r"\D", "", re.sub(r"^\+49\s*(\(0\))?\s*", "0", row.telefon))
            forms = {
                "pat_id": [row.pat_id, row.pat_id[1:]],
                "surname": [
                    row.surname,
                    row.surname.upper(),
                    _ascii(row.surname),
                    _digraphs(row.surname),
                ],
                "vorname": [f"{row.vorname} {row.surname}", f"{row.surname}, {row.vorname}"],
                "geb_datum": [
                    dob.isoformat(),
                    dob.strftime("%d.%m.%Y"),
                    dob.strftime("%d %B %Y"),
                    f"{(REF - dob).days} days",
                ],
                "zip": [f" {row.zip} ", f"'{row.zip}'", f'"{row.zip}"'],
                "telefon": [row.telefon, re.sub(r"\D", "", row.telefon), " ".join(national)],
            }
            for column, values in forms.items():
                for value in values:
                    value = _fold(value)
                    if len(value) >= 6 or (column == "surname" and len(value) >= 5):
                        self.auto.add_word(value, (column, len(value), value.isdigit()))
            for value in (row.pat_id, row.surname):
                for algo in ("md5", "sha1", "sha256"):
                    self.digests.add(hashlib.new(algo, value.encode()).hexdigest()[:10])
        self.auto.make_automaton()
        self.runs = {c: record_runs(frame[c].to_numpy(dtype=float)) for c in ("kosten", "alter")}

    def _views(self, text: str) -> list[str]:
        views = [text, html.unescape(text), unquote(text)]
        views.append(_ESC.sub(_unescape_bytes, text))
        views.append(text.replace("\\n", " ").replace("\n", " "))
        return [_fold(v) for v in views]

    def leaks(self, messages: list[dict[str, Any]]) -> list[str]:
        texts = [json.dumps(m, default=str, ensure_ascii=False) for m in messages]
        streams: dict[str, str] = {}
        for m in messages:
            if m.get("msg_type") == "stream":
                name = m["content"].get("name", "")
                streams[name] = streams.get(name, "") + str(m["content"].get("text", ""))
        texts += list(streams.values())
        found: set[str] = set()
        for text in texts:
            # json.loads: JSON string escapes (\n, \u00fc) back to what a reader sees
            for view in self._views(text):
                for end, (column, n, digits) in self.auto.iter(view):
                    # a number's digits inside a longer number, a decimal or a hex run (a
                    # message id, a session id) are not the value
                    before = view[end - n] if end >= n else " "
                    after = view[end + 1] if end + 1 < len(view) else " "
                    inside = _HEXDIGIT.match(before) or before == "." or _HEXDIGIT.match(after)
                    if not digits or not inside:
                        found.add(column)
            for token in _HEX.findall(text.lower()):
                if token[:10] in self.digests:
                    found.add("digest")
        shown = "\n".join(streams.values()) + "\n".join(
            str((m.get("content") or {}).get("data", {}).get("text/plain", "")) for m in messages
        )
        nums = np.array([float(x) for x in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?", shown)[:5000]])
        for column, runs in self.runs.items():
            if nums.size >= 5 and contains_run(nums, runs):
                found.add(f"rows:{column}")
        return sorted(found)


def _ascii(name: str) -> str:
    """A name as an ASCII export writes it: marks dropped (`Müller` -> `Muller`)."""
    return unicodedata.normalize("NFKD", name.replace("ß", "ss")).encode("ascii", "ignore").decode()


def _digraphs(name: str) -> str:
    """A German name in ASCII: umlauts as `ae`, `oe`, `ue` (`Döring` -> `Doering`)."""
    for mark, ascii_form in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss")):
        name = name.replace(mark, ascii_form)
    return name


def _unescape_bytes(m: re.Match[str]) -> str:
    return bytes.fromhex(m.group(0).replace("\\x", "")).decode("utf-8", "replace")


def _fold(text: str) -> str:
    text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    return text.casefold().replace("ß", "ss")


# -- the cells ------------------------------------------------------------------------------------

SETUP = """\
import pandas as pd, numpy as np, json, textwrap, hashlib, logging, warnings
import matplotlib
matplotlib.use('module://matplotlib_inline.backend_inline')
import matplotlib.pyplot as plt
from collections import Counter
from pprint import pprint
from IPython.display import display, Markdown, Latex, JSON, HTML
df = hospital.load('faelle')
df['geb_datum'] = pd.to_datetime(df.geb_datum)
REF = pd.Timestamp('2026-01-01')
"""

LEAKS: dict[str, str] = {
    "logging-info": "logging.basicConfig(level=logging.INFO, force=True)\n"
    "logging.getLogger('qc').info('checking patient %s', df.surname.iloc[3])",
    "logging-warning-fstring": "logging.getLogger('qc').warning(f'odd row {df.pat_id.iloc[4]}')",
    "warnings-warn": "warnings.warn(f'duplicate? {df.vorname.iloc[5]} {df.surname.iloc[5]}')",
    "tqdm-postfix": "from tqdm import tqdm\nbar = tqdm(df.head(3).itertuples(), total=3)\n"
    "for r in bar:\n    bar.set_postfix(name=r.surname)",
    "tqdm-auto-postfix": "from tqdm.auto import tqdm as tq\n"
    "bar = tq(df.head(3).itertuples(), total=3)\n"
    "for r in bar:\n    bar.set_postfix(pid=r.pat_id)",
    "markdown": "display(Markdown('\\n'.join(f'* **{r.surname}**, {r.vorname}' "
    "for r in df.head(3).itertuples())))",
    "latex": "Latex(rf'$\\text{{{df.surname.iloc[6]}}}$')",
    "json-display": "JSON(json.loads(df.head(2).to_json(orient='records', date_format='iso')))",
    "html-list": "HTML('<ul>' + ''.join(f'<li>{n}</li>' for n in df.surname.head(5)) + '</ul>')",
    "styler": "df.head().style",
    "styler-format": "df[['surname', 'geb_datum']].head(3).style.format({'geb_datum': "
    "lambda d: d.strftime('%d.%m.%Y')}).hide(axis='index')",
    "textwrap-indent": "print(textwrap.indent(df.head(3).to_string(), '> '))",
    "textwrap-fill": "print(textwrap.fill(', '.join(df.surname.head(12)), 30))",
    "pprint-records": "pprint(df.head(2).to_dict('records'))",
    "json-indent": "print(json.dumps(df.head(2).to_dict('records'), indent=2, default=str, "
    "ensure_ascii=False))",
    "fstring-spec": "r = df.iloc[7]\n"
    "print(f'{r.surname:>20}|{r.vorname:^15}|{r.geb_datum:%d %B %Y}')",
    "upper-initial-dob": "r = df.iloc[9]\nprint(r.surname.upper(), r.vorname[0] + '.', "
    "r.geb_datum.strftime('%d.%m.%Y'))",
    "title-case": "print(df.surname.iloc[11].lower().title(), df.zip.iloc[11])",
    "str-cat": "print(df.surname.head(8).str.cat(sep=' | '))",
    "oldest-patient": "o = df.sort_values('geb_datum')\n"
    "print(o.iloc[0].surname, o.iloc[0].geb_datum.date())",
    "query-row": "df.query('surname == @df.surname.iloc[12]')",
    "query-echo": "q = f\"surname == '{df.surname.iloc[13]}'\"\nprint(q, len(df.query(q)))",
    "assert-message": "assert df.surname.iloc[14] == 'x', f'unexpected {df.surname.iloc[14]}'",
    "raise-valueerror": "for r in df.head(2).itertuples():\n    raise ValueError(r.surname)",
    "raise-with-id": "raise RuntimeError(f'bad record {df.pat_id.iloc[15]}')",
    "time-magic": "%time print(df.pat_id.iloc[16])",
    "mpl-ticklabels": "fig, ax = plt.subplots()\nax.bar(range(5), df.kosten.head(5))\n"
    "ax.set_xticks(range(5), df.surname.head(5))\nplt.show()",
    "mpl-annotate": "fig, ax = plt.subplots()\nax.plot([0, 1], [0, 1])\n"
    "ax.annotate(df.surname.iloc[17], (0.5, 0.5))\nplt.show()",
    "mpl-table": "fig, ax = plt.subplots()\nax.axis('off')\n"
    "ax.table(cellText=df[['surname', 'zip']].head(4).values.tolist())\nplt.show()",
    "torch-batch": "import torch\nX = torch.tensor(df[['alter', 'kosten']].to_numpy()[:12])\n"
    "print(X)",
    "dataloader": "import torch\nfrom torch.utils.data import DataLoader, TensorDataset\n"
    "ds = TensorDataset(torch.tensor(df.kosten.to_numpy()), torch.tensor(df.alter.to_numpy()))\n"
    "for xb, yb in DataLoader(ds, batch_size=10):\n    print(xb, yb)\n    break",
    "counter-surnames": "Counter(df.surname).most_common(5)",
    "sha-pseudonym": "df.pat_id.head(5).map(lambda s: hashlib.sha256(s.encode()).hexdigest()[:12])"
    ".tolist()",
    "age-in-days": "r = df.iloc[19]\nprint(r.surname, (REF - r.geb_datum).days, 'days')",
    "bytes-escapes": "print([s.encode() for s in df.surname.iloc[20:30]])",
    "ascii-escapes": "print(ascii(df.surname.head(12).tolist()))",
    "percent-encoded": "from urllib.parse import quote\nprint(quote(df.surname.iloc[21] + ' ' + "
    "df.vorname.iloc[21]))",
    "nfd-name": "import unicodedata\n"
    "print(unicodedata.normalize('NFD', ' '.join(df.surname.iloc[20:30])))",
    "get-dummies": "pd.get_dummies(df.surname.head(4))",
    "set-next-input": "get_ipython().set_next_input(df.surname.iloc[27])",
    "phone-digits": "df.telefon.str.replace(r'\\D', '', regex=True).head(3)",
    "reversed-names": "df.surname.head(5).map(lambda s: s[::-1])",
    "phone-national": "print(df.telefon.iloc[3].replace('+49(0)', '0').replace('+49 (0) ', '0'))",
    "to-latex": "print(df.head(3).to_latex())",
    "idxmax-row": "df.loc[df.kosten.idxmax()]",
    "to-dict-index": "display(df.head(2).to_dict('index'))",
    "to-records": "df.head(2).to_records()",
    "surname-unique": "df.surname.unique()[:10]",
    "first-name-initial": "r = df.iloc[30]\n"
    "print(f'{r.vorname} {r.surname[0]}., {r.alter} J., {r.station}')",
    "full-name-upper": "r = df.iloc[31]\nprint(f'{r.vorname} {r.surname}'.upper())",
    "name-in-dict-key": "{r.surname: r.kosten for r in df.head(3).itertuples()}",
    "index-name": "s = df.groupby('station').size()\ns.index.name = df.surname.iloc[35]\ns",
    "column-label": "df.groupby('station').kosten.mean().to_frame(df.pat_id.iloc[36])",
    "plot-title": "df.alter.plot.hist(bins=10, title=df.surname.iloc[37])\nplt.show()",
    "legend-label": "plt.hist(df.alter, bins=10, label=df.pat_id.iloc[38])\nplt.legend()\n"
    "plt.show()",
    "dob-strftime-list": "df.geb_datum.head(6).dt.strftime('%d. %B %Y').tolist()",
    "dob-german-with-zip": "r = df.iloc[28]\nprint(f'geb. {r.geb_datum:%d.%m.%Y}, PLZ {r.zip}')",
}

# Leaks that reached the client before this round's fixes (kernel/guard.py, policy/identifiers.py,
# policy/_encodings.py).
LEAKS_FIXED: dict[str, str] = {
    "upper-eszett": "print(df.surname.iloc[20:25].str.upper().tolist())",
    "ascii-export": "import unicodedata\nr = df.iloc[16]\nprint(unicodedata.normalize('NFKD', "
    "r.surname).encode('ascii', 'ignore').decode(), r.alter)",
    "digraph-export": "r = df.iloc[19]\nprint(r.surname.replace('ö', 'oe').upper(), r.liegedauer)",
    "md5-pat-id": "print(hashlib.md5(df.pat_id.iloc[18].encode()).hexdigest())",
    "md5-surname-table": "print(pd.DataFrame({'h': df.surname.head(3).map("
    "lambda s: hashlib.md5(s.encode()).hexdigest()), 'a': df.alter.head(3)}))",
    "sha-pseudonym-one": "print('pseudonym', hashlib.sha256(df.pat_id.iloc[41].encode())"
    ".hexdigest()[:12])",
    "phone-spaced": "print(' '.join(df.telefon.iloc[40].replace('+49(0)', '0').replace(' ', '')))",
    "pid-digits": "print('case', df.pat_id.iloc[26][1:])",
    "mpl-table-names": "fig, ax = plt.subplots()\nax.axis('off')\n"
    "ax.table(cellText=[[n] for n in df.surname.head(3)], colLabels=['Name'])\nplt.show()",
}

# Text drawn into a PNG's pixels: the judge does not read pixels, the guard must withhold it.
DRAWN = {"mpl-ticklabels", "mpl-annotate", "mpl-table", "mpl-table-names"}

# Leaks still reaching the client, by design or not yet recognised (docs/data-scientist/guard.md,
# "Honest limits"): pinned as strict xfails, so a fix shows up as an unexpected pass.
LIMITS: dict[str, str] = {
    "glued-names": "print(df.surname.iloc[33], end='')\nprint(df.vorname.iloc[33])",
    "age-days-zip": "print(df.assign(d=(REF - df.geb_datum).dt.days)[['d', 'zip']].head(3)"
    ".to_string(index=False))",
}

HONEST: dict[str, str] = {
    "group-agg": "df.groupby('station').kosten.agg(['mean', 'median', 'count']).round(1)",
    "info": "df.info()",
    "memory-usage": "df.memory_usage(deep=True)",
    "dtypes": "df.dtypes",
    "band-counts": "pd.cut(df.alter, [0, 40, 60, 80, 120]).value_counts().sort_index()",
    "birth-decades": "df.groupby(df.geb_datum.dt.year // 10 * 10).size()",
    "age-days-describe": "(REF - df.geb_datum).dt.days.describe().round(0)",
    "fstring-mean": "print(f'mittlere Kosten {df.kosten.mean():,.2f} EUR bei {len(df)} Faellen')",
    "markdown-summary": "Markdown(f'**{len(df)}** Faelle, mittleres Alter {df.alter.mean():.1f}')",
    "json-summary": "print(json.dumps(df.groupby('geschlecht').alter.mean().round(1).to_dict(), "
    "indent=2))",
    "logging-summary": "logging.basicConfig(level=logging.INFO, force=True)\n"
    "logging.info('n=%d mean age=%.1f', len(df), df.alter.mean())",
    "birth-months": "df.groupby(df.geb_datum.dt.month_name()).size()",
    "weekday-names": "df.groupby(df.geb_datum.dt.day_name()).kosten.mean().round(0)",
    "crosstab-norm": "pd.crosstab(df.station, df.geschlecht, normalize='index').round(3)",
    "percentile": "np.percentile(df.alter, [25, 50, 75])",
    "vorname-len": "round(df.vorname.str.len().mean(), 2), df.vorname.nunique()",
    "surname-freq-summary": "df.surname.value_counts().describe().round(1)",
    "boxplot": "df.boxplot(column='kosten', by='station')\nplt.show()",
    "median-by-sex": "df.groupby('geschlecht')[['alter', 'kosten']].median()",
    "rate-by-age-band": "df.groupby(pd.cut(df.alter, [17, 40, 60, 80, 100])).verstorben.mean()"
    ".round(3)",
    "missing-counts": "print(df.isna().sum())",
    "counter-station": "Counter(df.station).most_common(3)",
    "zip-region": "df.zip.str[:1].value_counts().sort_index()",
    "corr": "df[['alter', 'liegedauer', 'kosten']].corr().round(2)",
    "assert-ok": "assert df.pat_id.is_unique, 'duplicate ids'\nprint('ids unique')",
    "time-magic": "%time df.groupby('station').kosten.mean().round(0)",
    "query-shape": "df.query('alter > 60').shape",
    "styler-aggregate": "df.groupby('station').kosten.mean().round(0).to_frame().style",
    "classification-report-large": "from sklearn.linear_model import LogisticRegression\n"
    "from sklearn.metrics import classification_report\n"
    "from sklearn.model_selection import train_test_split\n"
    "X = df[['alter', 'liegedauer']]\ny = df.verstorben\n"
    "Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.4, random_state=0)\n"
    "clf = LogisticRegression(class_weight='balanced').fit(Xtr, ytr)\n"
    "print(classification_report(yte, clf.predict(Xte)))",
    "torch-training": "import torch\ntorch.manual_seed(0)\n"
    "from torch.utils.data import DataLoader, TensorDataset\n"
    "X = torch.tensor(((df[['alter', 'liegedauer']] - df[['alter', 'liegedauer']].mean()) / "
    "df[['alter', 'liegedauer']].std()).to_numpy(), dtype=torch.float32)\n"
    "y = torch.tensor(df.verstorben.to_numpy(), dtype=torch.float32)\n"
    "model = torch.nn.Linear(2, 1)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
    "for epoch in range(3):\n    total = 0.0\n"
    "    for xb, yb in DataLoader(TensorDataset(X, y), batch_size=256, shuffle=True):\n"
    "        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xb)[:, 0], yb)\n"
    "        opt.zero_grad(); loss.backward(); opt.step(); total += loss.item() * len(xb)\n"
    "    acc = ((model(X)[:, 0] > 0).float() == y).float().mean().item()\n"
    "    print(f'epoch {epoch} loss {total / len(X):.4f} acc {acc:.3f}')",
    "tqdm-epochs": "from tqdm import tqdm\nbar = tqdm(range(3))\n"
    "for e in bar:\n    bar.set_postfix(loss=round(1 / (e + 1), 3))",
}

# Honest cells that were blocked before this round's fixes: every figure (its PNG's base64 read
# as text held three-letter first names by chance), and `describe()` (`max` is a first name).
HONEST_FIXED: dict[str, str] = {
    "hist": "plt.hist(df.alter, bins=range(10, 110, 10))\nplt.show()",
    "pandas-hist": "df.kosten.plot.hist(bins=[0, 2000, 4000, 8000, 16000, 1e6])\nplt.show()",
    "bar-annotated": "m = df.groupby('station').kosten.mean()\nfig, ax = plt.subplots()\n"
    "ax.bar(m.index, m.values)\nfor i, v in enumerate(m.values):\n"
    "    ax.annotate(f'{v:.0f}', (i, v))\nplt.xticks(rotation=45)\nplt.show()",
    "name-length-summary": "df.surname.str.len().describe().round(2)",
    "describe-max": "df.kosten.describe().round(1)",
    # a count of missing values is a count of records (0 here), no longer class disclosure
    "warnings-summary": "warnings.warn(f'{int(df.kosten.isna().sum())} missing costs')",
}

# Honest cells still blocked (decided outside this round's files): strict xfails.
HONEST_LIMITS: dict[str, str] = {}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return faelle()


@pytest.fixture(scope="module")
def client(frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with sentry_client(frame, POLICY, SETUP, tmp_path_factory.mktemp("redteam9")) as c:
        yield c


@pytest.fixture(scope="module")
def judge(frame: pd.DataFrame) -> Judge:
    return Judge(frame)


def test_the_judge_sees_the_raw_leaks(frame: pd.DataFrame, judge: Judge) -> None:
    r = frame.iloc[22]
    msg = {"content": {"text": f"{r.surname.upper()} {r.geb_datum:%d.%m.%Y}"}}
    assert judge.leaks([msg]) == ["geb_datum", "surname"]


def _xfail(names: dict[str, str], reason: str) -> list[Any]:
    return [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=reason)) for n in names]


@pytest.mark.parametrize(
    "name", [*sorted(LEAKS), *sorted(LEAKS_FIXED), *_xfail(LIMITS, "a documented limit")]
)
def test_leak_reaches_no_client(client: Client, judge: Judge, name: str) -> None:
    code = {**LEAKS, **LEAKS_FIXED, **LIMITS}[name]
    messages = run_cell(client, code)
    assert not judge.leaks(messages), name
    if name in DRAWN:
        assert "blocked" in decisions(messages), name
    errors = [m["content"]["ename"] for m in messages if m.get("msg_type") == "error"]
    # the cell ran (a leak hidden by a mistake in the probe proves nothing)
    assert set(errors) <= {"AssertionError", "ValueError", "RuntimeError"}, (name, errors)


@pytest.mark.parametrize(
    "name",
    [*sorted(HONEST), *sorted(HONEST_FIXED), *_xfail(HONEST_LIMITS, "still blocked")],
)
def test_honest_cell_comes_through(client: Client, name: str) -> None:
    messages = run_cell(client, {**HONEST, **HONEST_FIXED, **HONEST_LIMITS}[name])
    assert "blocked" not in decisions(messages), name
    shown = [
        m for m in messages if m.get("msg_type") in ("stream", "execute_result", "display_data")
    ]
    assert shown, name
    errors = [m for m in messages if m.get("msg_type") == "error"]
    assert not errors, errors[0]["content"]["evalue"] if errors else ""


# -- the rules behind the fixes, in-process --------------------------------------------------------


def test_digests_are_built_lazily_and_match_from_ten_hex_digits() -> None:
    frame = pd.DataFrame({"pid": ["P4100029", "P4100058"], "name": ["Weiß", "Koch"]})
    digests = DigestIndex([(frame, ["pid", "name"])])
    assert digests.find("n = 3000, mean 41.2, at 0x7f6ac4596550") is None
    assert digests._keys is None  # no run of ten hex digits: nothing computed
    md5 = hashlib.md5(b"P4100058").hexdigest()
    assert digests.find(f"id {md5}") == "pid"
    assert digests.find(md5[:10].upper()) == "pid"
    assert digests.find(md5[:9]) is None
    assert digests.find(hashlib.sha256("weiß".encode()).hexdigest()[:12]) == "name"
    assert digests.find(hashlib.sha1(b"koch").hexdigest()) == "name"  # lower-cased value
    assert digests.find(hashlib.md5(b"P4100087").hexdigest()) is None


def test_index_spellings_and_words_alone() -> None:
    frame = pd.DataFrame(
        {
            "surname": ["Weiß", "Müller", "Lee", "Ng Weber"],
            "vorname": ["Max", "August", "Eva", "Johanna"],
            "telefon": ["+49(0)9049 806115", "+33 1 45 67 89 01", "0711 123456", "030 9876543"],
        }
    )
    index = IdentifierIndex.from_frames([(frame, list(frame.columns))])

    def columns(text: str) -> set[str]:
        return {f.column for f in scan_text(text, index) if f.strength == "strong"}

    assert columns("WEISS") == columns("Mueller") == columns("Muller") == {"surname"}
    # one short word, a month's name: not alone; inside a longer value or beside another: yes
    assert not columns("count mean std min max") and not columns("August 120\nJune 95")
    assert not columns("Lee") and columns("Ng Weber") == {"surname"}
    assert columns("Johanna") == {"vorname"}
    assert "telefon" in columns("09049 806115") and "telefon" in columns("01 45 67 89 01")
