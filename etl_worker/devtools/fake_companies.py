"""Fake, realistically messy US-company rows as Arrow tables, for seeding the raw table.

Everything is vectorized: numpy draws indices and numbers, pyarrow.compute turns them into
strings (`take` from small vocabularies, element-wise joins, case changes). No Python loop
runs per row, which is what makes a million rows take about a second.

The output is a pure function of (rows, zips, seed, chunk_rows): each chunk draws from its
own generator, seeded from `seed` and the chunk number, so chunks do not depend on each other.
"""

from __future__ import annotations

import datetime as dt
import functools
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl_worker.errors import ConfigError

#: Rows per generated Arrow table: big enough to amortize per-call overhead, small enough
#: to keep memory flat (about 60 MB per chunk).
CHUNK_ROWS = 200_000

#: Rows per zip follow a Zipf law with this exponent: a few zips hold many rows, most few.
ZIPF_EXPONENT = 1.0

#: Zip codes come from two bands; the first prints with a leading zero ('02134').
_LOW_ZIPS = (501, 10_000)
_HIGH_ZIPS = (10_000, 100_000)
_LEADING_ZERO_SHARE = 0.3
MAX_ZIPS = (_LOW_ZIPS[1] - _LOW_ZIPS[0]) + (_HIGH_ZIPS[1] - _HIGH_ZIPS[0])

#: The raw table's columns, in table order, with the Arrow types that binary COPY maps onto
#: the Postgres types of `seed.RAW_TABLE_DDL`.
RAW_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("zip_code", pa.string()),
        ("company_name", pa.string()),
        ("street", pa.string()),
        ("city", pa.string()),
        ("state", pa.string()),
        ("phone", pa.string()),
        ("website", pa.string()),
        ("naics_code", pa.int32()),
        ("employees", pa.int32()),
        ("revenue", pa.decimal128(14, 2)),
        ("founded_date", pa.date32()),
        ("latitude", pa.float64()),
        ("longitude", pa.float64()),
        ("notes", pa.string()),
        ("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)

# Vocabularies. Index draws into these are cheap; their variety is what makes data messy.
_ADJECTIVES = (
    "Acme", "Apex", "Atlas", "Beacon", "Blue Ridge", "Bright", "Cedar", "Coastal", "Crescent",
    "Delta", "Eagle", "Evergreen", "First", "Frontier", "Golden", "Granite", "Great Lakes",
    "Harbor", "Heritage", "Highland", "Horizon", "Iron", "Keystone", "Liberty", "Lone Star",
    "Maple", "Meridian", "Midwest", "Northern", "Oak", "Pacific", "Patriot", "Peak", "Pioneer",
    "Pinnacle", "Prairie", "Premier", "Quantum", "Red Rock", "Redwood", "River", "Rocky",
    "Silver", "Summit", "Sun", "Titan", "Union", "United", "Valley", "Vista", "Western",
    "O'Brien", "Müller", "García",
)  # fmt: skip
_NOUNS = (
    "Analytics", "Auto Repair", "Bakery", "Builders", "Capital", "Cleaning", "Consulting",
    "Dental", "Design", "Electric", "Energy", "Engineering", "Farms", "Fitness", "Foods",
    "Freight", "Furniture", "Health", "Holdings", "HVAC", "Insurance", "Labs", "Landscaping",
    "Legal", "Logistics", "Machining", "Marketing", "Media", "Medical", "Motors", "Partners",
    "Pharmacy", "Plumbing", "Printing", "Properties", "Realty", "Restaurant", "Roofing",
    "Software", "Solutions", "Staffing", "Supply", "Systems", "Technologies", "Tools",
    "Trucking", "Ventures", "Widgets", "Wireless",
)  # fmt: skip
_SUFFIXES = (
    "Inc", "Inc.", "inc", "LLC", "L.L.C.", "llc", "Corp", "Corp.", "Corporation", "Co",
    "Co.", "Ltd", "Group", "& Sons", "", "", "", "",
)  # fmt: skip
_PADDING = ("", "", "", "", "", " ", "  ", "   ", "\t")
_GAPS = (" ", " ", " ", " ", "  ", "   ")
_STREET_NAMES = (
    "Main", "Oak", "Maple", "Pine", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park",
    "Church", "Market", "Broad", "Mill", "Spring", "Highland", "Sunset", "Ridge", "River",
    "Martin Luther King Jr", "1st", "2nd", "3rd", "5th", "42nd", "Old County", "Route 9",
)  # fmt: skip
_STREET_TYPES = (
    "St", "St.", "Street", "Ave", "Ave.", "Avenue", "Rd", "Road", "Blvd", "Dr", "Drive",
    "Ln", "Way", "Ct", "Pl", "Pkwy", "Hwy",
)  # fmt: skip
_UNITS = ("", "", "", "", "", "", " Suite 200", " Ste 5", " #4B", " Apt. 3", ", Unit 12", " Fl 2")
_CITIES = (
    # (city, state, latitude, longitude)
    ("New York", "NY", 40.71, -74.01), ("Brooklyn", "NY", 40.68, -73.94),
    ("Buffalo", "NY", 42.89, -78.88), ("Boston", "MA", 42.36, -71.06),
    ("Cambridge", "MA", 42.37, -71.11), ("Springfield", "MA", 42.10, -72.59),
    ("Hartford", "CT", 41.77, -72.67), ("Providence", "RI", 41.82, -71.41),
    ("Portland", "ME", 43.66, -70.26), ("Burlington", "VT", 44.48, -73.21),
    ("Manchester", "NH", 42.99, -71.46), ("Newark", "NJ", 40.74, -74.17),
    ("Jersey City", "NJ", 40.73, -74.08), ("Philadelphia", "PA", 39.95, -75.17),
    ("Pittsburgh", "PA", 40.44, -80.00), ("Baltimore", "MD", 39.29, -76.61),
    ("Washington", "DC", 38.91, -77.04), ("Richmond", "VA", 37.54, -77.44),
    ("Charlotte", "NC", 35.23, -80.84), ("Raleigh", "NC", 35.78, -78.64),
    ("Atlanta", "GA", 33.75, -84.39), ("Miami", "FL", 25.76, -80.19),
    ("Tampa", "FL", 27.95, -82.46), ("Orlando", "FL", 28.54, -81.38),
    ("Nashville", "TN", 36.16, -86.78), ("Louisville", "KY", 38.25, -85.76),
    ("Columbus", "OH", 39.96, -83.00), ("Cleveland", "OH", 41.50, -81.69),
    ("Detroit", "MI", 42.33, -83.05), ("Chicago", "IL", 41.88, -87.63),
    ("Milwaukee", "WI", 43.04, -87.91), ("Minneapolis", "MN", 44.98, -93.27),
    ("St. Louis", "MO", 38.63, -90.20), ("Kansas City", "MO", 39.10, -94.58),
    ("Omaha", "NE", 41.26, -95.93), ("Des Moines", "IA", 41.59, -93.62),
    ("New Orleans", "LA", 29.95, -90.07), ("Houston", "TX", 29.76, -95.37),
    ("Dallas", "TX", 32.78, -96.80), ("San Antonio", "TX", 29.42, -98.49),
    ("Austin", "TX", 30.27, -97.74), ("El Paso", "TX", 31.76, -106.49),
    ("Oklahoma City", "OK", 35.47, -97.52), ("Denver", "CO", 39.74, -104.99),
    ("Salt Lake City", "UT", 40.76, -111.89), ("Albuquerque", "NM", 35.08, -106.65),
    ("Phoenix", "AZ", 33.45, -112.07), ("Las Vegas", "NV", 36.17, -115.14),
    ("Boise", "ID", 43.62, -116.20), ("Seattle", "WA", 47.61, -122.33),
    ("Portland", "OR", 45.52, -122.68), ("San Francisco", "CA", 37.77, -122.42),
    ("Los Angeles", "CA", 34.05, -118.24), ("San Diego", "CA", 32.72, -117.16),
    ("San José", "CA", 37.34, -121.89), ("Anchorage", "AK", 61.22, -149.90),
    ("Honolulu", "HI", 21.31, -157.86), ("Coeur d'Alene", "ID", 47.68, -116.78),
    ("Winston-Salem", "NC", 36.10, -80.24), ("San Juan", "PR", 18.47, -66.11),
)  # fmt: skip
#: Values in the state column that are not a state code at all.
_BAD_STATES = ("XX", "N/A", "", "New York", "Calif.", "--", "U.S.")
_PHONE_FORMATS = (
    # (prefix, between area code and exchange, between exchange and line)
    ("(", ") ", "-"),
    ("", ".", "."),
    ("+1 ", " ", " "),
    ("", "", ""),
    ("", "-", "-"),
    ("1-", "-", "-"),
    ("(", ")", "-"),
    ("+1 (", ") ", "-"),
)
_JUNK_PHONES = ("n/a", "N/A", "unknown", "555-0142", "000", "", "call office", "tbd", "x123")
_URL_PREFIXES = (
    "", "", "www.", "WWW.", "http://", "https://", "http://www.", "https://www.", "HTTP://WWW.",
)  # fmt: skip


def _label(word: str) -> str:
    """'Blue Ridge' -> 'blueridge', "O'Brien" -> 'obrien', 'Müller' -> 'muller': a domain label."""
    letters = unicodedata.normalize("NFKD", word.lower())
    return "".join(ch for ch in letters if ch.isascii() and ch.isalnum())


# The domain of "Blue Ridge Plumbing Inc" is blueridgeplumbing.<tld>.
_ADJECTIVE_LABELS = tuple(_label(word) for word in _ADJECTIVES)
_NOUN_LABELS = tuple(_label(word) for word in _NOUNS)
_URL_TLDS = (".com", ".com", ".com", ".net", ".org", ".io", ".us", ".biz", ".co")
_URL_PATHS = ("", "", "", "/", "/about", "/contact-us", "/index.html", "/?ref=yelp", "/en/home")
_JUNK_WEBSITES = ("n/a", "none", "-", "", "TBD", "http://", "www.", "see facebook")
_NAICS = (
    111998, 236118, 236220, 238210, 238220, 238990, 311811, 332710, 423430, 424410, 441110,
    445110, 446110, 484121, 492110, 511210, 517312, 522110, 524210, 531210, 541110, 541211,
    541330, 541511, 541512, 541611, 541810, 561320, 561720, 561730, 621111, 621210, 623110,
    713940, 722511, 722513, 811111, 812112, 812990, 813110,
)  # fmt: skip
_NOTE_FRAGMENTS = (
    "", "", "", "Called twice, no answer.", "Prefers email", "VIP customer",
    "col1\tcol2\tcol3", "line one\nline two", "windows line\r\nnext line", "mac line\rnext",
    "path C:\\Users\\acme\\files", "regex \\d+\\s*", "literal \\N in text", "\\N",
    "it's \"great\"", "O'Brien said \"hi\"", "Café résumé naïve é", "中文备注：重要客户",
    "emoji 🚀🔥 growth", "Ünïcödé ß ø", "   padded   ", "semi;colon,comma|pipe",
    "50% off <b>html</b> & more", "NULL", "null", "\\\\server\\share", "tab\tand\\backslash\n",
    "ends with backslash \\", "\x0bvertical tab", "{\"json\": [1, 2]}",
)  # fmt: skip
_NOTE_SEPARATORS = (" ", " ", "\n", "\t", " | ", "")

#: Spread (degrees) of zip centers around their city, and of companies around their zip.
_ZIP_SPREAD = 0.15
_COMPANY_SPREAD = 0.02
_BAD_COORDINATES = (999.0, -999.0, 91.5, -180.5, 181.25, 1000.0)

_FOUNDED_FIRST = dt.date(1850, 1, 1)
_FOUNDED_LAST = dt.date(2025, 12, 31)
_UPDATED_FIRST = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
_UPDATED_LAST = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
_EPOCH = dt.date(1970, 1, 1)

#: Largest |revenue| numeric(14,2) holds, in cents: 999,999,999,999.99.
_MAX_REVENUE_CENTS = 10**14 - 1


@functools.cache
def _vocabulary(values: tuple[str, ...]) -> pa.Array:
    return pa.array(values, type=pa.string())


#: Case styles of a cased vocabulary, in the order `_cased` lays them out.
AS_IS, UPPER, LOWER, TITLE = range(4)


@functools.cache
def _cased(values: tuple[str, ...]) -> pa.Array:
    """The vocabulary four times: as is, UPPER, lower, Title; style k of word i is at k*n + i.

    Changing case on the small vocabulary instead of on every row is several times faster.
    """
    words = _vocabulary(values)
    styles = (words, pc.utf8_upper(words), pc.utf8_lower(words), pc.utf8_title(words))
    return pa.concat_arrays(styles)


def _column(values: tuple[tuple[object, ...], ...], position: int) -> tuple[Any, ...]:
    """One field of a vocabulary of tuples: the states of `_CITIES`."""
    return tuple(value[position] for value in values)


@dataclass(frozen=True)
class _Zips:
    """The zip codes of one generated data set, with what every row of a zip shares."""

    codes: pa.Array  # 5-digit strings, then '' as the last entry (the "empty zip")
    cdf: np.ndarray  # cumulative Zipf weights, for sampling a zip per row
    first_visit: np.ndarray  # a permutation: row i < len(zips) gets zip first_visit[i]
    city: np.ndarray  # index into _CITIES per zip
    latitude: np.ndarray
    longitude: np.ndarray

    @property
    def count(self) -> int:
        return len(self.first_visit)

    @property
    def empty_code(self) -> int:
        return self.count


def _plan_zips(zips: int, rng: np.random.Generator) -> _Zips:
    low_band = _LOW_ZIPS[1] - _LOW_ZIPS[0]
    high_band = _HIGH_ZIPS[1] - _HIGH_ZIPS[0]
    n_low = max(zips - high_band, min(round(zips * _LEADING_ZERO_SHARE), low_band))
    numbers = np.concatenate(
        [
            _LOW_ZIPS[0] + rng.choice(low_band, size=n_low, replace=False),
            _HIGH_ZIPS[0] + rng.choice(high_band, size=zips - n_low, replace=False),
        ]
    )
    # Shuffled, so a zip's Zipf rank (its size) has nothing to do with its code.
    numbers = rng.permutation(numbers)
    codes = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width=5, padding="0")
    weights = 1.0 / np.arange(1, zips + 1) ** ZIPF_EXPONENT
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0
    city = rng.integers(len(_CITIES), size=zips)
    latitude, longitude = (
        np.asarray(_column(_CITIES, field))[city] + rng.normal(0.0, _ZIP_SPREAD, size=zips)
        for field in (2, 3)
    )
    return _Zips(
        codes=pa.concat_arrays([codes, _vocabulary(("",))]),
        cdf=cdf,
        first_visit=rng.permutation(zips),
        city=city,
        latitude=latitude,
        longitude=longitude,
    )


class _Chunk:
    """Draws for one chunk of rows. Methods build one column each, in table order."""

    def __init__(self, rng: np.random.Generator, start: int, stop: int, zips: _Zips) -> None:
        self.rng, self.n, self.zips = rng, stop - start, zips
        self.ids = np.arange(start + 1, stop + 1, dtype=np.int64)
        self.zip_index = self._draw_zip_index(start, stop)
        # Name words are shared by company_name and website, so the domain fits the name.
        self.adjective = self.rng.integers(len(_ADJECTIVES), size=self.n)
        self.noun = self.rng.integers(len(_NOUNS), size=self.n)
        # Head count is shared by employees and revenue, so revenue grows with size.
        self.staff = self._draw_staff()

    # -- helpers ----------------------------------------------------------------------------

    def mask(self, share: float) -> np.ndarray:
        return self.rng.random(self.n) < share

    def pick(
        self,
        vocabulary: tuple[str, ...],
        index: np.ndarray | None = None,
        style: np.ndarray | None = None,
    ) -> pa.Array:
        """A word per row: random, or `index` into the vocabulary; in case `style` per row."""
        if index is None:
            index = self.rng.integers(len(vocabulary), size=self.n)
        if style is None:
            return pc.take(_vocabulary(vocabulary), pa.array(index))
        return pc.take(_cased(vocabulary), pa.array(index + style * len(vocabulary)))

    def styles(self, upper: float = 0.0, lower: float = 0.0, title: float = 0.0) -> np.ndarray:
        """A case style per row: `upper` of the rows UPPER, `lower` lower, `title` Title."""
        draw = self.rng.random(self.n)
        bounds = np.cumsum([upper, lower, title])
        return np.select(list(draw[None, :] < bounds[:, None]), [UPPER, LOWER, TITLE], AS_IS)

    def number(self, low: int, high: int) -> pa.Array:
        """Random integers in [low, high) as strings."""
        return pc.cast(pa.array(self.rng.integers(low, high, size=self.n)), pa.string())

    @staticmethod
    def join(*parts: pa.Array | str) -> pa.Array:
        return pc.binary_join_element_wise(*parts, "")

    @staticmethod
    def where(mask: np.ndarray, replacement: pa.Array | pa.Scalar, values: pa.Array) -> pa.Array:
        return pc.if_else(pa.array(mask), replacement, values)

    def null_where(self, mask: np.ndarray, values: pa.Array) -> pa.Array:
        return self.where(mask, pa.scalar(None, values.type), values)

    # -- columns ----------------------------------------------------------------------------

    def _draw_zip_index(self, start: int, stop: int) -> np.ndarray:
        """Zip per row: the first rows visit every zip once, the rest follow the Zipf law."""
        zips = self.zips
        index = np.searchsorted(zips.cdf, self.rng.random(self.n), side="right")
        first = np.arange(start, min(stop, zips.count))
        index[: len(first)] = zips.first_visit[first]
        return index

    def zip_code(self) -> pa.Array:
        index = self.zip_index.copy()
        blank = self.mask(0.004) & (self.ids > self.zips.count)
        empty = blank & (self.rng.random(self.n) < 0.5)
        index[empty] = self.zips.empty_code
        return pc.take(self.zips.codes, pa.array(index, mask=blank & ~empty))

    def company_name(self) -> pa.Array:
        style = self.styles(upper=0.15, lower=0.25, title=0.05)
        name = self.join(
            self.pick(_PADDING),
            self.pick(_ADJECTIVES, self.adjective, style),
            self.pick(_GAPS),
            self.pick(_NOUNS, self.noun, style),
            " ",
            self.pick(_SUFFIXES, style=style),
            self.pick(_PADDING),
        )
        return self.null_where(self.mask(0.005), name)

    def street(self) -> pa.Array:
        style = self.styles(upper=0.1, lower=0.15)
        street = self.join(
            self.pick(_PADDING),
            self.number(1, 20_000),
            " ",
            self.pick(_STREET_NAMES, style=style),
            self.pick(_GAPS),
            self.pick(_STREET_TYPES, style=style),
            self.pick(_UNITS, style=style),
            self.pick(_PADDING),
        )
        return self.null_where(self.mask(0.02), street)

    def city(self) -> pa.Array:
        style = self.styles(upper=0.2, lower=0.2)
        city = self.pick(_column(_CITIES, 0), self.row_city, style)
        city = self.join(self.pick(_PADDING), city, self.pick(_PADDING))
        return self.null_where(self.mask(0.01), city)

    def state(self) -> pa.Array:
        # Mostly "NY"; some "ny" and "Ny"; some padded; a few not a state at all.
        style = self.styles(lower=0.1, title=0.05)
        state = self.pick(_column(_CITIES, 1), self.row_city, style)
        state = self.join(self.pick(_PADDING), state, self.pick(_PADDING))
        state = self.where(self.mask(0.01), self.pick(_BAD_STATES), state)
        return self.null_where(self.mask(0.01), state)

    @property
    def row_city(self) -> np.ndarray:
        """City per row: the city of the row's zip (also for rows whose zip is blanked)."""
        return self.zips.city[self.zip_index]

    def phone(self) -> pa.Array:
        form = self.rng.integers(len(_PHONE_FORMATS), size=self.n)
        prefix, middle, tail = (_column(_PHONE_FORMATS, part) for part in range(3))
        line = pc.utf8_lpad(self.number(0, 10_000), width=4, padding="0")
        phone = self.join(
            self.pick(prefix, form),
            self.number(201, 990),
            self.pick(middle, form),
            self.number(200, 1000),
            self.pick(tail, form),
            line,
        )
        phone = self.where(self.mask(0.03), self.pick(_JUNK_PHONES), phone)
        return self.null_where(self.mask(0.05), phone)

    def website(self) -> pa.Array:
        # Some people type the domain as they write the name: "AcmeWidgets.com".
        style = self.styles(title=0.1)
        domain = self.join(
            self.pick(_ADJECTIVE_LABELS, self.adjective, style),
            self.pick(_NOUN_LABELS, self.noun),
            self.pick(_URL_TLDS),
        )
        url = self.join(self.pick(_URL_PREFIXES), domain, self.pick(_URL_PATHS))
        url = self.where(self.mask(0.03), self.pick(_JUNK_WEBSITES), url)
        return self.null_where(self.mask(0.1), url)

    def naics_code(self) -> pa.Array:
        codes = np.asarray(_NAICS, dtype=np.int32)[self.rng.integers(len(_NAICS), size=self.n)]
        return pa.array(codes, type=pa.int32(), mask=self.mask(0.07))

    def _draw_staff(self) -> np.ndarray:
        staff = np.floor(self.rng.lognormal(mean=2.0, sigma=1.5, size=self.n)) + 1
        return np.minimum(staff, 2_000_000).astype(np.int32)

    def employees(self) -> pa.Array:
        staff = self.staff.copy()
        garbage = self.mask(0.005)
        staff[garbage] = self.rng.choice([-1, -5, -999, -10_000], size=garbage.sum())
        return pa.array(staff, type=pa.int32(), mask=self.mask(0.06))

    def revenue(self) -> pa.Array:
        per_head = self.rng.lognormal(mean=np.log(120_000), sigma=0.8, size=self.n)
        cents = np.rint(np.abs(self.staff) * per_head * 100).astype(np.int64)
        cents[self.mask(0.005)] *= -1
        absurd = self.mask(0.002)
        cents[absurd] = self.rng.choice([_MAX_REVENUE_CENTS, 5 * 10**13, 10**13], size=absurd.sum())
        cents = np.clip(cents, -_MAX_REVENUE_CENTS, _MAX_REVENUE_CENTS)
        return decimal_from_cents(cents, mask=self.mask(0.1))

    def founded_date(self) -> pa.Array:
        first, last = (_days(day) for day in (_FOUNDED_FIRST, _FOUNDED_LAST))
        # Most companies are young: ages are exponential, with a long tail back to 1850.
        age = np.floor(self.rng.exponential(scale=25 * 365.25, size=self.n)).astype(np.int64)
        days = np.maximum(last - age, first).astype(np.int32)
        return pa.array(days, type=pa.date32(), mask=self.mask(0.08))

    def coordinates(self) -> tuple[pa.Array, pa.Array]:
        missing = self.mask(0.03)
        columns = []
        for centers in (self.zips.latitude, self.zips.longitude):
            spread = self.rng.normal(0.0, _COMPANY_SPREAD, size=self.n)
            values = centers[self.zip_index] + spread
            wrong = self.mask(0.003)
            values[wrong] = self.rng.choice(_BAD_COORDINATES, size=wrong.sum())
            columns.append(pa.array(values, type=pa.float64(), mask=missing))
        return columns[0], columns[1]

    def notes(self) -> pa.Array:
        note = self.join(
            self.pick(_NOTE_FRAGMENTS), self.pick(_NOTE_SEPARATORS), self.pick(_NOTE_FRAGMENTS)
        )
        note = self.where(self.mask(0.08), pa.scalar(""), note)
        note = self.where(self.mask(0.01), pa.scalar("\\N"), note)
        return self.null_where(self.mask(0.1), note)

    def updated_at(self) -> pa.Array:
        first, last = (int(moment.timestamp() * 1e6) for moment in (_UPDATED_FIRST, _UPDATED_LAST))
        micros = self.rng.integers(first, last, size=self.n)
        return pa.array(micros, type=pa.timestamp("us", tz="UTC"))

    def table(self) -> pa.Table:
        zip_code = self.zip_code()
        name, street, city, state = self.company_name(), self.street(), self.city(), self.state()
        phone, website, naics = self.phone(), self.website(), self.naics_code()
        employees = self.employees()
        revenue, founded = self.revenue(), self.founded_date()
        latitude, longitude = self.coordinates()
        columns = [
            pa.array(self.ids),
            zip_code,
            name,
            street,
            city,
            state,
            phone,
            website,
            naics,
            employees,
            revenue,
            founded,
            latitude,
            longitude,
            self.notes(),
            self.updated_at(),
        ]
        return pa.Table.from_arrays(columns, schema=RAW_SCHEMA)


def _days(day: dt.date) -> int:
    return (day - _EPOCH).days


def decimal_from_cents(cents: np.ndarray, mask: np.ndarray) -> pa.Array:
    """An exact decimal128(14, 2) array from integer cents, without going through floats.

    decimal128 stores each value as a 128-bit little-endian integer of the unscaled value,
    so the buffer is the cents as the low word and their sign extension as the high word.
    """
    words = np.empty((len(cents), 2), dtype=np.int64)
    words[:, 0] = cents
    words[:, 1] = cents >> 63
    validity = pa.array(~mask).buffers()[1]
    return pa.Array.from_buffers(
        pa.decimal128(14, 2), len(cents), [validity, pa.py_buffer(words)], null_count=-1
    )


def check_sizes(rows: int, zips: int) -> None:
    """`ConfigError` unless the sizes can be generated."""
    if rows < 0:
        raise ConfigError(f"--rows must be 0 or more, not {rows}")
    if not 1 <= zips <= MAX_ZIPS:
        raise ConfigError(f"--zips must be between 1 and {MAX_ZIPS:,}, not {zips}")


def generate_companies(
    rows: int, zips: int, *, seed: int = 42, chunk_rows: int = CHUNK_ROWS
) -> Iterator[pa.Table]:
    """Arrow tables of `RAW_SCHEMA`, `chunk_rows` rows each (the last one shorter).

    Ids run 1..rows. There are `zips` distinct zip codes; when rows >= zips every zip has at
    least one row. A few rows have a NULL or '' zip code.
    """
    check_sizes(rows, zips)
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be positive, not {chunk_rows}")
    zip_plan = _plan_zips(zips, _rng(seed, 0))
    for number, start in enumerate(range(0, rows, chunk_rows), start=1):
        stop = min(start + chunk_rows, rows)
        yield _Chunk(_rng(seed, number), start, stop, zip_plan).table()


def _rng(seed: int, stream: int) -> np.random.Generator:
    """An independent generator per (seed, stream): stream 0 plans zips, n builds chunk n."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))
